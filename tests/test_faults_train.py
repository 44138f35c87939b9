"""A run's own records, damaged or cut short, and what a finished run keeps on disk.

Real runs of ResNet18 on a quarter of the sample shipped with minisweep (100 images, 3 steps an epoch), on the CPU and
in float32, where a run is a pure function of its settings: a run resumed from what survived must end exactly where an
uninterrupted one does. `MINISWEEP_LAST_PT_SECONDS` sets how often `last.pt` may be written (60 s by default)."""
import json, os, shutil, signal, subprocess, sys, time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

import minisweep.train as train
from minisweep.core import UserError
from minisweep.train import TrainConfig, atomic_save, load_checkpoint, read_log, train_run

ROOT = Path(__file__).resolve().parents[1]
TIMING = ('seconds', 'val_seconds', 'images_per_second')     # the only fields of a log line that may differ
RESULT_KEYS = ('n_train', 'epochs_run', 'planned_epochs', 'steps', 'best_epoch', 'validations', 'val_loss',
               'val_top1_error', 'val_top5_error', 'train_top1_error', 'train_top5_error')


def cfg_in(out_dir, **kw) -> TrainConfig:
    "Three epochs of a quarter of the sample: a validation after each."
    base = dict(model='resnet18', subset_size=0.25, seed=0, image_size=64, num_epochs=3, batch_size=32, device='cpu',
                bf16=False, progress=False, out_dir=str(out_dir))
    return TrainConfig(**{**base, **kw})


def results(m: dict) -> dict: return {k: m[k] for k in RESULT_KEYS}


def one_line(e) -> str:
    msg = str(e.value)
    assert '\n' not in msg and 'Traceback' not in msg, msg
    return msg


@pytest.fixture(scope='module')
def kept(tmp_path_factory):
    "One finished run that kept its last.pt (`keep_last`), written at every validation: the reference of this file."
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('MINISWEEP_LAST_PT_SECONDS', '0')
        cfg = cfg_in(tmp_path_factory.mktemp('kept') / 'run', keep_last=True)
        return cfg, train_run(cfg)


def copy_run(ref: TrainConfig, dst: Path) -> TrainConfig:
    "The reference run's folder copied to `dst`, less its metrics.json: a run killed after its last epoch."
    shutil.copytree(ref.out_dir, dst)
    (dst / 'metrics.json').unlink()
    return replace(ref, out_dir=str(dst))


# --- what a finished run keeps --------------------------------------------------------------------------------------

def test_a_finished_run_drops_last_pt_unless_keep_last(tmp_path, kept, monkeypatch):
    """Without `keep_last` a finished run keeps best.pt and not last.pt; the numbers are the same either way. Under a
    write interval longer than the run, last.pt is never written at all: only best.pt, at each improvement."""
    ref_cfg, ref = kept
    assert load_checkpoint(Path(ref_cfg.out_dir) / 'last.pt')['epoch'] == 3
    saved = []
    real_save = train.atomic_save
    monkeypatch.setattr(train, 'atomic_save', lambda obj, path: (saved.append(Path(path).name), real_save(obj, path)))
    monkeypatch.setenv('MINISWEEP_LAST_PT_SECONDS', '3600')
    m = train_run(cfg_in(tmp_path / 'run'))
    assert results(m) == results(ref)
    assert {p.name for p in (tmp_path / 'run').iterdir()} == {'best.pt', 'log.jsonl', 'metrics.json'}
    assert 'last.pt' not in saved and saved.count('best.pt') >= 1
    saved.clear()
    monkeypatch.setenv('MINISWEEP_LAST_PT_SECONDS', '0')          # at every validation but the last
    train_run(cfg_in(tmp_path / 'every'))
    assert saved.count('last.pt') >= 2 and not (tmp_path / 'every' / 'last.pt').exists()   # not at the end: dropped


@pytest.mark.parametrize('value', ['soon', '-1', 'nan'])
def test_a_bad_write_interval_is_one_line(tmp_path, monkeypatch, value):
    monkeypatch.setenv('MINISWEEP_LAST_PT_SECONDS', value)
    with pytest.raises(UserError) as e: train_run(cfg_in(tmp_path / 'run'))
    assert 'MINISWEEP_LAST_PT_SECONDS' in one_line(e) and not (tmp_path / 'run').exists()


RUN = ('import json, sys\nfrom minisweep.train import TrainConfig, train_run\n'
       'train_run(TrainConfig(**json.loads(sys.argv[1])))')

