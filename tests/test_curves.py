"""`minisweep curves` as a reader meets it, on results written by hand (no training): a study too small to check says
so; a study drawn from a known law gets fits.json with intervals, its checks and images for a target error; a curve
that bends is not extrapolated; bad targets are one line and exit 2; a curve draws the error its runs selected on, or
says why; no interval prints one number as both its ends; the report (the chapter minus its check cells) runs alone."""
import json, re

import numpy as np

from conftest import minisweep


def row(model, n_train, top5, top1, seed=0, n_test=100, classes=10, total=400, **more):
    return dict(dict(model=model, subset_size=n_train / total, learning_rate=0.01, seed=seed, n_train=n_train,
                top1_error=top1, top5_error=top5, test_loss=2.0, best_epoch=8, val_top5_error=top5,
                val_top1_error=top1, val_loss=2.0,
                select_on='val_top5_error', selected=True, default_learning_rate=0.01, train_seconds=1.0,
                num_classes=classes, dataset='', split='test', n_test=n_test, epochs=8,
                run_dir=f'{model}/subset_{n_train / total:.4f}/seed_{seed}'), **more)


def write(path, runs):
    path.write_text(json.dumps(dict(format='minisweep.results/1', split='test', runs=runs)))
    return path


def test_a_study_too_small_to_check_says_so(tmp_path, venv_path_env):
    runs = [row('resnet18', n, t5, t1) for n, t5, t1 in ((100, 0.50, 0.90), (200, 0.42, 0.85), (400, 0.37, 0.80))]
    p = minisweep('curves', write(tmp_path / 'results.json', runs), '--out', tmp_path / 'fig', env=venv_path_env,
                  cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    names = {f.name for f in (tmp_path / 'fig').iterdir()}
    assert {'resnet18_curve.png', 'resnet18_curve.pdf', 'curves.png', 'curves.pdf', 'summary.md', 'fits.json'} <= names
    md = (tmp_path / 'fig' / 'summary.md').read_text()
    assert not re.search(r'± 0\.0+(?![0-9])', md), md
    assert 'Test errors on the sample shipped with minisweep · 100 test images per error' in md, md
    assert '| 400 | 1 | 0.800 [0.71, 0.87] | 0.370 [0.28, 0.47] |' in md, md              # the test set's 95% interval
    assert 'none (no backtest: it needs >= 4 sizes, got 3)' in md and 'the lack of fit is not tested' in md, md
    assert '| 100 → 200 | 0.080 | 0.141 | flat |' in md, md      # one seed, 100 test images: a fall within noise
    fit = json.loads((tmp_path / 'fig' / 'fits.json').read_text())['resnet18']['top5_error']
    assert (fit['lack_of_fit_p'], fit['backtest'], fit['extrapolate_to']) == (None, None, 1.0), fit
    assert [p['n'] for p in fit['predictions']] == [100, 200, 400], fit['predictions']        # the measured sizes only


def test_a_known_law_and_a_bent_curve(tmp_path, venv_path_env):
    rng, sizes, runs = np.random.default_rng(12), 1250 * 2 ** np.arange(6), []
    law = lambda n: 0.15 + 9 * n ** -0.4                                          # resnet18: a law with a floor
    bent = lambda n: np.minimum(0.93, 0.93 * (n / 10_000) ** -0.6)               # alexnet: flat at chance, then falling
    for model, f in (('resnet18', law), ('alexnet', bent)):
        for n in sizes:
            for seed in (0, 1):
                e5 = rng.binomial(5000, f(n) + rng.normal(0, 0.01)) / 5000
                runs.append(row(model, int(n), float(e5), float(min(0.99, e5 + 0.2)), seed, n_test=5000, classes=100,
                                total=40_000, steps_factor=1, n_validations=3))
    p = minisweep('curves', write(tmp_path / 'results.json', runs), '--out', tmp_path / 'fig', '--target-error', '0.3',
                  '0.05', env=venv_path_env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    fits = json.loads((tmp_path / 'fig' / 'fits.json').read_text())
    r5, a5 = fits['resnet18']['top5_error'], fits['alexnet']['top5_error']
    assert r5['lack_of_fit_p'] >= 0.05 and r5['backtest']['passed'] and r5['extrapolate_to'] >= 2, r5
    at2 = [p for p in r5['predictions'] if p['n'] == 2 * sizes[-1]][0]
    assert at2['low'] <= law(2 * sizes[-1]) <= at2['high'], at2                          # the interval covers the truth
    assert r5['b']['low'] < r5['b']['value'] < r5['b']['high'] and r5['family'] in ('power', 'power_floor'), r5
    target = {t['target']: t for t in r5['images_for_target']}
    assert target[0.3]['low'] < target[0.3]['n'] < target[0.3]['high'] and not target[0.3]['why_not'], target
    assert target[0.05]['n'] is None and target[0.05]['why_not'], target                 # below the floor, or too far
    assert a5['extrapolate_to'] == 1.0 and not [q for q in a5['predictions'] if not q['measured']], a5
    assert re.search(r'resnet18 top5 error 0\.3: [\d,]+ images \[[\d,]+, [\d,]+\]', p.stdout), p.stdout
    assert 'alexnet top5 error 0.3: not given: ' in p.stdout, p.stdout
    md = (tmp_path / 'fig' / 'summary.md').read_text()
    assert 'checkpoint chosen on validation (best of 3 validations)' in md, md


def test_bad_targets_are_one_line(tmp_path, venv_path_env):
    results = write(tmp_path / 'results.json', [row('resnet18', n, 0.5, 0.9) for n in (100, 200, 400)])
    for bad, says in (('1.5', 'target error 1.5 must be in (0, 1)'), ('0', 'target error 0 must be in (0, 1)'),
                      ('many', "'many' is not an error")):
        p = minisweep('curves', results, '--out', tmp_path / 'fig', '--target-error', bad, env=venv_path_env,
                      cwd=tmp_path)
        assert p.returncode == 2 and p.stderr.strip().count('\n') == 0 and says in p.stderr, (bad, p.stderr)


def same_ends(md):
    "The brackets of `md` whose two ends read alike: a number called both the lower and the upper bound."
    return [m for m in re.findall(r'\[([-\d.]+), ([-\d.]+)\]', md) if m[0] == m[1]]


def test_five_classes_draw_the_error_they_selected_on(tmp_path, venv_path_env):
    runs = [row(model, n, 0.0, t1, seed, classes=5, total=800, select_on=select_on)
            for model, select_on, errors in (('resnet18', 'val_top1_error', (0.70, 0.55, 0.45, 0.40)),
                                             ('alexnet', 'val_top5_error', (0.75, 0.62, 0.55, 0.52)))
            for n, t1 in zip((100, 200, 400, 800), errors) for seed in (0, 1)]
    p = minisweep('curves', write(tmp_path / 'results.json', runs), '--out', tmp_path / 'fig', env=venv_path_env,
                  cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    fits = json.loads((tmp_path / 'fig' / 'fits.json').read_text())
    assert list(fits['resnet18']) == ['top1_error'], fits                      # top-5 error is 0 by construction
    md = (tmp_path / 'fig' / 'summary.md').read_text()
    assert re.search(r'^\| top-1 error \|', md, re.M) and not re.search(r'^\| top-5 error \|', md, re.M), md
    assert '| n_train | seeds | top-1 error | training top-1 error | validations |' in md, md   # no top-5 column
    assert 'The curve: checkpoints selected on validation top-5 error, 0 with 5 classes: the curve draws top-1' in md
    assert not same_ends(md), same_ends(md)


def test_a_curve_selected_on_loss_says_what_it_draws(tmp_path, venv_path_env):
    runs = [row('resnet18', n, t5, 0.9, seed, n_test=5000, classes=100, total=800, select_on='val_loss')
            for n, t5 in ((100, 0.70), (200, 0.55), (400, 0.45), (800, 0.40)) for seed in (0, 1)]
    p = minisweep('curves', write(tmp_path / 'results.json', runs), '--out', tmp_path / 'fig', env=venv_path_env,
                  cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    md = (tmp_path / 'fig' / 'summary.md').read_text()
    assert 'The curve: checkpoints selected on validation loss, not an error rate: the curve draws top-5 error.' in md
    assert not same_ends(md), same_ends(md)                 # top-1 error 0.9 at every seed: sd 0, not [x, x]


def test_the_report_runs_without_its_check_cells(tmp_path, venv_path_env):
    "The chapter minus its `#| check` cells, run by papermill on results of its own, draws them and shows nothing else."
    import subprocess, sys
    from conftest import ROOT
    nb = json.loads((ROOT / 'nbs' / '04_curves.ipynb').read_text())
    is_check = lambda c: c['cell_type'] == 'code' and '#| check' in [l.strip() for l in c['source'][:3]]
    assert any(map(is_check, nb['cells']))
    nb['cells'] = [c for c in nb['cells'] if not is_check(c)]
    (tmp_path / 'report.ipynb').write_text(json.dumps(nb))
    runs = [row(model, n, e5, min(0.99, e5 + 0.3), seed, n_validations=4)
            for model in ('alexnet', 'resnet18') for n, e5 in ((50, 0.62), (100, 0.50), (200, 0.39), (400, 0.33))
            for seed in (0, 1)]
    for r in runs:
        (tmp_path / r['run_dir']).mkdir(parents=True)
        log = [dict(epoch=e, val_top5_error=r['top5_error'] + 0.3 / e, val_top1_error=0.99, val_loss=2.0)
               for e in (1, 2)]
        (tmp_path / r['run_dir'] / 'log.jsonl').write_text(''.join(json.dumps(l) + '\n' for l in log))
    results, work = write(tmp_path / 'results.json', runs), tmp_path / 'work'
    work.mkdir()
    p = subprocess.run([sys.executable, '-m', 'papermill', tmp_path / 'report.ipynb', tmp_path / 'out.ipynb', '-p',
                        'results', results, '-p', 'out_dir', tmp_path / 'fig', '--cwd', work, '-k', 'python3'],
                       capture_output=True, text=True, env=venv_path_env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    drawn = {f.name for f in (tmp_path / 'fig').iterdir()}
    assert {'curves.png', 'summary.md', 'fits.json', 'training_curves.png'} <= drawn, drawn
    shown = json.dumps([c.get('outputs', []) for c in json.loads((tmp_path / 'out.ipynb').read_text())['cells']])
    assert 'mini-imagenet' not in shown.lower() and 'tiny-imagenet' not in shown.lower()   # no synthetic, no study
