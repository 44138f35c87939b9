"""Faults of the job executor, on small notebooks of the tests' own (a real papermill job each, no training):
papermill's output never written through a link, job folders removed on SIGTERM and SIGINT, and those of a killed
sweep swept at the next start."""
import json, os, signal, subprocess, sys, tempfile, time
from pathlib import Path

import pytest

from minisweep import jobs
from minisweep.jobs import execute_job


def notebook(path: Path, *sources: str) -> Path:
    "A notebook whose first cell holds the parameters, then one code cell per source."
    cells = [dict(cell_type='code', id=f'c{i}', metadata={'tags': ['parameters']} if i == 0 else {}, source=s,
                  outputs=[], execution_count=None) for i, s in enumerate(sources)]
    kernel = {'kernelspec': {'name': 'python3', 'language': 'python', 'display_name': 'Python 3'}}
    path.write_text(json.dumps({'nbformat': 4, 'nbformat_minor': 5, 'metadata': kernel, 'cells': cells}))
    return path


@pytest.fixture
def tmpdir_env(tmp_path, monkeypatch, venv_path_env):
    "A temporary folder of the test's own, for job folders, in this process and in the processes it starts."
    tmp = tmp_path / 'tmp'; tmp.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp))
    return tmp, {**venv_path_env, 'TMPDIR': str(tmp)}


def job_folders(tmp: Path) -> list: return sorted(tmp.glob('minisweep-job-*'))


def test_an_output_notebook_that_is_a_link_is_refused_and_its_target_untouched(tmp_path, tmpdir_env):
    nb = notebook(tmp_path / 'small.ipynb', 'x = 1', 'print(x)')
    sweep, outside = tmp_path / 'sweep', tmp_path / 'outside'
    (sweep / 'run').mkdir(parents=True); outside.mkdir()
    (outside / 'train.ipynb').write_text('theirs')
    (sweep / 'run' / 'train.ipynb').symlink_to(outside / 'train.ipynb')
    ok, err, _ = execute_job(nb, sweep / 'run' / 'train.ipynb', dict(x=2), root=sweep)
    assert not ok and 'symbolic link' in err and '\n' not in err
    assert (outside / 'train.ipynb').read_text() == 'theirs'
    (sweep / 'linked').symlink_to(outside, target_is_directory=True)     # a run folder that is a link
    ok, err, _ = execute_job(nb, sweep / 'linked' / 'train.ipynb', dict(x=2), root=sweep)
    assert not ok and f'{sweep / "linked"} is a symbolic link' in err
    assert sorted(p.name for p in outside.iterdir()) == ['train.ipynb'] and not job_folders(tmpdir_env[0])


def test_a_link_planted_while_the_job_runs_is_not_written_through(tmp_path, tmpdir_env):
    "A cell swaps the run's notebook for a link: the notebook published at the end is refused, the target untouched."
    target, out = tmp_path / 'target.ipynb', tmp_path / 'sweep' / 'train.ipynb'
    target.write_text('theirs')
    nb = notebook(tmp_path / 'plant.ipynb', "out = target = ''",
                  'import os\nos.remove(out); os.symlink(target, out)')
    ok, err, _ = execute_job(nb, out, dict(out=str(out), target=str(target)), root=tmp_path / 'sweep')
    assert not ok and 'symbolic link' in err
    assert target.read_text() == 'theirs' and out.is_symlink()


def test_check_cells_do_not_run_in_a_job(tmp_path, tmpdir_env):
    nb = notebook(tmp_path / 'checked.ipynb', 'x = 1', "#| slow\n#| check\nraise AssertionError('a check ran')",
                  "print('x is', x)")
    ok, err, _ = execute_job(nb, tmp_path / 'run' / 'checked.ipynb', dict(x=3))
    assert (ok, err) == (True, None)
    ran = json.loads((tmp_path / 'run' / 'checked.ipynb').read_text())['cells']
    assert not any('a check ran' in ''.join(c['source']) for c in ran)
    assert ''.join(ran[-1]['outputs'][0]['text']) == 'x is 3\n'


DRIVER = '''import signal, sys
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)   # Ctrl-C as in a terminal, even if started in the background
import minisweep.jobs as jobs
nb, out, n_gpus = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
jobs.train_notebook = lambda: nb
runs = [(f'r{i}', dict(out_dir=str(out / f'r{i}')), out / f'r{i}') for i in range(3)]
try: jobs.run_local(runs, lambda key, slot: print('start', key, flush=True),
                    lambda key, ok, *rest: print('end', key, ok, flush=True), n_gpus=n_gpus)
except KeyboardInterrupt: print('interrupted', file=sys.stderr); sys.exit(130)
'''


def start_driver(tmp_path: Path, env: dict, n_gpus: int) -> subprocess.Popen:
    "`run_local` of jobs that sleep, in a process group of its own; returns once each job's kernel runs."
    nb = notebook(tmp_path / 'sleep.ipynb', "out_dir = ''", 'import time\ntime.sleep(300)')
    p = subprocess.Popen([sys.executable, '-c', DRIVER, str(nb), str(tmp_path / 'runs'), str(n_gpus)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while sum((d / 'executed.ipynb').exists() for d in job_folders(Path(env['TMPDIR']))) < n_gpus:
        assert p.poll() is None and time.time() < deadline, p.communicate()
        time.sleep(0.2)
    return p


@pytest.mark.parametrize('n_gpus', [1, 2])
@pytest.mark.parametrize('sig, group, code', [(signal.SIGTERM, False, 143), (signal.SIGINT, True, 130)])
def test_job_folders_are_removed_on_sigterm_and_sigint(tmp_path, tmpdir_env, n_gpus, sig, group, code):
    "SIGTERM to the sweep, or Ctrl-C (SIGINT to its process group): jobs killed, their folders gone, nothing reported."
    tmp, env = tmpdir_env
    p = start_driver(tmp_path, env, n_gpus)
    (os.killpg if group else os.kill)(p.pid, sig)
    out, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert 'Traceback' not in err and err.strip().splitlines() == (['interrupted'] if code == 130 else [])
    assert out.count('start') == n_gpus and 'end' not in out      # an interrupted run stays unfinished
    assert job_folders(tmp) == [], [list(d.rglob("*")) for d in job_folders(tmp)]


def test_the_folder_of_a_killed_sweep_is_swept_at_the_next_start(tmp_path, tmpdir_env):
    tmp, env = tmpdir_env
    p = start_driver(tmp_path, env, 1)
    os.killpg(p.pid, signal.SIGKILL); p.communicate(timeout=60)
    left = job_folders(tmp)
    assert len(left) == 1 and (left[0] / 'params.json').exists()        # SIGKILL runs no clean-up
    alive = tmp / f'minisweep-job-{jobs._process(os.getpid())}-keepme'   # a running sweep's: kept
    alive.mkdir()
    ok, err, _ = execute_job(notebook(tmp_path / 'small.ipynb', 'x = 1'), tmp_path / 'run' / 'small.ipynb', {})
    assert (ok, err) == (True, None)
    assert job_folders(tmp) == [alive]
