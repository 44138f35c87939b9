"""The sweep's Ray executor: on a local Ray started in the test process, and on real multi-node clusters started with
the README's own commands (`ray start --head ...`, `ray start --address ...`), each node its own raylet in a process
group of its own, all on this machine. The multi-node tests take minutes: `make test-slow`.

Ray 2.x clusters authenticate with a token: the session writes one and every node and driver reads it through
`RAY_AUTH_MODE=token` and `RAY_AUTH_TOKEN_PATH`, so nothing is written to the user's `~/.ray`. Ray replaces a loopback
`--node-ip-address` by the machine's own address (it wants an address other machines can reach); the traffic stays on
this machine all the same."""
import json, os, shutil, signal, socket, subprocess, tempfile, time
from pathlib import Path

import pytest

ray = pytest.importorskip('ray')
psutil = pytest.importorskip('psutil')
pytestmark = pytest.mark.ray
from minisweep.cli import main
from conftest import MINISWEEP, ROOT, SMALL, VENV_BIN

MB = 1024 ** 2
GRID = ['--models', 'resnet18', '--subset-sizes', '0.5', '0.25', '--seeds', '0', '--num-epochs', '3',
        '--batch-size', '32', '--image-size', '64', '--dataset', '', '--device', 'cpu', '--figures', '']


@pytest.fixture(scope='session')
def ray_auth(tmp_path_factory):
    "The cluster token of this session, in a file; the environment that makes Ray use it (and never ~/.ray)."
    token = tmp_path_factory.mktemp('ray-auth') / 'token'
    token.write_text(os.urandom(32).hex())
    env = dict(RAY_AUTH_MODE='token', RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED='0')
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items(): mp.setenv(k, v)
        yield env


