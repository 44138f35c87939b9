"The sweep end to end through the installed `minisweep` console script, on the shipped sample."
import json, re
from pathlib import Path

import pytest

from conftest import SMALL, minisweep


def mtimes(root):
    return {p: p.stat().st_mtime_ns for p in Path(root).rglob('last.pt')}


def run_files(out: Path) -> dict:
    "The modification times of every run's checkpoints, metrics and log under `out`."
    names = ('last.pt', 'best.pt', 'metrics.json', 'log.jsonl')
    return {p: p.stat().st_mtime_ns for p in out.rglob('*') if p.name in names}


def test_sweep_writes_everything(local_sweep):
    out = local_sweep['out']
    assert len(list(out.rglob('train.ipynb'))) == 4
    rec = json.loads((out / 'sweep.json').read_text())
    assert {r['state'] for r in rec['runs'].values()} == {'done'}
    assert rec['grid'] == dict(models=['alexnet', 'resnet18'], subset_sizes=[0.5, 0.25], seeds=[0])
    assert {'torch', 'minisweep', 'python'} <= set(rec['versions']) and rec['started'] and rec['ended']
    rows = json.loads((out / 'results.json').read_text())['runs']
    assert len(rows) == 4 and all(0 <= r['top5_error'] <= r['top1_error'] <= 1 for r in rows)
    assert {(r['model'], r['subset_size'], r['n_train']) for r in rows} >= {('resnet18', 0.5, 200),
                                                                            ('resnet18', 0.25, 100)}
    assert (out / 'curves.ipynb').exists()
    # without --learning-rates: today's layout and identity, one rate per run, every row selected
    assert not list(out.rglob('lr_*'))
    assert 'learning_rates' not in rec['identity'] and 'learning_rates' not in rec['grid']
    assert all(r['selected'] is True and r['learning_rate'] > 0 for r in rows)
    for name in ('alexnet_curve.png', 'resnet18_curve.png', 'curves.png'):
        assert (out / 'figures' / name).stat().st_size > 5000                      # the sweep's own figures
    assert not (local_sweep['root'] / 'output').exists()                          # nothing in the working directory
    stdout = local_sweep['first'].stdout
    assert 'done' in stdout and 'left' in stdout                                   # progress with a time estimate
    assert '4 runs in' in stdout and '4 done (4 trained now, 0 skipped as done before), 0 failed' in stdout
    assert f"results: {out / 'results.json'}" in stdout and 'curves.png' in stdout
    assert not local_sweep['decoded_by_sweep']          # `minisweep prepare` decoded every split; the sweep reused them
    # a line per validation, under its run's line: each run of 1 epoch validates once
    for key in rec['runs']:
        line = f'\n  {key}: epoch 1/1, validation top-5 error '
        assert line in stdout, stdout
        assert stdout.index(f'running {key}') < stdout.index(line) < stdout.index(f'{key}: done'), stdout


def report_head(nb_path, cells=4):
    "The outputs of an executed notebook's first `cells` cells: (markdown texts, number of PNG images)."
    nb = json.loads(Path(nb_path).read_text())
    outs = [o for c in nb['cells'][:cells] for o in c.get('outputs', [])]
    md = ''.join(''.join(o['data']['text/markdown']) for o in outs if 'text/markdown' in o.get('data', {}))
    return md, sum('image/png' in o.get('data', {}) for o in outs)


def test_reports_open_with_their_results(local_sweep):
    out = local_sweep['out']
    run = out / 'resnet18' / 'subset_0.5000' / 'seed_0'
    metrics = json.loads((run / 'metrics.json').read_text())
    md, pngs = report_head(run / 'train.ipynb')
    assert md.startswith('## resnet18, subset 0.5 (200 images, 10 classes), seed 0') and pngs == 1, md
    assert f"Best epoch **{metrics['best_epoch']}** of 1" in md
    assert f"top-5 error **{metrics['val_top5_error']:.3f}**" in md
    assert '| the shipped sample | 64 | 1 | 32 |' in md                                      # the run's settings
    md, pngs = report_head(out / 'curves.ipynb')
    assert '# Learning curves' in md and '## alexnet' in md and '## resnet18' in md and pngs == 2, md  # and figures
    for nb in [*out.rglob('train.ipynb'), out / 'curves.ipynb']:                  # no warning from tqdm in any report
        assert 'IProgress' not in nb.read_text() and 'TqdmWarning' not in nb.read_text(), nb


