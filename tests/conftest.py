"Shared set-up of the test session: offline, a private decode cache, and an environment for subprocesses."
import os, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent          # the interpreter running pytest: minisweep is installed there
# offline; and last.pt written at every validation, as the tests of kills and resumes expect (a user's runs write it
# at most once a minute)
OFFLINE = dict(HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1', MINISWEEP_LAST_PT_SECONDS='0')


def pytest_configure(config):
    # before any test module imports `datasets` / `huggingface_hub`, which read these once, at import
    os.environ.update(OFFLINE)


@pytest.fixture(scope='session', autouse=True)
def session_env(tmp_path_factory):
    "No network, and a decode cache of this session's own: the tests never read or write the user's ~/.cache/minisweep."
    cache = tmp_path_factory.mktemp('minisweep-cache')
    with pytest.MonkeyPatch.context() as mp:
        for k, v in OFFLINE.items(): mp.setenv(k, v)
        mp.setenv('MINISWEEP_CACHE', str(cache))
        yield cache


@pytest.fixture
def venv_path_env(session_env) -> dict:
    """A copy of os.environ for subprocesses: the venv's bin first on PATH (so papermill's `python3` kernel is the
    venv's)."""
    env = dict(os.environ)
    env['PATH'] = os.pathsep.join([str(VENV_BIN), env.get('PATH', '')])
    env['VIRTUAL_ENV'] = str(VENV_BIN.parent)
    return env


MINISWEEP = str(VENV_BIN / 'minisweep')
SMALL = ['--num-epochs', '1', '--batch-size', '32', '--image-size', '64', '--dataset', '']


def minisweep(*args, env=None, cwd=None, timeout=900):
    "Run the installed console script."
    import subprocess
    return subprocess.run([MINISWEEP, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


@pytest.fixture(scope='session')
def local_sweep(tmp_path_factory, session_env):
    "A 2-model x 2-fraction sweep through the console script (shared with the Ray tests, which compare against it)."
    root = tmp_path_factory.mktemp('local')
    args = ['sweep', '--models', 'alexnet', 'resnet18', '--subset-sizes', '0.5', '0.25', '--seeds', '0', *SMALL,
            '--out', root / 'sweep']      # the figures' default home: <out>/figures
    prep = minisweep('prepare', '--dataset', '', '--image-size', '64',
                     cwd=root)     # the caches, decoded ahead of the sweep
    assert prep.returncode == 0 and prep.stdout.count('train') >= 1, prep.stderr[-2000:]
    builds = (session_env / 'builds.jsonl').read_text()
    p = minisweep(*args, cwd=root)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return dict(root=root, out=root / 'sweep', args=args, first=p,
                decoded_by_sweep=(session_env / 'builds.jsonl').read_text() != builds)