def test_a_run_killed_before_its_first_last_pt_trains_again_to_the_same_end(tmp_path, kept):
    """Killed (SIGKILL) after two validations and before any last.pt (interval 1 hour): the run starts again, with
    the stale log and best.pt of the killed one on disk, and ends exactly where the uninterrupted run does."""
    ref_cfg, ref = kept
    cfg = cfg_in(tmp_path / 'run')
    env = dict(os.environ, MINISWEEP_LAST_PT_SECONDS='3600', PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, '-c', RUN, json.dumps(asdict(cfg))], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and len(read_log(cfg.out_dir)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, 'the run ended before it could be killed'
    finally:
        if proc.poll() is None: os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert len(read_log(cfg.out_dir)) >= 2 and not (tmp_path / 'run' / 'last.pt').exists()
    m = train_run(cfg)
    assert results(m) == results(ref)
    strip = lambda rows: [{k: v for k, v in r.items() if k not in TIMING} for r in rows]
    assert strip(read_log(cfg.out_dir)) == strip(read_log(ref_cfg.out_dir))


# --- damaged or foreign last.pt ---------------------------------------------------------------------------------------

def damage(last: Path, how: str):
    ck = load_checkpoint(last)
    if how == 'another head':          # weights of a 5-class model
        ck['model'] = {**ck['model'], 'fc.weight': torch.zeros(5, 512), 'fc.bias': torch.zeros(5)}
    elif how == 'epoch as text': ck['state'] = {**ck['state'], 'epoch': '3'}
    elif how == 'state not a dict': ck['state'] = [3]
    elif how == 'rng of wrong types': ck['rng'] = {**ck['rng'], 'numpy': 'seeded'}
    elif how == 'optimizer of another model': ck['optimizer'] = {'state': {}, 'param_groups': []}
    atomic_save(ck, last)

@pytest.mark.parametrize('how', ['another head', 'epoch as text', 'state not a dict', 'rng of wrong types',
                                 'optimizer of another model'])
def test_a_last_pt_that_does_not_fit_names_the_file_to_delete(tmp_path, kept, how):
    """One line naming last.pt and saying to delete it (a rerun alone cannot help); the run's files are left as they
    were; and after the deletion the same command finishes the run with the reference's numbers."""
    cfg = copy_run(kept[0], tmp_path / 'run')
    last = tmp_path / 'run' / 'last.pt'
    damage(last, how)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / 'run').iterdir()}
    with pytest.raises(UserError) as e: train_run(cfg)
    msg = one_line(e)
    assert str(last) in msg and 'delete it' in msg and 'rerun' not in msg, msg
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / 'run').iterdir()} == before
    last.unlink()
    assert results(train_run(cfg)) == results(kept[1])


# --- a lost log ----------------------------------------------------------------------------------------------------

def test_a_run_whose_log_was_lost_after_its_last_epoch_finishes(tmp_path, kept):
    "last.pt at the last epoch, no log.jsonl, no metrics.json: the run finishes from last.pt and best.pt, no training."
    cfg = copy_run(kept[0], tmp_path / 'run')
    (tmp_path / 'run' / 'log.jsonl').unlink()
    m = train_run(cfg)
    assert results(m) == results(kept[1]) and m['train_seconds'] == kept[1]['train_seconds']


def test_a_lost_log_and_best_pt_say_what_to_delete(tmp_path, kept):
    """Nor best.pt: the best epoch's model and validation are gone, so the line says to delete last.pt; the same
    command then trains the run from the start to the reference's numbers."""
    cfg = copy_run(kept[0], tmp_path / 'run')
    run = tmp_path / 'run'
    (run / 'log.jsonl').unlink(); (run / 'best.pt').unlink()
    with pytest.raises(UserError) as e: train_run(cfg)
    msg = one_line(e)
    assert f'delete {run / "last.pt"}' in msg, msg
    (run / 'last.pt').unlink()
    assert results(train_run(cfg)) == results(kept[1])


def test_a_log_line_that_is_not_a_validation_is_one_line(tmp_path, kept):
    cfg = copy_run(kept[0], tmp_path / 'run')
    with open(tmp_path / 'run' / 'log.jsonl', 'a') as f: f.write('[1, 2]\n{"epoch": 4}\n')
    with pytest.raises(UserError) as e: train_run(cfg)
    assert 'log.jsonl' in one_line(e) and 'delete' in str(e.value)


# --- links ---------------------------------------------------------------------------------------------------------

def test_a_stale_temp_file_that_is_a_link_is_refused_and_its_target_kept(tmp_path, kept):
    """The cleanup of a killed writer's `.*.tmp` files removes the run folder's own and never goes through a link:
    a `.x.tmp` that links to a file elsewhere is refused in one line, and that file is untouched."""
    cfg = copy_run(kept[0], tmp_path / 'run')
    run = tmp_path / 'run'
    (run / '.last.pt.123.tmp').write_bytes(b'torn')
    elsewhere = tmp_path / 'elsewhere.tmp'
    elsewhere.write_text('not minisweep\'s')
    (run / '.x.tmp').symlink_to(elsewhere)
    with pytest.raises(UserError) as e: train_run(cfg)
    assert 'symbolic link' in one_line(e)
    assert elsewhere.read_text() == 'not minisweep\'s'
    (run / '.x.tmp').unlink()
    train_run(cfg)
    assert not list(run.glob('.*.tmp'))                 # the stale file of the run's own is gone


def test_a_run_folder_that_is_a_link_is_refused(tmp_path):
    target = tmp_path / 'elsewhere'
    target.mkdir(); (target / '.keep.tmp').write_text('theirs')
    (tmp_path / 'run').symlink_to(target)
    with pytest.raises(UserError) as e: train_run(cfg_in(tmp_path / 'run'))
    assert 'symbolic link' in one_line(e)
    assert [p.name for p in target.iterdir()] == ['.keep.tmp']


def test_a_log_that_is_a_link_is_never_written_through(tmp_path, kept):
    "The log is replaced (never appended through the link); the file it pointed to is unchanged."
    cfg = copy_run(kept[0], tmp_path / 'run')
    elsewhere = tmp_path / 'elsewhere.jsonl'
    elsewhere.write_text((tmp_path / 'run' / 'log.jsonl').read_text())
    before = elsewhere.read_bytes()
    (tmp_path / 'run' / 'log.jsonl').unlink(); (tmp_path / 'run' / 'log.jsonl').symlink_to(elsewhere)
    m = train_run(cfg)
    assert elsewhere.read_bytes() == before and not (tmp_path / 'run' / 'log.jsonl').is_symlink()
    assert results(m) == results(kept[1])