def test_sweep_again_retrains_nothing_and_resumes_missing(local_sweep):
    out, args = local_sweep['out'], local_sweep['args']
    files = lambda: run_files(out)
    before = files()
    p = minisweep(*args, cwd=local_sweep['root'])
    assert p.returncode == 0, p.stderr[-2000:]
    assert files() == before and 'done already' in p.stdout and '4 skipped as done before' in p.stdout
    victim = out / 'resnet18' / 'subset_0.5000' / 'seed_0'
    (victim / 'metrics.json').unlink()
    p = minisweep(*args, cwd=local_sweep['root'])
    assert p.returncode == 0, p.stderr[-2000:]
    assert (victim / 'metrics.json').exists()
    # that run was finished again from its last.pt (all its epochs were done: nothing to retrain); no other run touched
    assert {q.parent for q, t in files().items() if before.get(q) != t} == {victim}


def test_a_failing_run_leaves_the_others_and_exits_nonzero(tmp_path):
    # subset 0.05 of 40 images a class is 20 images: fewer than one batch of 32, so that one cell of the grid fails
    p = minisweep('sweep', '--models', 'resnet18', '--subset-sizes', '0.25', '0.05', '--seeds', '0', *SMALL,
                  '--out', tmp_path / 's', '--figures', '', cwd=tmp_path)
    assert p.returncode == 1
    rec = json.loads((tmp_path / 's' / 'sweep.json').read_text())['runs']
    assert rec['resnet18/subset_0.2500/seed_0']['state'] == 'done'
    failed = rec['resnet18/subset_0.0500/seed_0']
    assert failed['state'] == 'failed' and 'batch size 32 is larger' in failed['error']
    assert failed['error'].startswith('cell ')
    assert '| resnet18/subset_0.0500/seed_0 |' in p.stderr and '|' not in p.stdout   # the failure table, on stderr
    assert '2 runs in' in p.stdout                                                   # the closing summary
    assert '1 done (1 trained now, 0 skipped as done before), 1 failed' in p.stdout
    assert (tmp_path / 's' / 'resnet18' / 'subset_0.2500' / 'seed_0' / 'metrics.json').exists()


def test_seed_style_train_then_eval(tmp_path):
    p = minisweep('train', '--model', 'resnet18', '--subset-sizes', '0.25', '0.125', '--num-epochs', '1',
                  '--learning-rate', '0.1', '--batch-size', '32', '--image-size', '64', '--dataset', '',
                  '--checkpoint-dir', tmp_path / 'ck')
    assert p.returncode == 0, p.stderr[-2000:]
    stamps = list((tmp_path / 'ck' / 'resnet18').iterdir())
    assert len(stamps) == 1
    assert sorted(d.name for d in stamps[0].iterdir()) == ['subset_0.1250', 'subset_0.2500']
    assert all((d / 'metrics.json').exists() for d in stamps[0].iterdir())
    p = minisweep('eval', '--model', 'resnet18', '--checkpoint-dir', stamps[0])
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads((stamps[0] / 'results.json').read_text())['runs']
    assert sorted(r['subset_size'] for r in rows) == [0.125, 0.25]
    p = minisweep('curves', stamps[0] / 'results.json', '--out', tmp_path / 'out')
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / 'out' / 'resnet18_curve.png').exists()