@pytest.fixture(scope='session')
def ray_cluster(ray_auth):
    "A local cluster: 2 CPUs, 2 logical GPUs (Ray pins CUDA_VISIBLE_DEVICES per task even without real ones)."
    # Ray read RAY_AUTH_MODE when it was imported, before `ray_auth` set it: have this process read it again (what
    # Ray does itself when it turns token authentication on), or its own cluster would refuse it
    from ray._raylet import Config
    Config.initialize('')
    ray.init(num_cpus=2, num_gpus=2, include_dashboard=False, object_store_memory=80 * MB,
             log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def rows(out):
    r = json.loads((Path(out) / 'results.json').read_text())['runs']
    return sorted((x['model'], x['subset_size'], x['seed'], round(x['top1_error'], 6), round(x['top5_error'], 6))
                  for x in r)


def numbers(out):
    "Every number of results.json but the training time: what a run on another node must reproduce exactly."
    r = json.loads((Path(out) / 'results.json').read_text())['runs']
    return sorted(sorted((k, v) for k, v in x.items() if k != 'train_seconds') for x in r)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def sub_env(ray_auth, **extra) -> dict:
    "The environment of a node or a sweep: offline, the session's cache and token, this checkout's minisweep first."
    env = {**os.environ, **ray_auth, **extra}
    env['PATH'] = os.pathsep.join([str(VENV_BIN), env.get('PATH', '')])
    env.setdefault('PYTHONPATH', str(ROOT))
    return env


def cli(*args, env, cwd, timeout=900):
    return subprocess.run([MINISWEEP, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


def stderr_lines(p) -> list:
    return [l for l in p.stderr.splitlines() if l.strip()]


def alive(pid: int, started: float) -> bool:
    "Whether the process `(pid, started)` still runs (not gone, not a zombie, not a new process with its pid)."
    try:
        p = psutil.Process(pid)
        return p.create_time() == started and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess: return False


class RayCluster:
    """Nodes started as the README says, each `ray start ... --block` in a session of its own, so that a node is one
    process group: killing it is a node lost. `shutdown` kills every process each node ever had."""

    def __init__(self, ray_auth, root: Path):
        self.root, self.port = root, free_port()
        self.address = f'127.0.0.1:{self.port}'
        # Ray's unix sockets live in its temp dir: keep its path short (a socket path holds at most 107 bytes)
        self.temp = tempfile.mkdtemp(prefix='ray-', dir='/tmp')
        self.env, self.nodes = sub_env(ray_auth), []

    def start(self, *args, name, env=None, timeout=120):
        log = self.root / f'{name}.log'
        with open(log, 'w') as f:
            p = subprocess.Popen(['ray', 'start', *map(str, args), '--disable-usage-stats', '--block'], stdout=f,
                                 stderr=subprocess.STDOUT, env=env or self.env, cwd=self.root, start_new_session=True)
        p.log, p.name, p.seen = log, name, set()
        self.nodes.append(p)
        t_end = time.monotonic() + timeout
        while 'Ray runtime started' not in log.read_text():
            assert p.poll() is None and time.monotonic() < t_end, f'{name} did not start:\n{log.read_text()[-3000:]}'
            time.sleep(0.5)
        return p

    def head(self):
        # the README's head command, with the test's own ports (another cluster may run on this machine)
        return self.start('--head', '--node-ip-address', '127.0.0.1', '--port', self.port, '--num-cpus', 1,
                          '--num-gpus', 0, '--object-store-memory', 80 * MB, '--include-dashboard', 'false',
                          '--dashboard-port', free_port(), '--ray-client-server-port', free_port(),
                          '--temp-dir', self.temp, name='head')

    def worker(self, name='worker', env=None):
        # the README's worker command
        return self.start('--address', self.address, '--node-ip-address', '127.0.0.1', '--num-cpus', 1, '--num-gpus', 0,
                          '--object-store-memory', 80 * MB, name=name, env=env)

    def processes(self, node) -> set:
        "Every process below the node's `ray start` (the papermill kernels sit in sessions of their own)."
        try: node.seen |= {(c.pid, c.create_time()) for c in psutil.Process(node.pid).children(recursive=True)}
        except psutil.NoSuchProcess: pass
        return node.seen

    def kill(self, node, grace: float = 30):
        "The node is lost: SIGKILL its process group and every process it started; wait until none is left."
        procs = self.processes(node)
        try: os.killpg(node.pid, signal.SIGKILL)
        except ProcessLookupError: pass
        for pid, t in procs:
            try:
                p = psutil.Process(pid)
                if p.create_time() == t: p.kill()
            except psutil.NoSuchProcess: pass
        node.wait(timeout=60)
        t_end = time.monotonic() + grace
        while left := [pid for pid, t in procs if alive(pid, t)]:
            assert time.monotonic() < t_end, f'processes {left} of {node.name} outlived it'
            time.sleep(0.2)

    def running_run(self, node):
        "The run folder of the papermill job now running on `node`, or None."
        for pid, _ in self.processes(node):
            try: cmd = psutil.Process(pid).cmdline()
            except psutil.NoSuchProcess: continue
            if 'papermill' in cmd:
                return next((Path(a).parent for a in cmd if a.endswith('/train.ipynb')), None)
        return None

    def shutdown(self):
        for node in reversed(self.nodes): self.kill(node)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture
def ray_cli(ray_auth, tmp_path):
    "A factory of clusters started with `ray start`; every one is shut down afterwards, pass or fail."
    made = []
    def make():
        c = RayCluster(ray_auth, tmp_path); made.append(c); return c
    yield make
    for c in made: c.shutdown()


@pytest.fixture(scope='module')
def grid_reference(tmp_path_factory, session_env, ray_auth):
    "GRID swept by the local executor, straight through: what a Ray sweep that lost a node must end with."
    root = tmp_path_factory.mktemp('grid-local')
    p = cli('sweep', *GRID, '--out', root / 'sweep', env=sub_env(ray_auth), cwd=root)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    return root / 'sweep'


# --- a local Ray, in this process (slow: whole sweeps) -----------------------------------------------------------

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
                 '--out', str(tmp_path / 's'), '--figures', str(tmp_path / 'fig'), '--executor', 'ray',
                 '--max-retries', '1'])
    assert code == 1
    runs = json.loads((tmp_path / 's' / 'sweep.json').read_text())['runs']
    assert runs['resnet18/subset_1.0000/seed_0']['state'] == 'done'
    bad = runs['resnet18/subset_0.0500/seed_0']
    assert bad['state'] == 'failed' and 'batch size' in bad['error'] and '2 attempts' in bad['error']
    attempts = (tmp_path / 's' / 'resnet18' / 'subset_0.0500' / 'seed_0' / '.attempts').read_text().splitlines()
    assert len(attempts) == 2


# --- the wrong cluster, in one line (fast) -----------------------------------------------------------------------

def test_remote_cluster_needs_shared_absolute_folder(capsys):
    assert main(['sweep', '--models', 'resnet18', '--subset-sizes', '1', *SMALL, '--out', 'runs/x',
                 '--executor', 'ray', '--ray-address', '10.1.2.3:6379']) == 2
    assert 'relative path' in capsys.readouterr().err


def test_unreachable_address_is_one_line(ray_auth, tmp_path):
    p = cli('sweep', '--models', 'resnet18', '--subset-sizes', '1', *SMALL, '--out', tmp_path / 's',
            '--executor', 'ray', '--ray-address', f'127.0.0.1:{free_port()}',
            env=sub_env(ray_auth), cwd=tmp_path, timeout=120)
    assert p.returncode == 2, p.stderr[-2000:]
    assert len(stderr_lines(p)) == 1 and 'cannot reach a Ray cluster at 127.0.0.1' in p.stderr


def test_no_gpu_for_gpus_per_run_is_one_line(ray_auth, tmp_path):
    "A single-node Ray that this sweep starts itself (no address), on a machine with no GPU to lend."
    p = cli('sweep', '--models', 'resnet18', '--subset-sizes', '1', *SMALL, '--out', tmp_path / 's',
            '--executor', 'ray', '--gpus-per-run', '1',
            env=sub_env(ray_auth, CUDA_VISIBLE_DEVICES=''), cwd=tmp_path, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    assert len(stderr_lines(p)) == 1 and 'can hold a run of 1 CPU + 1 GPU' in p.stderr and 'GPU' in p.stderr


# --- two nodes, started with the README's commands (slow) --------------------------------------------------------

@pytest.mark.slow
def test_two_node_cluster_sweep_equals_local(ray_cli, local_sweep, ray_auth, tmp_path):
    c = ray_cli(); c.head(); c.worker()
    env = sub_env(ray_auth)
    # a cluster of the wrong shape first: no node has a GPU
    p = cli(*local_sweep['args'][:-2], '--out', tmp_path / 'nogpu', '--executor', 'ray', '--ray-address', c.address,
            '--gpus-per-run', '1', env=env, cwd=tmp_path, timeout=300)
    assert p.returncode == 2 and len(stderr_lines(p)) == 1, p.stderr[-2000:]
    assert 'its nodes: 1 CPU + 0 GPU, 1 CPU + 0 GPU' in p.stderr
    # a driver without the cluster's token is refused by the cluster (after Ray's 20 s of retries): one line too
    wrong = tmp_path / 'wrong-token'; wrong.write_text(os.urandom(32).hex())
    p = cli(*local_sweep['args'][:-2], '--out', tmp_path / 'token', '--executor', 'ray', '--ray-address', c.address,
            env=sub_env(ray_auth, RAY_AUTH_TOKEN_PATH=str(wrong)), cwd=tmp_path, timeout=300)
    assert p.returncode == 2 and len(stderr_lines(p)) == 1, p.stderr[-2000:]
    assert 'cannot join the Ray cluster' in p.stderr and 'RAY_AUTH_MODE=token' in p.stderr
    # the README's sweep command: both models, the local sweep's settings, on two nodes
    p = cli(*local_sweep['args'][:-2], '--out', tmp_path / 'ray', '--executor', 'ray', '--ray-address', c.address,
            env=env, cwd=tmp_path, timeout=900)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert numbers(tmp_path / 'ray') == numbers(local_sweep['out'])
    rec = json.loads((tmp_path / 'ray' / 'sweep.json').read_text())['runs'].values()
    assert len({r['ray_node'] for r in rec}) == 2                 # both nodes trained
    assert not list((tmp_path / 'ray').glob('.ray-probe-*'))     # the probe's token file is gone


def sweep_losing_worker(c: RayCluster, worker, out: Path, env: dict, *extra) -> tuple:
    """Run GRID on the cluster (the README's sweep command) and kill the worker node once its run has saved its first
    epoch and not finished; returns (the sweep's exit status, its output, the run folder, the run's first log line)."""
    logfile = out.parent / f'{out.name}.log'
    with open(logfile, 'w') as log:
        p = subprocess.Popen([MINISWEEP, 'sweep', *GRID, '--out', out, '--executor', 'ray', '--ray-address', c.address,
                              *extra],
                             stdout=log, stderr=subprocess.STDOUT, env=env, cwd=out.parent)
    try:
        t_end, run = time.monotonic() + 600, None
        while p.poll() is None and time.monotonic() < t_end:     # the worker's run, once its first epoch is saved
            run = run or c.running_run(worker)
            if run and (run / 'last.pt').exists() and not (run / 'metrics.json').exists(): break
            time.sleep(0.05)
        assert p.poll() is None and run, f'the sweep ended before the kill point:\n{logfile.read_text()[-3000:]}'
        epoch1 = (run / 'log.jsonl').read_text().splitlines()[0]
        c.kill(worker)                                           # the node is lost while its run trains
        p.wait(timeout=900)
    finally:
        if p.poll() is None: p.kill(); p.wait()
    return p.returncode, logfile.read_text(), run, epoch1


def epochs(run: Path) -> list:
    return [json.loads(r)['epoch'] for r in (run / 'log.jsonl').read_text().splitlines()]


@pytest.mark.slow
def test_node_lost_mid_run_is_retried_and_resumes(ray_cli, grid_reference, ray_auth, tmp_path):
    c = ray_cli(); c.head(); worker = c.worker()
    code, text, run, epoch1 = sweep_losing_worker(c, worker, tmp_path / 'sweep', sub_env(ray_auth))
    assert code == 0, text[-3000:]
    assert numbers(tmp_path / 'sweep') == numbers(grid_reference)   # the same results as without the loss
    attempts = (run / '.attempts').read_text().splitlines()
    assert len(attempts) == 2 and len({a.split()[2] for a in attempts}) == 2     # retried on the other node
    assert epochs(run) == [1, 2, 3] and (run / 'log.jsonl').read_text().splitlines()[0] == epoch1   # resumed
    assert 'Traceback' not in text


@pytest.mark.slow
def test_node_lost_without_retries_is_reported_then_resumed(ray_cli, grid_reference, ray_auth, tmp_path):
    c = ray_cli(); c.head(); worker = c.worker()
    out, env = tmp_path / 'sweep', sub_env(ray_auth)
    code, text, run, epoch1 = sweep_losing_worker(c, worker, out, env, '--max-retries', '0')
    assert code == 1, text[-3000:]
    key = str(run.relative_to(out))
    table = [l for l in text.splitlines() if l.startswith(f'| {key} |')]
    assert len(table) == 1, text[-3000:]
    assert 'died' in table[0] and 'after 1 attempts' in table[0] and 'resume' in table[0], table[0]
    assert 'Traceback' not in text
    # the same command again, on the node that is left: only the lost run trains, from its last.pt
    p = cli('sweep', *GRID, '--out', out, '--executor', 'ray', '--ray-address', c.address, env=env, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert numbers(out) == numbers(grid_reference)
    assert epochs(run) == [1, 2, 3] and (run / 'log.jsonl').read_text().splitlines()[0] == epoch1


@pytest.mark.slow
def test_node_with_other_minisweep_is_one_line(ray_cli, ray_auth, tmp_path):
    other = tmp_path / 'other'                                  # this minisweep with another version number
    shutil.copytree(ROOT / 'minisweep', other / 'minisweep', ignore=shutil.ignore_patterns('__pycache__'))
    (other / 'minisweep' / '__init__.py').write_text('__version__ = "0.0.1"\n')
    shutil.copytree(ROOT / 'nbs', other / 'nbs')                # its training notebook, where a checkout keeps it
    c = ray_cli(); c.head(); c.worker(env=sub_env(ray_auth, PYTHONPATH=str(other)))
    p = cli('sweep', *GRID, '--out', tmp_path / 's', '--executor', 'ray', '--ray-address', c.address,
            env=sub_env(ray_auth), cwd=tmp_path, timeout=300)
    assert p.returncode == 2, p.stdout[-2000:] + p.stderr[-2000:]
    assert len(stderr_lines(p)) == 1, p.stderr
    assert 'runs minisweep 0.0.1' in p.stderr and 'install the same minisweep on every node' in p.stderr
    assert not (tmp_path / 's' / 'resnet18').exists()            # refused before any run started
