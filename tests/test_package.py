"The package as a user installs it: a wheel built from the checkout, imported from outside the repository."
import os, shutil, subprocess, sys, zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp('wheel')
    had_build = (ROOT / 'build').exists()    # setuptools builds in the source tree: leave no build/ behind that we made
    try:
        p = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w',
                            str(out), str(ROOT)],
                           capture_output=True, text=True, cwd=out)
    finally:
        if not had_build: shutil.rmtree(ROOT / 'build', ignore_errors=True)
    assert p.returncode == 0, p.stderr[-2000:]
    # a quiet build: no packaging warnings for the user to wade through
    assert 'Warning' not in p.stderr, p.stderr[-2000:]
    return next(out.glob('minisweep-*.whl'))


def test_wheel_ships_the_sample_and_the_notebooks(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {'minisweep/notebooks/02_train.ipynb', 'minisweep/notebooks/04_curves.ipynb',
            'minisweep/sample/README.md'} <= names
    assert {f'minisweep/sample/data/{s}-00000-of-00001.parquet' for s in ('train', 'validation', 'test')} <= names
    assert sum(zipfile.ZipFile(wheel).getinfo(n).file_size for n in names
               if n.startswith('minisweep/sample/')) < 2 * 1024 ** 2


def test_installed_package_works_outside_the_repo(wheel, tmp_path):
    site = tmp_path / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '-q', '--target', str(site), str(wheel)],
                   check=True)
    code = ("import minisweep, minisweep.data as d, minisweep.jobs as s\n"
            "assert minisweep.__file__.startswith(%r), minisweep.__file__\n"
            "assert s.train_notebook().is_file() and str(s.train_notebook()).startswith(%r)\n"
            "sp = d.load_splits(d.sample_dataset())\n"
            "c = d.decoded_split(sp['train'], 73, progress=False)\n"
            "b = d.Batches(c, 64, 16, train=True)\n"
            "x, y, n = next(iter(b))\n"
            "assert tuple(x.shape) == (16, 3, 64, 64) and len(sp['train'].classes) == 10\n"
            "print('ok')\n") % (str(site), str(site))
    env = dict(os.environ, PYTHONPATH=str(site))
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert p.returncode == 0 and p.stdout.strip().endswith('ok'), p.stderr[-2000:]


def test_house_check_fails_on_a_later_chapter_import_or_a_torch_core(tmp_path):
    "tools/house.py (`make test` runs it) passes on the checkout, fails on a core importing torch or a later chapter."
    for folder in ('tools', 'minisweep', 'nbs'): shutil.copytree(ROOT / folder, tmp_path / folder)
    house = lambda: subprocess.run([sys.executable, str(tmp_path / 'tools/house.py')], capture_output=True, text=True)
    p = house()
    assert p.returncode == 0 and 'Imports of a later chapter: none' in p.stdout, p.stdout[-2000:] + p.stderr[-2000:]
    core = tmp_path / 'minisweep/core.py'
    core.write_text(core.read_text() + '\n\ndef _late():\n    import torch\n    from .sweep import run_sweep\n')
    p = house()
    assert p.returncode == 1 and 'core -> sweep' in p.stdout and 'The core imports torch: yes' in p.stdout, p.stdout