@pytest.mark.slow       # the default run has each shape: one model (the tuned sweep), both models and two sizes
@pytest.mark.parametrize('grid, runs', [         # (local_sweep), one size (the planted-module case of test_faults.py)
    (['--models', 'resnet18', '--subset-sizes', '0.25', '0.125', '--seeds', '0'], 2),             # one model
    (['--models', 'alexnet', 'resnet18', '--subset-sizes', '0.125', '--seeds', '0'], 2),      # one size, both models
], ids=['one model', 'one size'])
def test_every_grid_shape_ends_with_its_figures(tmp_path, grid, runs, local_sweep):
    """The curves report asserts nothing about a user's results: one model, or one size, with one seed, ends with
    exit 0 and their figures (both models and two sizes: `test_sweep_writes_everything`; one model, tuned:
    `tuned_sweep`; one run: the planted-module case of test_faults.py). Each is a second sweep with default options in
    the working directory of `local_sweep`: the two leave two complete, separate sets of figures."""
    before = {fig.name: fig.read_bytes() for fig in (local_sweep['out'] / 'figures').iterdir()}
    p = minisweep('sweep', *grid, *SMALL, '--device', 'cpu', '--out', tmp_path / 's', cwd=local_sweep['root'])
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    models = grid[grid.index('--models') + 1:grid.index('--subset-sizes')]
    drawn = {fig.name for fig in (tmp_path / 's' / 'figures').iterdir()}
    assert {f'{m}_curve.png' for m in models} | {'curves.png', 'summary.md', 'training_curves.png'} <= drawn
    assert {fig.name: fig.read_bytes() for fig in (local_sweep['out'] / 'figures').iterdir()} == before  # untouched
    assert len(json.loads((tmp_path / 's' / 'results.json').read_text())['runs']) == runs
    assert 'figures: none' not in p.stdout


@pytest.fixture(scope='module')
def tuned_sweep(tmp_path_factory, session_env):
    """One model, two sizes, two learning rates, one seed: the default run's one-model grid, its figures where a sweep
    puts them. Four epochs (24 and 12 steps), so that the model fits its own images better than chance."""
    root = tmp_path_factory.mktemp('tuned')
    args = ['sweep', '--models', 'resnet18', '--subset-sizes', '0.5', '0.25', '--seeds', '0',
            '--learning-rates', '0.05', '0.2', '--num-epochs', '4', '--batch-size', '32', '--image-size', '64',
            '--dataset', '', '--device', 'cpu', '--out', root / 'sweep']
    p = minisweep(*args, cwd=root)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return dict(root=root, out=root / 'sweep', args=args, first=p)


def test_tuned_sweep_selects_one_rate_per_size_on_validation(tuned_sweep):
    out = tuned_sweep['out']
    figures = out / 'figures'                                                     # the sweep's own: no --figures given
    assert sorted(p.parent.relative_to(out).as_posix() for p in out.rglob('metrics.json')) == [
        f'resnet18/subset_{f}/lr_{lr}/seed_0' for f in ('0.2500', '0.5000') for lr in ('0.05', '0.2')]
    rec = json.loads((out / 'sweep.json').read_text())
    assert rec['grid']['learning_rates'] == {'resnet18': [0.05, 0.2]} == rec['identity']['learning_rates']
    rows = json.loads((out / 'results.json').read_text())['runs']
    assert len(rows) == 4 and all({'learning_rate', 'selected'} <= set(r) for r in rows)
    for f in (0.5, 0.25):
        group = [r for r in rows if r['subset_size'] == f]
        chosen = [r for r in group if r['selected']]
        assert len(chosen) == 1 and chosen[0]['val_top5_error'] == min(r['val_top5_error'] for r in group)
    csv = (out / 'results.csv').read_text().splitlines()
    assert {'learning_rate', 'selected'} <= set(csv[0].split(',')) and len(csv) == 5
    for name in ('resnet18_curve.png', 'resnet18_lr_sensitivity.png', 'curves.png', 'training_curves.png'):
        assert (figures / name).stat().st_size > 5000
    assert 'figures: none' not in tuned_sweep['first'].stdout
    summary = (figures / 'summary.md').read_text()
    assert 'Learning rate chosen at each size' in summary
    # two rates: every choice is at an edge of its grid, and both summary.md and the terminal say so
    assert summary.count('**Edge:**') == 2
    assert tuned_sweep['first'].stdout.count('note: resnet18 at') == 2


