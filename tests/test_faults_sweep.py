"The sweep folder as a boundary, its records read with one line when damaged, and `minisweep clean` (FAULTS.md)."
import contextlib, io, json, os, shutil
from pathlib import Path

import pytest

from conftest import SMALL, minisweep
from minisweep.cli import main
from minisweep.core import setting_problem

GRID = ['--models', 'resnet18', '--subset-sizes', '0.5', '0.25', '--seeds', '0', *SMALL, '--figures', '']


def run_main(*args) -> tuple:
    "The console script's `main`, here: (exit status, stdout, the lines stderr shows)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = main([str(a) for a in args])
        except SystemExit as e: rc = e.code
    lines = [seg for line in err.getvalue().split('\n') for seg in [line.rsplit('\r', 1)[-1]] if seg.strip()]
    return rc, out.getvalue(), lines


def tree(root: Path) -> dict:
    "Every file under `root` with its bytes: what a refused sweep must leave as it was."
    return {p.relative_to(root): p.read_bytes() for p in sorted(Path(root).rglob('*')) if p.is_file()}


def one_line(rc, lines, says: str):
    assert rc == 2 and len(lines) == 1 and says in lines[0] and 'Traceback' not in lines[0], (rc, lines)


LINKS = {   # where the link is, relative to the sweep folder, and whether it stands for a folder
    'model folder': ('resnet18', True),
    'subset folder': ('resnet18/subset_0.2500', True),
    'run folder': ('resnet18/subset_0.2500/seed_0', True),
    "a run's train.ipynb": ('resnet18/subset_0.2500/seed_0/train.ipynb', False),
    "a run's last.pt": ('resnet18/subset_0.5000/seed_0/last.pt', False),
    'sweep.json': ('sweep.json', False),
    'results.json': ('results.json', False),
    'curves.ipynb': ('curves.ipynb', False),
    'figures folder': ('figures', True),
}


@pytest.mark.parametrize('where', LINKS)
def test_a_link_in_the_sweep_folder_is_refused_and_its_target_left_alone(where, tmp_path):
    out, elsewhere = tmp_path / 'sweep', tmp_path / 'elsewhere'
    elsewhere.mkdir(); (elsewhere / '.old.tmp').write_text('not the sweep\'s'); (elsewhere / 'x.ipynb').write_text('{}')
    rel, is_folder = LINKS[where]
    link = out / rel
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(elsewhere if is_folder else elsewhere / 'x.ipynb')
    before = tree(elsewhere)
    grid = GRID[:-2] if where == 'figures folder' else GRID         # the sweep's own figures folder: <out>/figures
    args = ['sweep', *grid, '--out', out]
    rc, _, lines = run_main(*args)
    one_line(rc, lines, 'is a symbolic link')
    assert tree(elsewhere) == before and not (out / 'resnet18' / 'subset_0.5000' / 'seed_0' / 'train.ipynb').exists()


FOREIGN = {
    'not JSON': ('{"format": "minisweep.sweep/1", ', 'is not readable JSON'),
    'a JSON list': ('[1, 2, 3]', 'is not a minisweep sweep record'),
    'another format': ('{"format": "someone.else/2", "runs": []}', 'is not a minisweep sweep record'),
    'an older minisweep': ('{"format": "minisweep.sweep/0", "versions": {"minisweep": "0.0.3"}}', 'minisweep 0.0.3'),
    'runs as a list': ('{"format": "minisweep.sweep/1", "identity": {}, "runs": []}', 'it has no runs'),
    'a run outside the folder': ('{"format": "minisweep.sweep/1", "identity": {}, '
                                 '"runs": {"a": {"run_dir": "/etc", "state": "done"}}}', 'no folder inside the sweep'),
}


