"""Damaged records, bad cache folders and image paths that are not files: each is one line on stderr and exit status 2,
before any work, with nothing outside the test's own folders changed (FAULTS.md, "Records read back")."""
import hashlib, io, json, os, shutil
from pathlib import Path

import pytest
import torch

from conftest import OFFLINE
from test_faults import cli, run_cli, visible_lines      # noqa: F401 (cli is a fixture)
from minisweep.train import TrainConfig, load_checkpoint, train_run

RUN = 'resnet18/subset_0.1250/seed_0'
EVAL = ['eval', '--model', 'resnet18', '--checkpoint-dir']
PREPARE = ['prepare', '--dataset', '', '--image-size', '64']


def tree(root: Path) -> dict:
    "Every file under `root` (links included, not followed) and a digest of what it holds."
    return {str(p.relative_to(root)): (os.readlink(p) if p.is_symlink() else
                                       hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else 'folder')
            for p in sorted(root.rglob('*'))}


@pytest.fixture(scope='module')
def finished(tmp_path_factory, session_env):
    "One real finished run of the sweep's layout: ResNet18 on 1/8 of the sample, 1 epoch, on the CPU."
    root = tmp_path_factory.mktemp('finished')
    train_run(TrainConfig(model='resnet18', subset_size=0.125, seed=0, image_size=64, num_epochs=1, batch_size=32,
                          device='cpu', bf16=False, progress=False, out_dir=str(root / RUN)))
    return root


def one_line_exit_2(rc, err, says):
    lines = visible_lines(err)
    assert rc == 2 and len(lines) == 1 and 'Traceback' not in err, f'exit status {rc}, stderr:\n{err[-3000:]}'
    assert says in lines[0], lines[0]


def spoil_checkpoint(run: Path, change):
    ck = load_checkpoint(run / 'best.pt')
    torch.save(change(ck), run / 'best.pt')


def spoil_metrics(run: Path, change):
    m = json.loads((run / 'metrics.json').read_text())
    (run / 'metrics.json').write_text(json.dumps(change(m)))


def _head(ck):
    last = [k for k in ck['model'] if k.endswith('weight')][-1]           # the classifier: 5 classes instead of 10
    return {**ck, 'model': {**ck['model'], last: ck['model'][last][:5]}}


SPOILED = {   # case: (what is changed, the words of the one line)
    'weights of another head': (lambda r: spoil_checkpoint(r, _head),
                                'its weights do not fit the model (size mismatch'),
    'epoch as text': (lambda r: spoil_checkpoint(r, lambda ck: {**ck, 'epoch': '1'}), 'epoch must be a whole number'),
    'config field of another type': (lambda r: spoil_checkpoint(r, lambda ck: {**ck, 'config': {**ck['config'],
                                     'batch_size': 32.5}}), 'batch_size must be a whole number, got 32.5'),
    'config of an older minisweep': (lambda r: spoil_checkpoint(r, lambda ck: {**ck, 'config': {
                                     k: v for k, v in ck['config'].items() if k != 'max_validations'}}),
                                     'written by an older minisweep (no field max_validations)'),
    'metrics without model': (lambda r: spoil_metrics(r, lambda m: {k: v for k, v in m.items() if k != 'model'}),
                              "metrics.json has no field 'model'"),
    'metrics with n_train true': (lambda r: spoil_metrics(r, lambda m: {**m, 'n_train': True}),
                                  'metrics.json: n_train must be a whole number, got True'),
    'metrics with a seed of text': (lambda r: spoil_metrics(r, lambda m: {**m, 'seed': '0'}),
                                    "metrics.json: seed must be a whole number, got '0'"),
}


@pytest.mark.parametrize('case', SPOILED)
def test_eval_of_a_damaged_record_is_one_line_naming_the_file(cli, finished, tmp_path, case):
    spoil, says = SPOILED[case]
    runs, cwd = tmp_path / 'runs', tmp_path / 'cwd'
    shutil.copytree(finished, runs); cwd.mkdir()
    spoil(runs / RUN)
    before, original = tree(runs), tree(finished)
    rc, out, err = cli(*EVAL, runs, cwd=cwd)
    one_line_exit_2(rc, err, says)
    assert f'to recover, delete the run folder {runs / RUN}' in err          # the way out: what to delete
    assert tree(runs) == before and tree(finished) == original and not list(cwd.iterdir())   # nothing written


def test_eval_of_the_sound_run_still_works(cli, finished, tmp_path):
    "The control: the same command on the run as it was trained evaluates it."
    runs = tmp_path / 'runs'
    shutil.copytree(finished, runs)
    rc, out, err = cli(*EVAL, runs, cwd=tmp_path)
    assert rc == 0 and 'resnet18' in out, err[-3000:]