def test_tuned_sweep_again_retrains_nothing(tuned_sweep):
    out = tuned_sweep['out']
    files = lambda: run_files(out)
    before = files()
    p = minisweep(*tuned_sweep['args'], cwd=tuned_sweep['root'])
    assert p.returncode == 0, p.stderr[-2000:]
    assert files() == before and 'all 4 runs' in p.stdout and 'done already' in p.stdout


@pytest.mark.slow           # eval and curves again on doctored runs; the evaluation chapter checks the rule in a cell
def test_the_test_split_takes_no_part_in_the_choice(tuned_sweep, tmp_path):
    "Validation errors doctored to prefer, at each size, the rate that is worse on test: the doctored one is selected."
    out = tuned_sweep['out']
    rows = [r for r in json.loads((out / 'results.json').read_text())['runs'] if r.get('steps_factor', 1) == 1]
    saved, worse_on_test = {}, set()
    try:
        for f in (0.5, 0.25):
            group = sorted((r for r in rows if r['subset_size'] == f), key=lambda r: (r['top5_error'], r['test_loss']))
            for r, val in ((group[-1], 0.01), (group[0], 0.99)):      # worse on test -> best on validation
                m = out / r['run_dir'] / 'metrics.json'
                saved[m] = m.read_text()
                m.write_text(json.dumps(json.loads(saved[m]) | dict(val_top5_error=val)))
            worse_on_test.add(group[-1]['run_dir'])
        p = minisweep('eval', '--model', 'resnet18', '--checkpoint-dir', out, '--device', 'cpu')
        assert p.returncode == 0, p.stderr[-2000:]
        doctored = json.loads((out / 'results.json').read_text())['runs']
        assert {r['run_dir'] for r in doctored if r['selected']} == worse_on_test
        p = minisweep('curves', out / 'results.json', '--out', tmp_path / 'fig')
        assert p.returncode == 0, p.stderr[-2000:]
        assert (tmp_path / 'fig' / 'resnet18_lr_sensitivity.png').exists()
    finally:
        for m, text in saved.items(): m.write_text(text)


def image_folder(root: Path, n_classes: int = 3) -> Path:
    "An ImageFolder made from the shipped sample: train/<class>/*.jpg and test/<class>/*.jpg, no validation folder."
    import pyarrow.parquet as pq
    from minisweep.data import sample_dataset
    for split in ('train', 'test'):
        t = pq.read_table(next((Path(sample_dataset()) / 'data').glob(f'{split}-*.parquet'))).to_pydict()
        for i, (im, y) in enumerate(zip(t['image'], t['label'])):
            if y < n_classes:
                (root / split / f'class_{y}').mkdir(parents=True, exist_ok=True)
                (root / split / f'class_{y}' / f'{i}.jpg').write_bytes(im['bytes'])
    return root


@pytest.mark.slow           # a whole job on a new layout; the chapter checks ImageFolder and save_to_disk in seconds
def test_image_folder_with_a_validation_split_held_out(tmp_path, session_env, capsys):
    "A 3-class ImageFolder without validation: top-5 selection refused, caches prepared, the sweep's job trains on it."
    from minisweep.cli import main
    folder = image_folder(tmp_path / 'folder')
    grid = ['--models', 'resnet18', '--subset-sizes', '1', '--dataset', str(folder), '--validation-fraction', '0.25',
            '--image-size', '64', '--batch-size', '32', '--num-epochs', '1', '--device', 'cpu',
            '--out', str(tmp_path / 's')]
    assert main(['sweep', *grid, '--dry-run']) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and 'top-5 error is always 0' in err
    assert main(['sweep', *grid, '--select-on', 'val_top1_error', '--dry-run']) == 0
    assert 'resnet18/subset_1.0000/seed_0 pending       90' in capsys.readouterr().out and not (tmp_path / 's').exists()
    p = minisweep('prepare', '--dataset', folder, '--image-size', '64', '--validation-fraction', '0.25')
    assert p.returncode == 0 and p.stdout.count('decoded in') == 3, p.stderr[-2000:]
    builds = (session_env / 'builds.jsonl').read_text()
    p = minisweep('sweep', *grid, '--select-on', 'val_top1_error', '--figures', '')
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    (row,) = json.loads((tmp_path / 's' / 'results.json').read_text())['runs']
    assert (row['n_train'], row['num_classes']) == (90, 3)          # 40 a class, 10 held out for validation
    run = tmp_path / 's' / 'resnet18' / 'subset_1.0000' / 'seed_0'
    config = json.loads((run / 'metrics.json').read_text())['config']
    assert config['validation_fraction'] == 0.25 and config['select_on'] == 'val_top1_error'   # reached the job
    assert (session_env / 'builds.jsonl').read_text() == builds    # the job and the evaluation reused the caches


