"The sweep end to end through the installed `minisweep` console script, on the shipped sample."
import json
from pathlib import Path

import pytest

from conftest import SMALL, minisweep


def mtimes(root):
    return {p: p.stat().st_mtime_ns for p in Path(root).rglob('last.pt')}


def test_sweep_writes_everything(local_sweep):
    out = local_sweep['out']
    assert len(list(out.rglob('train.ipynb'))) == 4
    rec = json.loads((out / 'sweep.json').read_text())
    assert {r['state'] for r in rec['runs'].values()} == {'done'}
    assert rec['grid'] == dict(models=['alexnet', 'resnet18'], subset_sizes=[1.0, 0.5], seeds=[0])
    assert {'torch', 'minisweep', 'python'} <= set(rec['versions']) and rec['started'] and rec['ended']
    rows = json.loads((out / 'results.json').read_text())['runs']
    assert len(rows) == 4 and all(0 <= r['top5_error'] <= r['top1_error'] <= 1 for r in rows)
    assert {(r['model'], r['subset_size'], r['n_train']) for r in rows} >= {('resnet18', 1.0, 400), ('resnet18', 0.5, 200)}
    assert (out / 'curves.ipynb').exists()
    for name in ('alexnet_curve.png', 'resnet18_curve.png', 'curves.png'):
        assert (local_sweep['root'] / 'figures' / name).stat().st_size > 5000
    assert 'done' in local_sweep['first'].stdout and 'left' in local_sweep['first'].stdout   # progress with a time estimate


def test_sweep_again_retrains_nothing_and_resumes_missing(local_sweep):
    out, args = local_sweep['out'], local_sweep['args']
    files = lambda: {p: p.stat().st_mtime_ns for p in out.rglob('*') if p.name in ('last.pt', 'best.pt', 'metrics.json', 'log.jsonl')}
    before = files()
    p = minisweep(*args, cwd=local_sweep['root'])
    assert p.returncode == 0, p.stderr[-2000:]
    assert files() == before and 'done already' in p.stdout
    victim = out / 'resnet18' / 'subset_0.5000' / 'seed_0'
    (victim / 'metrics.json').unlink()
    p = minisweep(*args, cwd=local_sweep['root'])
    assert p.returncode == 0, p.stderr[-2000:]
    assert (victim / 'metrics.json').exists()
    # that run was finished again from its last.pt (all its epochs were done: nothing to retrain); no other run was touched
    assert {q.parent for q, t in files().items() if before.get(q) != t} == {victim}


def test_a_failing_run_leaves_the_others_and_exits_nonzero(tmp_path):
    # subset 0.05 of 40 images a class is 20 images: fewer than one batch of 32, so that one cell of the grid fails
    p = minisweep('sweep', '--models', 'resnet18', '--subset-sizes', '1', '0.05', '--seeds', '0', *SMALL,
                  '--out', tmp_path / 's', '--figures', tmp_path / 'fig', cwd=tmp_path)
    assert p.returncode == 1
    rec = json.loads((tmp_path / 's' / 'sweep.json').read_text())['runs']
    assert rec['resnet18/subset_1.0000/seed_0']['state'] == 'done'
    failed = rec['resnet18/subset_0.0500/seed_0']
    assert failed['state'] == 'failed' and 'batch size 32 is larger' in failed['error'] and failed['error'].startswith('cell ')
    assert '| resnet18/subset_0.0500/seed_0 |' in p.stdout                     # the failure table
    assert (tmp_path / 's' / 'resnet18' / 'subset_1.0000' / 'seed_0' / 'metrics.json').exists()


def test_seed_style_train_then_eval(tmp_path):
    p = minisweep('train', '--model', 'resnet18', '--subset-sizes', '0.5', '0.25', '--num-epochs', '1', '--learning-rate', '0.1',
                  '--batch-size', '32', '--image-size', '64', '--dataset', '', '--checkpoint-dir', tmp_path / 'ck')
    assert p.returncode == 0, p.stderr[-2000:]
    stamps = list((tmp_path / 'ck' / 'resnet18').iterdir())
    assert len(stamps) == 1
    assert sorted(d.name for d in stamps[0].iterdir()) == ['subset_0.2500', 'subset_0.5000']
    assert all((d / 'metrics.json').exists() for d in stamps[0].iterdir())
    p = minisweep('eval', '--model', 'resnet18', '--checkpoint-dir', stamps[0])
    assert p.returncode == 0, p.stderr[-2000:]
    rows = json.loads((stamps[0] / 'results.json').read_text())['runs']
    assert sorted(r['subset_size'] for r in rows) == [0.25, 0.5]
    p = minisweep('curves', stamps[0] / 'results.json', '--out', tmp_path / 'out')
    assert p.returncode == 0, p.stderr[-2000:]
    assert (tmp_path / 'out' / 'resnet18_curve.png').exists()


@pytest.mark.parametrize('args, says', [
    (['frobnicate'], 'invalid choice'),
    (['sweep', '--frobnicate'], 'unrecognized arguments'),
    (['sweep', '--models'], 'expected at least one argument'),
    (['sweep', '--subset-sizes'], 'expected at least one argument'),
    (['sweep', '--subset-sizes', '1.5'], 'outside (0, 1]'),
    (['sweep', '--subset-sizes', '0'], 'outside (0, 1]'),
    (['sweep', '--models', 'vgg99', '--subset-sizes', '0.5'], 'unknown model'),
    (['sweep', '--models', 'alexnet', '--subset-sizes', '0.5', '--dataset', '/nonexistent/data'], 'does not exist'),
    (['train', '--model', 'alexnet', '--image-size', '32'], '63 pixels'),
    (['train', '--model', 'resnet18', '--num-epochs', '0'], 'must be at least 1'),
    (['eval', '--model', 'resnet18', '--checkpoint-dir', '/nonexistent/runs'], ''),
    (['curves', '/nonexistent/results.json'], ''),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, says):
    p = minisweep(*args, cwd=tmp_path)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert len(p.stderr.strip().splitlines()) == 1 and 'Traceback' not in p.stderr
    assert says in p.stderr


def test_a_folder_of_another_grid_is_refused(local_sweep):
    p = minisweep('sweep', '--models', 'resnet18', '--subset-sizes', '0.25', '--seeds', '0', *SMALL,
                  '--out', local_sweep['out'], cwd=local_sweep['root'])
    assert p.returncode == 2 and 'another grid' in p.stderr and '--out' in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize('grid, runs', [
    (['--models', 'resnet18', '--subset-sizes', '0.25', '0.125', '--seeds', '0'], 2),                 # one model
    (['--models', 'alexnet', 'resnet18', '--subset-sizes', '0.125', '--seeds', '0'], 2),             # one size, both models
], ids=['one model', 'one size'])
def test_every_grid_shape_ends_with_its_figures(tmp_path, grid, runs):
    """The curves report asserts nothing about a user's results: one model, or one size, with one seed, ends with exit 0
    and its figures (both models and two sizes: `test_sweep_writes_everything`; one run: the planted-module case of
    test_faults.py)."""
    p = minisweep('sweep', *grid, *SMALL, '--device', 'cpu', '--out', tmp_path / 's', '--figures', tmp_path / 'fig', cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    models = grid[grid.index('--models') + 1:grid.index('--subset-sizes')]
    assert {f'{m}_curve.png' for m in models} | {'curves.png', 'summary.md', 'training_curves.png'} <= {f.name for f in (tmp_path / 'fig').iterdir()}
    assert len(json.loads((tmp_path / 's' / 'results.json').read_text())['runs']) == runs
    assert 'figures: none' not in p.stdout
