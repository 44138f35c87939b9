"The GPU path, as far as a CPU can check it: static-shape compilation, and the device check's CPU mode end to end."
import json, os, subprocess, sys
from pathlib import Path

import pytest
import torch
from torch import nn

from minisweep.train import compile_model

ROOT = Path(__file__).resolve().parents[1]


def test_compiled_model_has_two_static_graphs():
    "Training batches, then padded evaluation batches of another size: two graphs, neither with a symbolic shape."
    graphs = []
    def backend(gm, example_inputs):
        graphs.append([x for x in example_inputs if not isinstance(x, torch.Tensor)]
                      + [d for x in example_inputs if isinstance(x, torch.Tensor) for d in x.shape if not isinstance(d, int)])
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
    assert S['sweep']['rc'] == 0 and S['speed']['resnet18']['minisweep_ips'] > 0 and S['compile']['resnet18']['on_ips'] > 0
    assert S['datapath']['host (CPU)']['ips'] > 0
    if list((ROOT / '.whl' / ('py%d.%d' % sys.version_info[:2])).glob('*.whl')):
        assert S['imports']['papermill_from'].startswith(str(tmp_path)), S['imports']   # the wheels, not the venv
    files = list(out.iterdir())
    assert len(files) <= 8 and sum(f.stat().st_size for f in files) < 1 << 20, files
