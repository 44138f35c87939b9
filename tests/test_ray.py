"The sweep's Ray executor on a local Ray cluster, started once for the session."
import json
from pathlib import Path

import pytest

ray = pytest.importorskip('ray')
pytestmark = pytest.mark.ray
from minisweep.cli import main
from conftest import SMALL


@pytest.fixture(scope='session')
def ray_cluster():
    "A local cluster: 2 CPUs, 2 logical GPUs (Ray pins CUDA_VISIBLE_DEVICES per task even without real ones)."
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, object_store_memory=80 * 1024 ** 2,
             log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def rows(out):
    r = json.loads((Path(out) / 'results.json').read_text())['runs']
    return sorted((x['model'], x['subset_size'], x['seed'], round(x['top1_error'], 6), round(x['top5_error'], 6)) for x in r)


@pytest.mark.slow           # a whole sweep on a Ray cluster beside the local one: make test-slow
def test_ray_sweep_equals_local(ray_cluster, local_sweep, tmp_path):
    code = main(['sweep', '--models', 'alexnet', 'resnet18', '--subset-sizes', '0.5', '0.25', '--seeds', '0', *SMALL,
                 '--out', str(tmp_path / 'ray'), '--figures', str(tmp_path / 'fig'), '--executor', 'ray'])
    assert code == 0
    assert rows(tmp_path / 'ray') == rows(local_sweep['out'])
    rec = json.loads((tmp_path / 'ray' / 'sweep.json').read_text())['runs'].values()
    # two logical GPUs, one per run: concurrent runs were pinned to different devices
    assert {r['cuda_visible_devices'] for r in rec} == {'0', '1'}


@pytest.mark.slow           # a second Ray sweep; the default run keeps the one that must equal the local sweep
def test_ray_failing_task_is_retried_then_reported(ray_cluster, tmp_path):
    code = main(['sweep', '--models', 'resnet18', '--subset-sizes', '1', '0.05', '--seeds', '0', *SMALL,
                 '--out', str(tmp_path / 's'), '--figures', str(tmp_path / 'fig'), '--executor', 'ray', '--max-retries', '1'])
    assert code == 1
    runs = json.loads((tmp_path / 's' / 'sweep.json').read_text())['runs']
    assert runs['resnet18/subset_1.0000/seed_0']['state'] == 'done'
    bad = runs['resnet18/subset_0.0500/seed_0']
    assert bad['state'] == 'failed' and 'batch size' in bad['error'] and '2 attempts' in bad['error']
    attempts = (tmp_path / 's' / 'resnet18' / 'subset_0.0500' / 'seed_0' / '.attempts').read_text().splitlines()
    assert len(attempts) == 2


def test_remote_cluster_needs_shared_absolute_folder(capsys):
    assert main(['sweep', '--models', 'resnet18', '--subset-sizes', '1', *SMALL, '--out', 'runs/x',
                 '--executor', 'ray', '--ray-address', '10.1.2.3:6379']) == 2
    assert 'relative path' in capsys.readouterr().err