def test_a_seed_beyond_numpys_range_is_refused_before_any_work(cli, tmp_path):
    rc, out, err = cli('train', '--model', 'resnet18', '--subset-sizes', '0.125', '--num-epochs', '1',
                       '--image-size', '64', '--dataset', '', '--device', 'cpu', '--seed', str(2**32),
                       '--checkpoint-dir', tmp_path / 'ck', cwd=tmp_path)
    one_line_exit_2(rc, err, 'seed must be a whole number in [0, 2**32 - 1')
    assert not (tmp_path / 'ck').exists()


@pytest.mark.parametrize('where', ['a file', 'below a file', 'under /proc'])
def test_a_cache_folder_that_cannot_hold_the_cache_is_one_line(cli, tmp_path, monkeypatch, where):
    (tmp_path / 'a_file').write_text('not a folder\n')
    cache = {'a file': tmp_path / 'a_file', 'below a file': tmp_path / 'a_file' / 'cache',
             'under /proc': '/proc/self/x'}
    monkeypatch.setenv('MINISWEEP_CACHE', str(cache[where]))
    before = tree(tmp_path)
    rc, out, err = cli(*PREPARE, cwd=tmp_path)
    one_line_exit_2(rc, err, f'the decode cache {cache[where]} (MINISWEEP_CACHE)')
    assert tree(tmp_path) == before


def test_a_cache_file_that_is_a_link_is_refused_and_its_target_left_alone(cli, tmp_path, monkeypatch):
    cache, outside = tmp_path / 'cache', tmp_path / 'outside.jsonl'
    cache.mkdir(); outside.write_text('precious\n')
    (cache / 'builds.jsonl').symlink_to(outside)
    monkeypatch.setenv('MINISWEEP_CACHE', str(cache))
    rc, out, err = cli(*PREPARE, cwd=tmp_path)
    one_line_exit_2(rc, err, f'{cache / "builds.jsonl"} is a symbolic link')
    assert outside.read_text() == 'precious\n' and not list(cache.glob('*.npy'))     # refused before decoding


def test_a_damaged_cache_record_is_rebuilt_with_one_warning(cli, tmp_path, monkeypatch):
    cache = tmp_path / 'cache'
    monkeypatch.setenv('MINISWEEP_CACHE', str(cache))
    rc, out, err = cli(*PREPARE, cwd=tmp_path)
    assert rc == 0, err[-3000:]
    record = next(cache.glob('test-*.json'))
    record.write_text(json.dumps({'shape': 'wide'}))
    rc, out, err = cli(*PREPARE, cwd=tmp_path)
    lines = visible_lines(err)
    assert rc == 0 and len(lines) == 1 and 'is damaged' in lines[0] and 'shape must be a list' in lines[0], err[-3000:]
    assert json.loads(record.read_text())['shape'][0] == 100                   # rebuilt: the test split's 100 images
    assert len((cache / 'builds.jsonl').read_text().splitlines()) == 4        # three splits, then the test split again


def path_only_dataset(root: Path, special) -> Path:
    "A dataset whose image column holds only paths; image 1 of the train split is `special(path)` instead of a PNG."
    import datasets
    from PIL import Image
    (root / 'images').mkdir(parents=True); (root / 'data').mkdir()
    png = io.BytesIO(); Image.new('RGB', (80, 80), 'red').save(png, 'PNG')
    feats = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=['a', 'b'])})
    for split in ('train', 'validation', 'test'):
        paths = [root / 'images' / f'{split}-{i}.png' for i in range(4)]
        for i, p in enumerate(paths):
            if split == 'train' and i == 1: special(p)
            else: p.write_bytes(png.getvalue())
        rows = {'image': [{'bytes': None, 'path': str(p)} for p in paths], 'label': [0, 1, 0, 1]}
        shard = root / 'data' / f'{split}-00000-of-00001.parquet'
        datasets.Dataset.from_dict(rows, features=feats).to_parquet(str(shard))
    return root


@pytest.mark.parametrize('kind, says', [(os.mkfifo, 'is a FIFO (named pipe), not a regular file'),
                                        (os.mkdir, 'is a folder, not a regular file'),
                                        (lambda p: p.symlink_to('/dev/zero'), 'is a device, not a regular file')],
                         ids=['fifo', 'folder', 'device'])
def test_an_image_path_that_is_not_a_regular_file_is_one_line_never_a_hang(tmp_path, kind, says):
    "The installed script, with a time limit: a FIFO read would block forever."
    data = path_only_dataset(tmp_path / 'data', kind)
    p = run_cli('prepare', '--dataset', data, '--image-size', '64', cwd=tmp_path, timeout=300,
                MINISWEEP_CACHE=str(tmp_path / 'cache'), **OFFLINE)
    bad = data / 'images' / 'train-1.png'
    one_line_exit_2(p.returncode, p.stderr, f"image 1 of split 'train': image file {bad} {says}")
    assert not list((tmp_path / 'cache').glob('*.npy'))
