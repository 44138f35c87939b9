"""`minisweep curves` on results whose uncertainty cannot be estimated, or whose fit stops at a bound: the files a reader
opens say so, and never show an uncertainty of zero. No training: the results are written by hand."""
import json, re

from conftest import minisweep


def row(model, n_train, top5, top1, seed=0):
    return dict(model=model, subset_size=n_train / 400, learning_rate=0.01, seed=seed, n_train=n_train, top1_error=top1,
                top5_error=top5, test_loss=2.0, best_epoch=8, val_top5_error=top5, val_top1_error=top1, val_loss=2.0,
                select_on='val_top5_error', selected=True, default_learning_rate=0.01, train_seconds=1.0, num_classes=10,
                dataset='', split='test', n_test=100, epochs=8, run_dir=f'{model}/subset_{n_train / 400:.4f}/seed_{seed}')


def test_curves_say_what_they_cannot_estimate(tmp_path, venv_path_env):
    # alexnet: one seed at four sizes, its top-1 error at chance (0.9), where the fit stops at the bounds
    runs = [row('alexnet', n, 2.5 * n ** -0.35 + e, 0.9) for n, e in zip((50, 100, 200, 400), (0.01, -0.01, 0.005, -0.005))]
    runs += [row('resnet18', n, t5, t1) for n, t5, t1 in ((100, 0.50, 0.90), (200, 0.42, 0.85), (400, 0.37, 0.80))]  # one seed, three sizes
    (tmp_path / 'results.json').write_text(json.dumps(dict(format='minisweep.results/1', split='test', runs=runs)))
    p = minisweep('curves', tmp_path / 'results.json', '--out', tmp_path / 'fig', env=venv_path_env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    names = {f.name for f in (tmp_path / 'fig').iterdir()}
    assert {f'{m}_curve.{x}' for m in ('alexnet', 'resnet18') for x in ('png', 'pdf')} | {'curves.png', 'curves.pdf'} <= names
    md = (tmp_path / 'fig' / 'summary.md').read_text()
    assert not re.search(r'± 0\.0+(?![0-9])', md), md
    assert 'Test errors on the sample shipped with minisweep · 100 test images per error' in md, md
    r18 = md[md.index('## resnet18'):]
    assert "not estimable: 3 runs for the law's 3 parameters" in r18 and 'none (3 sizes only)' in r18, r18
    assert '| 400 | 1 | 0.800 [0.71, 0.87] | 0.370 [0.28, 0.47] |' in r18, r18           # the test set's 95% interval
    alex = md[md.index('## alexnet'):md.index('## resnet18')]
    assert '| top-1 error | 0.900 (bound) |' in alex and 'top-1 error: the floor c equals the smallest error measured' in alex, alex
    assert '| top-1 error | 0.000 (bound) |' in r18 and 'top-1 error: the floor c is 0, its lower bound' in r18, r18
