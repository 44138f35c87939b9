"""The GPU path, as far as a CPU can check it: static-shape compilation, what a job places on the device, and the
device check's CPU mode end to end."""
import inspect, json, os, subprocess, sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from minisweep.data import Batches, decoded_split, load_splits, sample_dataset, stored_size, subset_indices
from minisweep.train import compile_model

ROOT = Path(__file__).resolve().parents[1]


def test_compiled_model_has_two_static_graphs():
    "Training batches, then padded evaluation batches of another size: two graphs, neither with a symbolic shape."
    graphs = []
    def backend(gm, example_inputs):
        tensors = [x for x in example_inputs if isinstance(x, torch.Tensor)]
        graphs.append([x for x in example_inputs if not isinstance(x, torch.Tensor)]
                      + [d for x in tensors for d in x.shape if not isinstance(d, int)])
        return gm.forward
    torch._dynamo.reset()
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    cm = compile_model(model, backend=backend)
    model.train()
    for _ in range(3): cm(torch.randn(8, 3, 8, 8)).sum().backward()
    model.eval()
    with torch.no_grad():
        for _ in range(3): cm(torch.randn(16, 3, 8, 8))
    assert len(graphs) == 2, graphs
    assert graphs == [[], []], f'symbolic sizes in the graphs: {graphs}'


places_rows = pytest.mark.skipif('rows' not in inspect.signature(Batches).parameters,
                                 reason='Batches does not take `rows` yet: a job still uploads the whole train split')


@places_rows
def test_job_places_only_its_subset_and_validation(monkeypatch):
    """A 1/64 job on a device (`meta`: shapes without memory, so every byte placed is counted, none copied) holds there
    its subset's rows and labels and the validation split, never the whole train split."""
    import minisweep.train as mt
    monkeypatch.setattr(mt, 'device_free', lambda device: 80 << 30)
    cfg = mt.TrainConfig(model='resnet18', subset_size=1 / 64, dataset=sample_dataset(), image_size=64, batch_size=8,
                         channels_last='true', progress=False).check()
    data = mt.prepare_data(cfg, torch.device('meta'))
    train, val = data['train'], data['val']
    assert train.images.device.type == 'meta' and val.images.device.type == 'meta'
    row = int(np.prod(train.cache.images.shape[1:]))
    assert train.images.nbytes == data['n_train'] * row and train.labels.nbytes == data['n_train'] * 8
    assert val.images.nbytes == val.cache.images.nbytes
    assert train.images.nbytes + val.images.nbytes < train.cache.images.nbytes   # 10 of 400 rows, plus 100 rows


def batches_of(b: Batches, epochs=(1, 2)) -> list:
    out = []
    for e in epochs:
        b.set_epoch(0, e)
        out += [(x.clone(), y.clone(), n) for x, y, n in b]
    return out


@places_rows
@pytest.mark.parametrize('channels_last', [False, True])
def test_placed_rows_give_the_same_batches(channels_last):
    """Batches over the subset's rows alone are the batches over the whole cache, bit for bit; a row not placed is
    refused."""
    from minisweep.data import device_rows
    cache = decoded_split(load_splits(sample_dataset(), ('train',))['train'], stored_size(64), progress=False)
    idx = subset_indices(cache.labels, 0.25, 0)
    whole = Batches(cache, 56, 16, idx, train=True, channels_last=channels_last)
    placed = Batches(cache, 56, 16, idx, train=True, channels_last=channels_last,
                     images=device_rows(cache.images, idx, 'cpu'), rows=idx)
    assert len(placed.images) == len(idx) < len(cache)
    for (x1, y1, n1), (x2, y2, n2) in zip(batches_of(whole), batches_of(placed), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2) and n1 == n2
    outside = np.setdiff1d(np.arange(len(cache)), idx)[:4]
    with pytest.raises(ValueError):
        list(Batches(cache, 56, 4, outside, images=placed.images, rows=idx, channels_last=channels_last))


@pytest.mark.slow
def test_device_check_cpu_mode(tmp_path):
    """bench/device_check.sh --cpu: every section runs, offline, and passes; the report comes back small (1.5 min here,
    quiet). Where `make device-check-ready` made .whl/pyX.Y, the packages come from those wheels, installed offline."""
    out = tmp_path / 'report'
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable, TMPDIR=str(tmp_path))
    p = subprocess.run(['bash', str(ROOT / 'bench/device_check.sh'), '--cpu'], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    res = json.loads((out / 'results.json').read_text())
    S = res['sections']
    assert list(S) == ['imports', 'data', 'batches', 'gather', 'syncs', 'rng', 'ceilings', 'speed', 'datapath', 'sweep',
                       'compile'] and res['finished']
    assert all(s['status'] == 'ok' for s in S.values()), S
    assert S['sweep']['rc'] == 0 and S['speed']['resnet18']['minisweep_ips'] > 0
    assert S['compile']['resnet18']['on_ips'] > 0
    assert S['datapath']['host (CPU)']['ips'] > 0
    if list((ROOT / '.whl' / ('py%d.%d' % sys.version_info[:2])).glob('*.whl')):
        assert S['imports']['papermill_from'].startswith(str(tmp_path)), S['imports']   # the wheels, not the venv
    files = list(out.iterdir())
    assert len(files) <= 8 and sum(f.stat().st_size for f in files) < 1 << 20, files