@pytest.mark.parametrize('dry_run', [False, True], ids=['sweep', 'dry-run'])
@pytest.mark.parametrize('kind', FOREIGN)
def test_a_foreign_sweep_json_is_one_line(kind, dry_run, tmp_path):
    out = tmp_path / 'sweep'; out.mkdir()
    text, says = FOREIGN[kind]
    (out / 'sweep.json').write_text(text)
    rc, _, lines = run_main('sweep', *GRID, '--out', out, *(['--dry-run'] if dry_run else []))
    one_line(rc, lines, says)
    assert (out / 'sweep.json').read_text() == text and not (out / 'resnet18').exists()


SOUND_METRICS = dict(status='done', model='resnet18', subset_size=0.25, seed=0, config={}, n_train=100,
                     num_classes=10, best_epoch=1, epochs_run=1, validations=1, lr=0.05, val_top1_error=0.5,
                     val_top5_error=0.1, val_loss=1.5, train_seconds=1.0, train_top1_error=None, train_top5_error=None)
DAMAGED_METRICS = {   # one field spoiled in an otherwise sound record: the line names that field (core's wording)
    'no model': ({k: v for k, v in SOUND_METRICS.items() if k != 'model'}, "metrics.json has no field 'model'"),
    'n_train as text': (SOUND_METRICS | dict(n_train='many'),
                        "metrics.json: n_train must be a whole number, got 'many'"),
    'a boolean seed': (SOUND_METRICS | dict(seed=True), 'metrics.json: seed must be a whole number, got True'),
}


@pytest.mark.parametrize('dry_run', [False, True], ids=['sweep', 'dry-run'])
@pytest.mark.parametrize('kind', DAMAGED_METRICS)
def test_a_damaged_metrics_json_says_what_to_delete(kind, dry_run, tmp_path):
    out = tmp_path / 'sweep'
    run = out / 'resnet18' / 'subset_0.2500' / 'seed_0'; run.mkdir(parents=True)
    metrics, says = DAMAGED_METRICS[kind]
    (run / 'metrics.json').write_text(json.dumps(metrics))
    rc, _, lines = run_main('sweep', *GRID, '--out', out, *(['--dry-run'] if dry_run else []))
    one_line(rc, lines, says)
    assert f'to recover, delete the run folder {run} and train that run again' in lines[0]
    assert not (out / 'resnet18' / 'subset_0.5000').exists()                 # found before any job


def test_a_metrics_json_that_is_no_record_is_an_unfinished_run(tmp_path):
    "A JSON list in place of metrics.json never says done: the run is planned again (training rewrites the file)."
    out = tmp_path / 'sweep'
    run = out / 'resnet18' / 'subset_0.2500' / 'seed_0'; run.mkdir(parents=True)
    (run / 'metrics.json').write_text('["done"]')
    rc, printed, lines = run_main('sweep', *GRID, '--out', out, '--dry-run')
    assert rc == 0 and not lines, lines
    assert '2 runs: 0 done, 0 partial, 2 pending' in printed, printed


@pytest.mark.skipif(setting_problem('seed', 2**32) is None, reason="core's seed rule has no upper bound")
@pytest.mark.parametrize('how', ['command line', 'api'])
def test_a_seed_outside_numpys_range_fails_before_any_job(how, tmp_path):
    out = tmp_path / 'sweep'
    if how == 'command line':
        rc, _, lines = run_main('sweep', *GRID[:6], '1', str(2**32), *GRID[6:], '--out', out)
        assert rc == 2 and len(lines) == 1 and 'seed' in lines[0], lines
    else:
        from minisweep.core import UserError
        from minisweep.sweep import Sweep, run_sweep
        with pytest.raises(UserError, match='seed'):
            run_sweep(Sweep(['resnet18'], [0.5], [0, 2**32], out=str(out), train=dict(dataset='')), figures=None)
    assert not out.exists()


