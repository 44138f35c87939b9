"The device check's machinery on the CPU: a loop freed, a job's whole tree stopped, a partial report, the wheels."
import gc, json, os, signal, subprocess, sys, time, weakref, zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'bench'))


def test_deleted_loop_is_freed_without_gc():
    "A MinisweepLoop holds no reference cycle: deleting it frees its model at once (on a GPU: its memory)."
    import torch
    from loops import MinisweepLoop
    from minisweep.data import sample_dataset
    from minisweep.train import TrainConfig
    cfg = TrainConfig(model='resnet18', subset_size=1.0, dataset=sample_dataset(), image_size=64, batch_size=16,
                      device='cpu', progress=False).check()
    loop = MinisweepLoop(cfg, torch.device('cpu'))
    loop.train(1); loop.batches(1)
    assert loop.epoch == 1
    model, opt = weakref.ref(loop.model), weakref.ref(loop.opt)
    gc.disable()
    try:
        del loop
        assert model() is None and opt() is None, 'the loop outlived `del`: a reference cycle holds it'
    finally: gc.enable()


def test_timed_out_job_takes_its_whole_tree_down(tmp_path):
    "run_monitored's timeout stops the job's process group and a grandchild that started a session of its own."
    from jobs import run_monitored
    pidfile = tmp_path / 'pid'
    script = f'setsid sleep 300 & echo $! > {pidfile}; sleep 300'
    r = run_monitored(['bash', '-c', script], dict(os.environ), tmp_path / 'job.log', timeout=2)
    assert r['rc'] == 'timeout' and r['killed'] == 'timeout'
    pid = int(pidfile.read_text())
    for _ in range(50):
        try: os.kill(pid, 0)
        except ProcessLookupError: break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL); pytest.fail('the setsid grandchild survived the timeout')


def test_bad_data_still_writes_a_report(tmp_path):
    "A dataset that cannot be opened fails its section with the traceback; sections needing it are skipped; rc 1."
    bad = tmp_path / 'bad' / 'data'; bad.mkdir(parents=True)
    for split in ('train', 'validation', 'test'): (bad / f'{split}-00000-of-00001.parquet').write_text('not parquet')
    out = tmp_path / 'report'
    p = subprocess.run([sys.executable, str(ROOT / 'bench/device_check.py'), '--cpu', '--data', str(bad.parent),
                        '--out', str(out), '--work', str(tmp_path / 'work'),
                        '--sections', 'imports', 'data', 'batches'],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads((out / 'results.json').read_text())
    S = res['sections']
    assert S['imports']['status'] == 'ok' and S['data']['status'] == 'failed', S
    assert 'not a readable parquet file' in S['data']['error'] and 'Traceback' in S['data']['where']
    assert S['batches'] == dict(status='skipped', why='needs data')
    assert 'data: traceback' in (out / 'report.md').read_text()


def fake_wheel(folder: Path, name: str, version: str, requires=()) -> Path:
    w = folder / f'{name}-{version}-py3-none-any.whl'
    meta = f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n'
    meta += ''.join(f'Requires-Dist: {r}\n' for r in requires)
    with zipfile.ZipFile(w, 'w') as z: z.writestr(f'{name}-{version}.dist-info/METADATA', meta + '\nbody\n')
    return w


def test_check_wheels(tmp_path):
    "Two versions of a package, an unmet requirement and a too-old image package are each found; a good set passes."
    from check_wheels import check
    image = {'numpy': None, 'tqdm': __import__('packaging.version').version.Version('4.0')}
    good = tmp_path / 'good'; good.mkdir()
    fake_wheel(good, 'alpha', '1.0', ['beta>=2', 'numpy>=1', 'tqdm>=3', 'colour; sys_platform == "win32"',
                                      'x; extra == "t"'])
    fake_wheel(good, 'beta', '2.1')
    problems, notes = check(good, '3.12', image, 'the image')
    assert problems == [] and notes == ['unverified (in the image, version not listed): numpy>=1']
    bad = tmp_path / 'bad'; bad.mkdir()
    fake_wheel(bad, 'alpha', '1.0', ['beta>=2', 'gamma', 'tqdm>=4.5'])
    fake_wheel(bad, 'beta', '1.0'); fake_wheel(bad, 'beta', '2.0')
    problems, _ = check(bad, '3.12', image, 'the image')
    assert any('two versions of beta' in q for q in problems), problems
    assert any('needs gamma' in q for q in problems) and any('has tqdm 4.0' in q for q in problems), problems