def test_budget_check_trains_only_twins_at_twice_the_steps(tuned_sweep):
    """The tuned sweep again with --budget-check (no sizes: its largest and smallest): the plan lists the twins, then
    only they train, each at the rate its size selected, as rows with steps_factor 2 that select nothing. (Last in the
    module: the tests above read the sweep without twins.)"""
    out, args, root = tuned_sweep['out'], tuned_sweep['args'], tuned_sweep['root']
    files = lambda: run_files(out)
    before = files()
    chosen = {r['subset_size']: r['learning_rate'] for r in json.loads((out / 'results.json').read_text())['runs']
              if r['selected']}
    p = minisweep(*args, '--budget-check', '--dry-run', cwd=root)
    assert p.returncode == 0, p.stdout + p.stderr
    assert 'and 2 twins at twice the steps (budget check at 0.5, 0.25)' in p.stdout, p.stdout
    for f, lr in chosen.items():                                   # each size's grid is done: the twin's rate is known
        assert f'resnet18/subset_{f:.4f}/lr_{lr:g}/seed_0_steps2 pending' in p.stdout, p.stdout
    assert files() == before
    p = minisweep(*args, '--budget-check', cwd=root)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert '6 done (2 trained now, 4 skipped as done before), 0 failed' in p.stdout, p.stdout
    assert {q: t for q, t in files().items() if q in before} == before             # every finished run kept as it was
    assert json.loads((out / 'sweep.json').read_text())['budget_check'] == [0.5, 0.25]
    rows = json.loads((out / 'results.json').read_text())['runs']
    twins = [r for r in rows if r['steps_factor'] == 2]
    assert sorted((r['subset_size'], r['learning_rate']) for r in twins) == sorted(chosen.items())
    assert all(r['run_dir'].endswith('/seed_0_steps2') and r['selected'] is False for r in twins)
    assert {r['subset_size']: r['learning_rate'] for r in rows if r['selected']} == chosen   # the twins chose nothing
    assert sorted(r['steps_factor'] for r in rows) == [1, 1, 1, 1, 2, 2]
    for r in rows:                               # every row: the clean training error, and one validation per epoch
        assert 0 <= r['train_top5_error'] <= r['train_top1_error'] <= 1 and r['n_validations'] == r['epochs'], r
        assert r['epochs'] == 4 * r['steps_factor'], r
    # a real measurement: at the largest size the model ranks its own images' labels better than chance (top-5: 0.5)
    assert all(r['train_top5_error'] < 0.5 for r in rows
               if r['subset_size'] == 0.5 and (r['selected'] or r['steps_factor'] == 2)), rows
    # the figures read the twins: summary.md has a budget check with a verdict per size, fits.json the same sizes
    md = (out / 'figures' / 'summary.md').read_text()
    assert 'Budget check: a twin of seed 0 trained at twice the steps.' in md, md
    assert len(re.findall(r'\| (\*\*budget-bound\*\*|not bound) \|', md)) == 2, md
    fits = json.loads((out / 'figures' / 'fits.json').read_text())['resnet18']
    bound = [int(r['n_train']) for r in twins if f"| {int(r['n_train']):,} (budget-bound) |" in md]
    assert all(rec is None or rec['budget_bound_sizes'] == bound for rec in fits.values()), (fits, bound)