@pytest.mark.parametrize('kind', ['a file', 'under /proc'])
def test_a_cache_folder_that_cannot_hold_the_cache_fails_before_any_job(kind, tmp_path, monkeypatch):
    cache = tmp_path / 'cache-file' if kind == 'a file' else Path('/proc/minisweep-cache')
    if kind == 'a file': cache.write_text('a file')
    monkeypatch.setenv('MINISWEEP_CACHE', str(cache))
    out = tmp_path / 'sweep'
    rc, _, lines = run_main('sweep', *GRID, '--out', out)
    one_line(rc, lines, f'the decode cache {cache} (MINISWEEP_CACHE)')
    assert not out.exists()


@pytest.fixture
def finished(local_sweep, tmp_path) -> tuple:
    "A copy of the session's finished sweep (2 models x 2 sizes) and the command that made it, pointed at the copy."
    out = tmp_path / 'sweep'
    shutil.copytree(local_sweep['out'], out, ignore=shutil.ignore_patterns('.lock'))
    args = [str(out) if str(a) == str(local_sweep['out']) else a for a in local_sweep['args']]
    return out, args + ['--figures', '']


def test_a_damaged_results_json_is_written_again_and_stale_temps_go(finished, tmp_path):
    out, args = finished
    good = json.loads((out / 'results.json').read_text())
    (out / 'results.json').write_text('{"format": "minisweep.results/1", "runs": [{"n_train": tru')
    (out / '.sweep.json.killed.tmp').write_text('{"half')                 # left by a sweep killed while saving
    pts = {p: p.stat().st_mtime_ns for p in out.rglob('*.pt')}
    p = minisweep(*args, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads((out / 'results.json').read_text())['runs'] == good['runs']
    assert not list(out.glob('.*.tmp')) and {q: q.stat().st_mtime_ns for q in out.rglob('*.pt')} == pts


def test_clean_frees_the_checkpoints_and_keeps_every_result(finished, tmp_path):
    out, args = finished
    results = (out / 'results.json').read_bytes()
    kept = {p for p in tree(out) if p.suffix != '.pt'}
    size = sum(p.stat().st_size for p in out.rglob('*.pt'))
    p = minisweep('clean', out, cwd=tmp_path)
    assert p.returncode == 0 and f'freed {size / 2**20:,.1f} MiB' in p.stdout, p.stdout + p.stderr
    assert not list(out.rglob('*.pt')) and set(tree(out)) - {Path('.lock')} == kept
    again = minisweep('clean', out, cwd=tmp_path)
    assert again.returncode == 0 and 'removed 0 checkpoints' in again.stdout
    p = minisweep(*args, cwd=tmp_path)                       # the sweep again: nothing to train, results kept
    assert p.returncode == 0 and 'done already' in p.stdout and 'minisweep clean removed it' in p.stdout, p.stderr
    assert (out / 'results.json').read_bytes() == results and not list(out.rglob('*.pt'))
    p = minisweep('curves', out / 'results.json', '--out', tmp_path / 'figs', cwd=tmp_path)
    assert p.returncode == 0 and (tmp_path / 'figs' / 'curves.png').exists(), p.stderr[-2000:]
    rc, _, lines = run_main('eval', '--model', 'resnet18', '--checkpoint-dir', out)    # eval needs best.pt
    assert rc == 2 and len(lines) == 1 and 'no finished run' in lines[0], lines


def test_clean_refuses_what_is_not_a_sweep_and_never_follows_a_link(finished, tmp_path):
    out, _ = finished
    for folder in (tmp_path, out / 'resnet18'):
        rc, _, lines = run_main('clean', folder)
        one_line(rc, lines, 'is not a sweep folder')
    elsewhere = tmp_path / 'elsewhere'
    shutil.move(out / 'alexnet' / 'subset_0.2500', elsewhere)
    (out / 'alexnet' / 'subset_0.2500').symlink_to(elsewhere)
    before = tree(elsewhere)
    rc, _, lines = run_main('clean', out)
    one_line(rc, lines, 'is a symbolic link')
    assert tree(elsewhere) == before
