"""The memory format `auto` picks on a CPU: measured once and cached, reused by later runs without measuring, recorded
in the run's config (metrics.json and the checkpoints), and kept by a resumed run even when the cache now says
otherwise."""
import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import minisweep.train as train
from minisweep.core import UserError
from minisweep.train import FORMAT_CACHE, load_checkpoint, read_log, train_run
from test_train import results, same_weights, sample_cfg, spawn_run, untimed

OTHER = {'true': 'false', 'false': 'true'}


def set_choice(cache: Path, choice: str):
    "Make every record of the format cache say `choice`, as another measurement might have."
    data = json.loads(cache.read_text())
    for r in data['choices'].values(): r['channels_last'] = choice
    cache.write_text(json.dumps(data))


def test_format_cached_reused_recorded_and_kept_on_resume(tmp_path, monkeypatch, venv_path_env):
    cache_dir = tmp_path / 'cache'
    monkeypatch.setenv('MINISWEEP_CACHE', str(cache_dir))       # a cache of this test's own: the first run measures
    calls = []
    real = train.time_formats
    monkeypatch.setattr(train, 'time_formats', lambda *a, **kw: calls.append(a) or real(*a, **kw))

    # the first run measures, caches the choice and records it in its config: metrics.json and both checkpoints
    a = train_run(sample_cfg(tmp_path / 'a', num_epochs=1))
    cache = cache_dir / FORMAT_CACHE
    (record,) = json.loads(cache.read_text())['choices'].values()
    chosen = record['channels_last']
    assert len(calls) == 1 and chosen in ('true', 'false')
    assert set(record['images_per_second']) == {'contiguous', 'channels_last'}
    saved = json.loads((tmp_path / 'a' / 'metrics.json').read_text())
    assert a['config']['channels_last'] == saved['config']['channels_last'] == chosen
    assert {load_checkpoint(tmp_path / 'a' / f)['config']['channels_last'] for f in ('last.pt', 'best.pt')} == {chosen}

    # the other format, forced: the reference of the resumed run below
    other = OTHER[chosen]
    b = train_run(sample_cfg(tmp_path / 'b', num_epochs=3, channels_last=other))
    assert b['config']['channels_last'] == other and len(calls) == 1

    # a later run (another process) reads the cache: it trains in the format the cache names, measuring nothing
    set_choice(cache, other)
    stamp = cache.stat().st_mtime_ns
    env = dict(venv_path_env, MINISWEEP_CACHE=str(cache_dir))
    cfg = sample_cfg(tmp_path / 'c', num_epochs=3)
    spawn_run(cfg, lambda: len(read_log(cfg.out_dir)) >= 2, env)
    assert cache.stat().st_mtime_ns == stamp
    assert load_checkpoint(tmp_path / 'c' / 'last.pt')['config']['channels_last'] == other

    # killed, then resumed while the cache says the first format again: the run keeps its own, and measures nothing
    set_choice(cache, chosen)
    c = train_run(cfg)
    assert c['config']['channels_last'] == other and len(calls) == 1
    assert results(c) == results(b) and untimed(read_log(cfg.out_dir)) == untimed(read_log(tmp_path / 'b'))
    assert same_weights(tmp_path / 'c' / 'last.pt', tmp_path / 'b' / 'last.pt')

    # asking for the other format by name is asking for another run
    with pytest.raises(UserError, match="other settings .*channels_last"): train_run(replace(cfg, channels_last=chosen))
    assert train_run(replace(cfg, progress=True)) == c         # auto: the complete run, as it is


def test_measuring_leaves_the_random_streams_alone(tmp_path, monkeypatch):
    "A run measured or read from the cache draws the same random numbers: the measurement runs in a forked RNG."
    monkeypatch.setenv('MINISWEEP_CACHE', str(tmp_path))
    torch.manual_seed(3)
    train.measured_format(sample_cfg(tmp_path / 'x'), torch.device('cpu'))
    after = torch.rand(3)
    torch.manual_seed(3)
    assert torch.equal(torch.rand(3), after)
