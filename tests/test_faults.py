"""The fault campaign: kill the sweep, damage its files, fill the disk, feed it bad data and bad arguments, and check
that nothing finished is lost and that every bad input gets one clear line (FAULTS.md is the table of what we tried).

Every case runs the installed `minisweep` console script on the sample shipped with minisweep (`--dataset ''`), on the
CPU and in float32, where a run is a pure function of its settings: a sweep that was killed and resumed must give the
same test errors as one that ran straight through (compared rounded to 6 digits).

Grid of the kill cases: ResNet18 on subsets 0.25 and 0.125 (100 and 50 images: 3 and 1 steps an epoch), 2 epochs, so
that there is a finished run beside an unfinished one, and a `last.pt` already on disk when the next one is written.
`--figures ''` leaves out the curves notebook (it is not what these cases test, and it costs a kernel start).

A kill is `os.killpg(SIGKILL)` of a sweep started with `start_new_session=True` (what a user's `kill -9 -PGID` of the
job
does). The training kernel that papermill starts is in a session of its own, so it is not in that group: it notices
its parent is gone (ipykernel's parent poller, once a second) and exits by itself; `kill_job` waits for that, and
fails the case when a kernel keeps running. The checkpoint case kills the kernel too: it is the process that writes.
"""
import hashlib, json, logging, os, shutil, signal, subprocess, sys, time, warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import MINISWEEP, VENV_BIN
from minisweep.data import sample_dataset, stored_size
from minisweep.train import load_checkpoint

R1, R2 = 'resnet18/subset_0.2500/seed_0', 'resnet18/subset_0.1250/seed_0'   # the grid's runs, in the order they run
# --keep-last: the tests below compare every checkpoint of a finished run, last.pt too
GRID = ['--models', 'resnet18', '--subset-sizes', '0.25', '0.125', '--seeds', '0', '--num-epochs', '2',
        '--batch-size', '32', '--image-size', '64', '--dataset', '', '--device', 'cpu', '--no-bf16', '--figures', '',
        '--keep-last']
ONE_RUN = ['--models', 'resnet18', '--subset-sizes', '0.125', '--seeds', '0', '--num-epochs', '1', '--batch-size', '32',
           '--image-size', '64', '--dataset', '', '--device', 'cpu', '--no-bf16', '--figures', '']
STORED = stored_size(64)          # 73: side of the decoded cache of 64 px crops
ORPHAN_GRACE = 15                 # seconds a training kernel may outlive a killed sweep (its parent poller: 1 s)


# --- helpers ---------------------------------------------------------------------------------------------------------

def sub_env(**extra) -> dict:
    "os.environ (offline, the session's cache) with the venv first on PATH, for the sweep and its papermill kernels."
    env = dict(os.environ, **extra)
    env['PATH'] = os.pathsep.join([str(VENV_BIN), env.get('PATH', '')])
    return env


_JOBS = []    # every job `start` started (each with `.seen`, the processes below it): `reap_jobs` ends what is left


def start(args, cwd: Path, name: str = 'job', **env) -> subprocess.Popen:
    "Start `minisweep *args` in a session (and process group) of its own; its output goes to cwd/<name>.out/.err."
    out, err = open(cwd / f'{name}.out', 'w'), open(cwd / f'{name}.err', 'w')
    p = subprocess.Popen([MINISWEEP, *map(str, args)], cwd=cwd, stdout=out, stderr=err, env=sub_env(**env),
                         start_new_session=True)
    out.close(); err.close()
    p.logs = (cwd / f'{name}.out', cwd / f'{name}.err')
    p.seen = {}
    _JOBS.append(p)
    return p


def output(p: subprocess.Popen) -> str:
    return ''.join(raw_text(f)[-3000:] for f in p.logs)


def raw_text(path: Path) -> str:
    "A file's text with its carriage returns kept (text mode would turn tqdm's \\r redraws into lines)."
    return Path(path).read_bytes().decode('utf-8', 'replace')


def run_cli(*args, cwd, timeout=900, **env) -> subprocess.CompletedProcess:
    "Run `minisweep *args` to the end; stdout and stderr as they were written (carriage returns kept)."
    p = subprocess.run([MINISWEEP, *map(str, args)], cwd=cwd, capture_output=True, env=sub_env(**env), timeout=timeout)
    p.stdout, p.stderr = p.stdout.decode('utf-8', 'replace'), p.stderr.decode('utf-8', 'replace')
    return p


def started_at(pid: int):
    """The start time of process `pid` (clock ticks since boot), None when it is gone or a zombie: (pid, start) names a
    process."""
    try: fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    except (OSError, IndexError): return None
    return None if fields[0] == 'Z' else fields[19]


def descendants(pid: int) -> dict:
    "Every live process below `pid` (children of all its threads, recursively): {pid: start time}."
    out, todo = {}, [pid]
    while todo:
        try: tasks = list(Path(f'/proc/{todo.pop()}/task').iterdir())
        except OSError: continue            # it ended while we looked
        for task in tasks:
            try: kids = [int(k) for k in (task / 'children').read_text().split()]
            except (OSError, ValueError): continue
            for k in kids:
                st = started_at(k)
                if st is not None: out[k] = st; todo.append(k)
    return out


def alive(pid: int, start) -> bool:
    "Whether the process (pid, start) still runs: a pid the kernel gave to another process since does not count."
    return start is not None and started_at(pid) == start


def kill_exact(procs: dict):
    "SIGKILL each process of {pid: start time} that is still that same process (all of them started by this module)."
    for pid, st in procs.items():
        if alive(pid, st):
            try: os.kill(pid, signal.SIGKILL)
            except ProcessLookupError: pass


def reap_jobs():
    "SIGKILL whatever the jobs this module started left running: their groups and the kernels below them."
    while _JOBS:
        p = _JOBS.pop()
        procs = {**p.seen, **(descendants(p.pid) if p.poll() is None else {})}
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL); p.wait(timeout=60)
        kill_exact(procs)


@pytest.fixture(autouse=True)
def _reap():
    yield
    reap_jobs()


def kill_job(p: subprocess.Popen, kernels: bool = False, known: dict | None = None) -> float:
    """SIGKILL the job's process group (and, with `kernels`, every process below it: the papermill kernels live in
    sessions of their own). Returns how long its processes outlived the kill; fails when one is still running after
    ORPHAN_GRACE seconds (and then kills it: it is ours)."""
    procs = {**(known or {}), **descendants(p.pid)}
    p.seen.update(procs)
    if kernels: kill_exact(procs)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=60)
    t0 = time.monotonic()
    while any(alive(k, st) for k, st in procs.items()):
        if time.monotonic() - t0 > ORPHAN_GRACE:
            left = [k for k, st in procs.items() if alive(k, st)]
            kill_exact(procs)
            pytest.fail(f'processes {left} of the killed sweep were still running {ORPHAN_GRACE} s after the kill')
        time.sleep(0.02)
    linger = time.monotonic() - t0
    print(f'[kill_job] {len(procs)} process(es) below the sweep; the last one ended {linger:.2f} s after the kill')
    return linger


def poll(cond, p: subprocess.Popen, timeout: float = 600, every: float = 0.01):
    "cond()'s first true value, or None when the job ended (or `timeout` passed) first."
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        r = cond()
        if r: return r
        if p.poll() is not None: return cond() or None
        time.sleep(every)
    return None


def lock_pid(out: Path) -> str:
    try: return (out / '.lock').read_text().strip()
    except OSError: return ''


def read_json(path: Path):
    try: return json.loads(Path(path).read_text())
    except (OSError, ValueError): return None


def states(out: Path) -> dict:
    rec = read_json(out / 'sweep.json')
    return {k: r['state'] for k, r in rec['runs'].items()} if rec else {}


def results(out: Path) -> dict:
    "(model, subset_size, seed) -> (top1_error, top5_error), rounded to 6 digits, from results.json."
    rows = json.loads((out / 'results.json').read_text())['runs']
    return {(r['model'], r['subset_size'], r['seed']): (round(r['top1_error'], 6), round(r['top5_error'], 6))
            for r in rows}


def digest(run: Path, names=('metrics.json', 'best.pt', 'last.pt', 'log.jsonl')) -> dict:
    return {n: hashlib.sha256((run / n).read_bytes()).hexdigest() for n in names}


def visible_lines(text: str) -> list:
    "The lines a terminal shows of `text`: what follows the last carriage return of each (tqdm redraws bars with \\r)."
    return [seg for line in text.split('\n') for seg in [line.rsplit('\r', 1)[-1]] if seg.strip()]


def stale_tmp(out: Path) -> list:
    return sorted(str(p.relative_to(out)) for p in out.rglob('.*.tmp'))


def sweep_files_ok(out: Path):
    "After any kill: sweep.json is whole, and every checkpoint on disk loads."
    assert read_json(out / 'sweep.json') is not None, 'sweep.json is torn'
    for ck in out.rglob('*.pt'): load_checkpoint(ck)


def copy_sweep(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns('.lock'))
    return dst


@pytest.fixture(scope='module')
def reference(tmp_path_factory, session_env):
    "The grid run straight through: what every interrupted sweep must end with."
    root = tmp_path_factory.mktemp('reference')
    p = run_cli('sweep', *GRID, '--out', root / 'sweep', cwd=root)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    out = root / 'sweep'
    res = results(out)
    assert len(res) == 2
    return dict(out=out, results=res, logs={r: [json.loads(l) for l in (out / r / 'log.jsonl').read_text().splitlines()]
                                            for r in (R1, R2)})


# --- 1. SIGKILL during training ---------------------------------------------------------------------------------------

def test_kill_during_training_then_rerun_gives_the_same_results(reference, tmp_path):
    out = tmp_path / 'sweep'
    p = start(['sweep', *GRID, '--out', out], tmp_path)
    # the second run has finished its first epoch (last.pt is there) and not its last: the first run is complete
    hit = poll(lambda: (out / R2 / 'last.pt').exists() and not (out / R2 / 'metrics.json').exists(), p)
    assert hit, f'the sweep ended before the kill point:\n{output(p)}'
    done_before = digest(out / R1)
    kill_job(p)
    sweep_files_ok(out)
    assert states(out)[R1] == 'done' and states(out)[R2] == 'running'
    epoch1 = json.loads((out / R2 / 'log.jsonl').read_text().splitlines()[0])

    again = run_cli('sweep', *GRID, '--out', out, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert 'Traceback' not in again.stderr
    assert results(out) == reference['results']
    assert digest(out / R1) == done_before                                      # the finished run was left alone
    log = [json.loads(l) for l in (out / R2 / 'log.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in log] == [1, 2] and log[0] == epoch1             # resumed from last.pt, not restarted
    assert set(states(out).values()) == {'done'}


# --- 2. SIGKILL during evaluation -------------------------------------------------------------------------------------

def test_kill_during_evaluation_then_rerun_gives_the_same_results(reference, tmp_path):
    # every run finished: the sweep goes straight to evaluation
    out = copy_sweep(reference['out'], tmp_path / 'sweep')
    trained = {p: p.stat().st_mtime_ns for p in out.rglob('*.pt')}
    hit = False
    for attempt in range(3):
        for f in [out / 'results.json', out / 'results.csv', *out.rglob('eval_*.json')]: f.unlink(missing_ok=True)
        p = start(['sweep', *GRID, '--out', out], tmp_path, name=f'try{attempt}')
        # inside evaluate_runs: every run is `done` in sweep.json, one run is evaluated, results.json is not written yet
        in_eval = lambda: (set(states(out).values()) == {'done'} and any(out.rglob('eval_test.json'))
                           and not (out / 'results.json').exists())
        hit = poll(in_eval, p, every=0.002)
        if p.poll() is None:
            kill_job(p)
        if hit: break
    # should the evaluation be quicker than the poll 3 times, the invariants below are checked where the kill landed
    sweep_files_ok(out)
    for f in out.rglob('eval_*.json'): assert read_json(f) is not None, f'{f} is torn'
    if hit: assert not (out / 'results.json').exists()
    else: warnings.warn('case 2: the kill never landed inside the evaluation in 3 tries; checked the invariants anyway')

    again = run_cli('sweep', *GRID, '--out', out, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert results(out) == reference['results']
    assert {p: p.stat().st_mtime_ns for p in out.rglob('*.pt')} == trained     # nothing was trained again


# --- 3. SIGKILL while a checkpoint is being written -------------------------------------------------------------------

@pytest.mark.parametrize('ckpt', ['last', pytest.param('best', marks=pytest.mark.slow)])
def test_kill_while_writing_a_checkpoint_leaves_the_checkpoints_whole(reference, tmp_path, ckpt):
    """Kill the sweep and its kernel the moment a save is under way: `.last.pt.*.tmp` (past its first MiB) in a run
    folder that already holds a last.pt (epoch 2's save: a torn write would cost epoch 1), or (slow) `.best.pt.*.tmp`,
    which is written right after last.pt: the resumed run must then rebuild best.pt from last.pt. Polls every 2 ms; a
    save of 45-90 MB with an fsync lasts tens of milliseconds at least, so the first try hits it in practice. Should it
    miss twice (the sweep ends first), the third try kills during training next to a save and checks the same
    invariants."""
    out, hit, fallback = tmp_path / 'sweep', None, False
    for attempt in range(3):
        shutil.rmtree(out, ignore_errors=True)
        p = start(['sweep', *GRID, '--out', out], tmp_path, name=f'try{attempt}')
        fallback = attempt == 2
        kernels, t_kids = {}, 0.0

        def target():
            nonlocal kernels, t_kids
            if time.monotonic() - t_kids > 0.2:
                kernels, t_kids = descendants(p.pid), time.monotonic()
                p.seen.update(kernels)
            for run in (R1, R2):
                try: names = os.listdir(out / run)
                except FileNotFoundError: continue
                if fallback and 'last.pt' in names and 'metrics.json' not in names: return out / run / 'last.pt'
                for n in names:
                    if n.startswith(f'.{ckpt}.pt.') and n.endswith('.tmp') and 'last.pt' in names:
                        try:
                            if os.stat(out / run / n).st_size > 2**20: return out / run / n
                        except FileNotFoundError: pass
            return None

        hit = poll(target, p, every=0.002)
        if hit:
            kill_exact(kernels)                    # the kernel first: it is the writer
            kill_job(p, kernels=True, known=kernels)
            break
        assert p.returncode == 0, output(p)
    assert hit, output(p)
    sweep_files_ok(out)                            # every last.pt and best.pt on disk loads: no torn checkpoint
    if fallback:
        warnings.warn(f'case 3 ({ckpt}.pt): no kill landed during the save in 2 tries; invariants checked after a '
                      f'kill during training instead')
    else:
        print(f'killed while {hit.relative_to(out)} was {hit.stat().st_size if hit.exists() else "?"} bytes; '
              f'temporary files left behind: {stale_tmp(out)}')
        if ckpt == 'last': assert load_checkpoint(hit.parent / 'last.pt')['epoch'] == 1    # the previous one, whole

    again = run_cli('sweep', *GRID, '--out', out, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert results(out) == reference['results']
    assert set(states(out).values()) == {'done'}
    for run in (R1, R2):
        best_epoch = json.loads((out / run / 'metrics.json').read_text())['best_epoch']
        assert load_checkpoint(out / run / 'best.pt')['epoch'] == best_epoch
    print(f'temporary files left after the rerun: {stale_tmp(out)}')


# --- 4. a truncated last.pt of an unfinished run ----------------------------------------------------------------------

def notebook_outputs(nb: Path) -> str:
    cells = json.loads(nb.read_text())['cells']
    text = lambda t: ''.join(t) if isinstance(t, list) else (t or '')
    return '\n'.join(text(o.get('text')) for c in cells for o in c.get('outputs', []))


def test_truncated_last_pt_restarts_the_run_with_one_warning(reference, tmp_path):
    out = copy_sweep(reference['out'], tmp_path / 'sweep')
    last = out / R2 / 'last.pt'
    data = last.read_bytes()
    last.write_bytes(data[:len(data) // 2])
    (out / R2 / 'metrics.json').unlink()
    (out / 'results.json').unlink()
    done_before = digest(out / R1)

    p = run_cli('sweep', *GRID, '--out', out, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    said = notebook_outputs(out / R2 / 'train.ipynb')      # the run's record: its kernel's warnings are there
    warned = [l for l in said.splitlines() if 'UserWarning' in l and 'starting the run again from scratch' in l]
    assert len(warned) == 1 and f'{last} cannot be read' in warned[0], said[-3000:]
    shown = [l for l in p.stdout.splitlines() if l.startswith(f'  {R2}: UserWarning: {last} cannot be read')]
    # and the sweep's terminal says it, under the run's line
    assert len(shown) == 1, p.stdout[-3000:]
    assert json.loads((out / 'sweep.json').read_text())['runs'][R2]['warnings'] == [shown[0].split(': ', 1)[1]]
    log = [json.loads(l) for l in (out / R2 / 'log.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in log] == [1, 2]
    # epoch 1 was trained again: restarted from scratch
    assert log[0]['seconds'] != reference['logs'][R2][0]['seconds']
    load_checkpoint(last)
    assert results(out) == reference['results']
    assert digest(out / R1) == done_before


# --- 5. a damaged decode cache ----------------------------------------------------------------------------------------

def pristine_cache(cache: Path, split: str) -> Path:
    "The .npy of `split` of the shipped sample at 73 px in the session's cache."
    for meta in cache.glob(f'{split}-{STORED}px-*.json'):
        m = json.loads(meta.read_text())
        if m['dataset'] == sample_dataset() and m['split'] == split: return meta.with_suffix('.npy')
    raise AssertionError(f'no {split} cache of the sample in {cache}')


def test_damaged_cache_is_rebuilt_with_a_warning(reference, session_env, tmp_path):
    "The cheap check reads the size, the header and a CRC of the first and last MiB: damage those (and truncate)."
    cache = tmp_path / 'cache'; cache.mkdir()
    good = {}
    for split in ('train', 'validation', 'test'):
        src = pristine_cache(session_env, split)
        good[split] = np.load(src)
        for f in (src, src.with_suffix('.json')): shutil.copy2(f, cache / f.name)
    train = cache / pristine_cache(session_env, 'train').name
    val = cache / pristine_cache(session_env, 'validation').name
    with open(train, 'r+b') as f:                  # garbage in the first MiB, past the .npy header
        f.seek(100_000); f.write(os.urandom(4096))
    with open(val, 'r+b') as f: f.truncate(val.stat().st_size // 2)

    out = tmp_path / 'sweep'
    p = run_cli('sweep', *ONE_RUN, '--out', out, cwd=tmp_path, MINISWEEP_CACHE=str(cache))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    for f in (train, val):
        assert sum(f'cache {f} is damaged' in l for l in p.stderr.splitlines()) == 1, p.stderr[-3000:]
    builds = [json.loads(l)['file'] for l in (cache / 'builds.jsonl').read_text().splitlines()]
    assert sorted(builds) == sorted([train.name, val.name])                 # rebuilt once each; test reused as it was
    for split, f in (('train', train), ('validation', val)): assert np.array_equal(np.load(f), good[split])
    assert states(out) == {'resnet18/subset_0.1250/seed_0': 'done'}         # training went on with the rebuilt cache
    assert 'Traceback' not in p.stderr


# --- 6. two sweeps on one folder --------------------------------------------------------------------------------------

def test_a_second_sweep_on_the_folder_is_refused_and_the_lock_dies_with_the_first(cli, tmp_path):
    out = tmp_path / 'sweep'
    args = ['sweep', *GRID, '--out', out]
    first = start(args, tmp_path, name='first')
    assert poll(lambda: read_json(out / 'sweep.json') and lock_pid(out) == str(first.pid), first,
                timeout=300), output(first)
    rc, _, err = cli(*args, cwd=tmp_path)                            # the second sweep: the console script's main, here
    assert first.poll() is None, 'the first sweep ended before the second one asked for the lock: inconclusive'
    assert rc == 2, err[-3000:]
    lines = visible_lines(err)
    assert len(lines) == 1 and f'another sweep (pid {first.pid})' in lines[0] and 'Traceback' not in err, lines

    kill_job(first)
    third = start(args, tmp_path, name='third')
    took = poll(lambda: lock_pid(out) == str(third.pid), third, timeout=300)
    assert took, f'a new sweep did not get the lock after the first was killed:\n{output(third)}'
    kill_job(third)
    sweep_files_ok(out)


# --- 7. a diverging run -----------------------------------------------------------------------------------------------

def test_nan_loss_fails_the_run_after_the_first_bad_epoch(tmp_path):
    """AlexNet at learning rate 1e6 gives a NaN training loss in its first epoch (ResNet18, with BatchNorm, in its
    second)."""
    out = tmp_path / 'sweep'
    p = run_cli('sweep', '--models', 'alexnet', '--subset-sizes', '0.25', '--seeds', '0', '--num-epochs', '3',
                '--learning-rate', '1e6', '--batch-size', '32', '--image-size', '64', '--dataset', '', '--device',
                'cpu',
                '--no-bf16', '--figures', '', '--out', out, cwd=tmp_path)
    assert p.returncode == 1, p.stdout[-2000:] + p.stderr[-2000:]
    run = json.loads((out / 'sweep.json').read_text())['runs']['alexnet/subset_0.2500/seed_0']
    assert run['state'] == 'failed' and 'learning rate' in run['error'] and 'TrainingDiverged' in run['error'], run
    run_dir = out / 'alexnet/subset_0.2500/seed_0'
    assert len((run_dir / 'log.jsonl').read_text().splitlines()) <= 1          # stopped at the first bad epoch
    assert not (run_dir / 'metrics.json').exists()
    # the failure table, on stderr
    assert '| alexnet/subset_0.2500/seed_0 |' in p.stderr and 'Traceback' not in p.stderr


# --- 8. a full disk ---------------------------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    "A 320 MB tmpfs (we run as root); skipped where mounting is not allowed."
    d = tmp_path / 'disk'; d.mkdir()
    p = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=320m', 'tmpfs', str(d)], capture_output=True, text=True)
    if p.returncode != 0: pytest.skip(f'cannot mount a tmpfs: {p.stderr.strip() or p.returncode}')
    try: yield d
    finally:
        reap_jobs()                                           # nothing of ours may keep the file system busy
        if subprocess.run(['umount', str(d)]).returncode != 0: subprocess.run(['umount', '-l', str(d)])


def free_bytes(path: Path) -> int:
    s = os.statvfs(path)
    return s.f_bavail * s.f_frsize


@pytest.mark.slow           # two runs on a small tmpfs, about 80 s: make test-slow
def test_full_disk_fails_the_run_cleanly_and_keeps_the_finished_one(small_disk, tmp_path):
    """The disk fills up while the sweep runs: once its first run has finished, a file takes all but 60 MB, less than
    the second run's last.pt (90 MB; its best.pt is 45 MB). Then the space comes back and the same command finishes
    the sweep."""
    out, filler = small_disk / 'sweep', small_disk / 'filler'
    args = ['sweep', *GRID, '--num-epochs', '1', '--out', out]
    p = start(args, tmp_path)
    assert poll(lambda: (out / R1 / 'metrics.json').exists(), p, every=0.02), output(p)
    assert not list((out / R2).glob('*.pt')), 'the second run saved a checkpoint before the disk was full: inconclusive'
    fd = os.open(filler, os.O_CREAT | os.O_WRONLY)
    try: os.posix_fallocate(fd, 0, free_bytes(small_disk) - 60 * 2**20)
    finally: os.close(fd)
    done_before = digest(out / R1)
    p.wait(timeout=600)

    assert p.returncode == 1, output(p)
    run = json.loads((out / 'sweep.json').read_text())['runs'][R2]
    assert not (out / R2 / 'metrics.json').exists()
    sweep_files_ok(out)                                       # any best.pt / last.pt on the full disk loads
    assert stale_tmp(out) == []                               # no half-written temporary file eats the space
    assert digest(out / R1) == done_before
    assert list(results(out)) == [('resnet18', 0.25, 0)]      # the finished run is evaluated all the same
    assert 'Traceback' not in raw_text(p.logs[1])
    assert run['state'] == 'failed'

    # the space comes back: the same command finishes the sweep
    filler.unlink()
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert set(states(out).values()) == {'done'} and digest(out / R1) == done_before
    assert 'No space left' in run['error'], f'the failed run does not say the disk was full: {run["error"]}'


# --- 9. a corrupt image in the dataset --------------------------------------------------------------------------------

def corrupt_copy(dst: Path, split: str, index: int) -> Path:
    "The shipped sample with the bytes of image `index` of `split` replaced by garbage."
    import pyarrow as pa, pyarrow.parquet as pq
    (dst / 'data').mkdir(parents=True)
    for f in (Path(sample_dataset()) / 'data').glob('*.parquet'):
        t = pq.read_table(f)
        if f.name.startswith(f'{split}-'):
            i = t.schema.get_field_index('image')
            col = t.column(i).to_pylist()
            col[index] = {**col[index], 'bytes': b'this is not a JPEG ' * 8}
            t = t.set_column(i, t.schema.field(i), pa.array(col, type=t.schema.field(i).type))   # keeps the HF features
        pq.write_table(t, dst / 'data' / f.name)
    return dst


@pytest.mark.parametrize('command, split, index', [('sweep', 'train', 123), ('sweep', 'validation', 7),
                                                    ('sweep', 'test', 42), ('train', 'train', 123)])
def test_corrupt_image_fails_before_training_naming_split_and_index(cli, tmp_path, command, split, index):
    data = corrupt_copy(tmp_path / 'data', split, index)
    if command == 'sweep': args = ['sweep', *ONE_RUN, '--dataset', data, '--out', tmp_path / 'out']
    else: args = ['train', '--model', 'resnet18', '--subset-sizes', '0.125', '--num-epochs', '1', '--batch-size', '32',
                  '--image-size', '64', '--device', 'cpu', '--no-bf16', '--dataset', data, '--checkpoint-dir',
                  tmp_path / 'out']
    rc, out, err = cli(*args, cwd=tmp_path)
    lines = visible_lines(err)
    assert rc == 2 and len(lines) == 1 and 'Traceback' not in err, out[-2000:] + err[-3000:]
    assert f'image {index} of split {split!r} cannot be decoded' in lines[0]
    assert not list((tmp_path / 'out').rglob('*.pt')), 'training started before the corrupt image was found'


# --- 10. bad input: every command, one line, exit status 2 ------------------------------------------------------------

class _Logged(logging.Handler):
    "The records a command logs at WARNING or above: on a terminal each is a line of its own."
    def __init__(self): super().__init__(logging.WARNING); self.lines = []
    def emit(self, record): self.lines.append(f'{record.levelname}: {record.getMessage()}')


@pytest.fixture
def cli(capfd, monkeypatch):
    """`cli(*args, cwd=...)` -> (exit status, stdout, stderr) of `minisweep *args`, run by the console script's own
    `main`
    in this process, so that the ~100 command lines of the table import torch once, not once each. stderr is what
    reached
    file descriptor 2, plus what the console script would also have shown there and pytest collects instead: every
    warning and every log record. `test_the_console_script_says_one_line_and_exits_2` runs the installed script
    itself."""
    from minisweep.cli import main
    def run(*args, cwd):
        monkeypatch.chdir(cwd)
        capfd.readouterr()
        # datasets does not propagate
        logged, loggers = _Logged(), [logging.getLogger(), logging.getLogger('datasets')]
        for lg in loggers: lg.addHandler(logged)
        try:
            with warnings.catch_warnings(record=True) as warned:
                warnings.simplefilter('always')
                try: rc = main([str(a) for a in args])
                except SystemExit as e: rc = e.code                 # argparse: --help (0), a bad argument (2)
        finally:
            for lg in loggers: lg.removeHandler(logged)
        out, err = capfd.readouterr()
        shown = [f'{w.category.__name__}: {w.message}' for w in warned] + logged.lines
        return (0 if rc is None else rc), out, err + ''.join(f'{line}\n' for line in shown)
    return run


@pytest.fixture(scope='module')
def bad(tmp_path_factory):
    "Paths the table refers to: datasets with a missing split or missing columns, a file, an empty folder, bad results."
    import datasets
    from PIL import Image
    import io
    d = tmp_path_factory.mktemp('bad')
    png = io.BytesIO(); Image.new('RGB', (8, 8)).save(png, 'PNG')
    rows = {'image': [{'bytes': png.getvalue(), 'path': None}] * 4, 'label': [0, 1, 0, 1]}
    good = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=['a', 'b'])})
    def write(name, splits, data, features):
        (d / name / 'data').mkdir(parents=True)
        for s in splits:
            parquet = d / name / 'data' / f'{s}-00000-of-00001.parquet'
            datasets.Dataset.from_dict(data, features=features).to_parquet(str(parquet))
        return d / name
    paths = dict(
        nosplit=write('nosplit', ('train', 'validation'), rows, good),
        nocols=write('nocols', ('train', 'validation', 'test'), {'img': rows['image'], 'y': rows['label']},
                     datasets.Features({'img': datasets.Image(), 'y': datasets.ClassLabel(names=['a', 'b'])})),
        intlabel=write('intlabel', ('train', 'validation', 'test'), rows,
                       datasets.Features({'image': datasets.Image(), 'label': datasets.Value('int64')})),
        empty=d / 'empty', file=d / 'a_file', other=d / 'other.json', notjson=d / 'bad.json', othercsv=d / 'other.csv')
    paths['empty'].mkdir()
    paths['file'].write_text('not a folder\n')
    three = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=['a', 'b', 'c'])})
    paths['noclass'] = write('noclass', ('train', 'validation', 'test'), rows, three)            # class 'c': no image
    paths['zerobyte'] = write('zerobyte', ('train', 'validation', 'test'), rows, good)
    (paths['zerobyte'] / 'data' / 'test-00000-of-00001.parquet').write_bytes(b'')
    paths['norows'] = write('norows', ('train', 'validation'), rows, good)
    datasets.Dataset.from_dict({'image': [], 'label': []},
                               features=good).to_parquet(str(d / 'norows' / 'data' / 'test-00000-of-00001.parquet'))
    paths['badlabel'] = write('badlabel', ('train', 'validation', 'test'), rows, good)
    # label 5 of 2 classes in row 2 (the HF features kept)
    import pyarrow as pa, pyarrow.parquet as pq
    f = paths['badlabel'] / 'data' / 'train-00000-of-00001.parquet'
    t = pq.read_table(f); i = t.schema.get_field_index('label')
    pq.write_table(t.set_column(i, t.schema.field(i), pa.array([0, 1, 5, 1], type=t.schema.field(i).type)), f)
    row = dict(model='resnet18', subset_size=0.5, seed=0, n_train=200, top1_error=0.5, top5_error=0.2, test_loss=1.5,
               best_epoch=1, val_top5_error=0.2, train_seconds=3.0, num_classes=10,
               run_dir='resnet18/subset_0.5000/seed_0', learning_rate=0.2, default_learning_rate=0.2,
               val_top1_error=0.5, val_loss=1.5, select_on='val_top5_error', selected=True, dataset='',
               split='test', n_test=100, epochs=1)
    for name, change in dict(nanres={'top5_error': float('nan')}, nullres={'top1_error': None},
                             rundir12={'run_dir': 12},
                             modelnull={'model': None}).items():
        paths[name] = d / f'{name}.json'
        runs = [row, {**row, 'subset_size': 0.25, **change}]
        paths[name].write_text(json.dumps({'format': 'minisweep.results/1', 'runs': runs}))
    paths['other'].write_text(json.dumps({'format': 'something/else', 'rows': []}))
    paths['notjson'].write_text('{not json')
    paths['othercsv'].write_text('a,b\n1,2\n')
    return paths


@pytest.fixture(scope='module')
def runs(tmp_path_factory, reference):
    "A folder with a finished (and evaluated) run, one with only an unfinished run, and a results.json."
    d = tmp_path_factory.mktemp('runs')
    shutil.copytree(reference['out'] / R2, d / 'finished' / R2)         # evaluated already: eval_test.json is there
    (d / 'unfinished' / 'run').mkdir(parents=True)
    shutil.copy2(reference['out'] / R2 / 'last.pt', d / 'unfinished' / 'run' / 'last.pt')
    import torch
    ck = load_checkpoint(reference['out'] / R2 / 'best.pt')
    no_config = {k: v for k, v in ck.items() if k != 'config'}
    for name, obj in (('crafted', {**ck, 'model': Payload(d / 'payload-ran')}), ('noconfig', no_config)):
        shutil.copytree(reference['out'] / R2, d / name / R2)
        (d / name / R2 / 'eval_test.json').unlink()
        torch.save(obj, d / name / R2 / 'best.pt')
    return dict(finished=d / 'finished', unfinished=d / 'unfinished', results=reference['out'] / 'results.json',
                crafted=d / 'crafted', noconfig=d / 'noconfig', payload=d / 'payload-ran')


class Payload:
    "Pickled, it asks the loader to make a folder: what a crafted checkpoint would do with a harmful call."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (os.mkdir, (self.marker,))


SW = ['sweep', *ONE_RUN, '--out', '{tmp}/sw']            # a valid, cheap sweep: each case spoils one thing
TR = ['train', '--model', 'resnet18', '--subset-sizes', '0.125', '--num-epochs', '1', '--batch-size', '32',
      '--image-size', '64', '--dataset', '', '--device', 'cpu', '--no-bf16', '--checkpoint-dir', '{tmp}/ck']
EV = ['eval', '--model', 'resnet18']
BAD_INPUT = [   # (argv, what the one line must say)
    ([], 'required'),
    (['frobnicate'], 'invalid choice'),
    (['--frobnicate'], 'required'),
    # sweep
    ([*SW, '--frobnicate'], 'unrecognized arguments'),
    ([*SW, '--models'], 'expected at least one argument'),
    ([*SW, '--subset-sizes'], 'expected at least one argument'),
    ([*SW, '--models', 'vgg99'], "unknown model 'vgg99'"),
    ([*SW, '--subset-sizes', 'abc'], "'abc' is not a number"),
    ([*SW, '--subset-sizes', '0'], 'outside (0, 1]'),
    ([*SW, '--subset-sizes', '-0.5'], 'outside (0, 1]'),
    ([*SW, '--subset-sizes', '1.5'], 'outside (0, 1]'),
    ([*SW, '--subset-sizes', 'nan'], 'is not a number'),
    ([*SW, '--seeds', 'x'], "invalid int value: 'x'"),
    ([*SW, '--seeds', '-1'], 'seed'),
    ([*SW, '--num-epochs', '0'], '0 must be at least 1'),
    ([*SW, '--num-epochs', '-2'], '-2 must be at least 1'),
    ([*SW, '--num-epochs', '1.5'], "'1.5' is not a whole number"),
    ([*SW, '--batch-size', '0'], '0 must be at least 1'),
    ([*SW, '--batch-size', '-32'], '-32 must be at least 1'),
    ([*SW, '--batch-size', 'x'], "'x' is not a whole number"),
    ([*SW, '--image-size', '0'], '0 must be at least 1'),
    ([*SW, '--image-size', '16'], '32 pixels resnet18 needs'),
    ([*SW, '--models', 'alexnet', '--image-size', '32'], '63 pixels alexnet needs'),
    ([*SW, '--learning-rate', 'abc'], "invalid float value: 'abc'"),
    ([*SW, '--learning-rate', '-0.1'], 'learning_rate'),
    ([*SW, '--learning-rate', 'nan'], 'learning_rate'),
    ([*SW, '--learning-rate', 'inf'], 'learning_rate'),
    ([*SW, '--weight-decay', '-1'], 'weight_decay'),
    ([*SW, '--label-smoothing', '1.5'], 'label_smoothing'),
    ([*SW, '--min-steps', '-5'], 'min_steps'),
    ([*SW, '--patience', '-1'], 'patience'),
    ([*SW, '--select-on', 'accuracy'], "invalid choice: 'accuracy'"),
    ([*SW, '--executor', 'slurm'], "invalid choice: 'slurm'"),
    ([*SW, '--device', 'tpu'], "unknown device 'tpu'"),
    ([*SW, '--dataset', '/nonexistent/data'], '/nonexistent/data does not exist'),
    ([*SW, '--dataset', '{file}'], 'is a file, not a dataset folder'),
    ([*SW, '--dataset', '{empty}'], "doesn't contain any data files"),
    ([*SW, '--dataset', '{nosplit}'], "no 'test' split"),
    ([*SW, '--dataset', '{nocols}'], "no 'image' and no 'label' column"),
    ([*SW, '--dataset', '{intlabel}'], 'not a ClassLabel'),
    ([*SW, '--out', '{file}'], '{file}'),
    ([*SW, '--subset-sizes', '0.03749', '0.03751'], 'would share the run folder subset_0.0375'),
    ([*SW, '--dataset', '{noclass}'], "class 'c' (label 2) has no training images"),
    ([*SW, '--dataset', '{zerobyte}'], "split 'test': {zerobyte}/data/test-00000-of-00001.parquet is an empty file (0 "
     "bytes)"),
    ([*SW, '--dataset', '{norows}'], "split 'test' is empty"),
    ([*SW, '--dataset', '{badlabel}'], "split 'train', row 2: label 5 is outside the 2 classes"),
    ([*SW, '--learning-rates'], 'expected at least one argument'),
    ([*SW, '--learning-rates', 'fast'], "'fast' is not a learning rate"),
    ([*SW, '--learning-rates', '0'], 'learning rate 0 must be a number > 0'),
    ([*SW, '--learning-rates', 'nan'], 'learning rate nan must be a number > 0'),
    ([*SW, '--learning-rates', 'alexnet='], "'alexnet=': write MODEL=RATE,RATE,..."),
    ([*SW, '--learning-rates', 'alexnet=0.1,,0.2'], "'' is not a learning rate"),
    ([*SW, '--learning-rates', 'resnet18=0.1,0'], 'learning rate 0 must be a number > 0'),
    ([*SW, '--learning-rates', 'resnet18=0.1,-1'], 'learning rate -1 must be a number > 0'),
    ([*SW, '--learning-rates', '0.1', 'resnet18=0.2'], 'rates per model (alexnet=0.01,0.02), not both'),
    ([*SW, '--learning-rates', 'resnet18=0.1', 'resnet18=0.2'], 'names resnet18 twice'),
    ([*SW, '--learning-rates', 'alexnet=0.01,0.02'], 'which the grid does not train'),
    ([*SW, '--budget-check', '0.25'], 'budget check at subset size 0.25: not a size of the grid (0.125)'),
    ([*SW, '--budget-check', 'half'], "'half' is not a number"),
    ([*SW, '--warmup-fraction', '0.6'], '0.6 must be in [0, 0.5] (warmup_fraction)'),
    ([*SW, '--warmup-fraction', '-0.1'], '-0.1 must be in [0, 0.5] (warmup_fraction)'),
    # train
    (['train'], 'required: --model'),
    ([*TR, '--frobnicate'], 'unrecognized arguments'),
    ([*TR, '--model', 'vgg99'], "unknown model 'vgg99'"),
    ([*TR, '--subset-sizes', '2'], 'outside (0, 1]'),
    ([*TR, '--subset-sizes', 'half'], "'half' is not a number"),
    ([*TR, '--num-epochs', '0'], '0 must be at least 1'),
    ([*TR, '--batch-size', '0'], '0 must be at least 1'),
    ([*TR, '--batch-size', '1000'], 'batch size 1000 is larger than the 50 images'),
    ([*TR, '--image-size', '16'], '32 pixels resnet18 needs'),
    ([*TR, '--model', 'alexnet', '--image-size', '32'], '63 pixels alexnet needs'),
    ([*TR, '--learning-rate', '-1'], 'learning_rate'),
    ([*TR, '--select-on', 'acc'], "invalid choice: 'acc'"),
    ([*TR, '--warmup-fraction', '0.51'], '0.51 must be in [0, 0.5] (warmup_fraction)'),
    ([*TR, '--seed', 'x'], "invalid int value: 'x'"),
    ([*TR, '--seed', '-1'], 'seed'),
    ([*TR, '--device', 'tpu'], "unknown device 'tpu'"),
    ([*TR, '--channels-last', 'on'], "invalid choice: 'on'"),
    ([*TR, '--dataset', '/nonexistent/data'], '/nonexistent/data does not exist'),
    ([*TR, '--dataset', '{nocols}'], "no 'image' and no 'label' column"),
    ([*TR, '--checkpoint-dir', '{file}'], 'cannot write to the output directory'),
    # eval
    (['eval'], 'required: --model, --checkpoint-dir'),
    ([*EV], 'required: --checkpoint-dir'),
    ([*EV, '--checkpoint-dir', '/nonexistent/runs'], '/nonexistent/runs does not exist'),
    ([*EV, '--checkpoint-dir', '{file}'], 'is a file, not a run folder'),
    ([*EV, '--checkpoint-dir', '{empty}'], 'no finished run under'),
    ([*EV, '--checkpoint-dir', '{unfinished}'], 'no finished run under'),
    ([*EV, '--checkpoint-dir', '{finished}', '--split', 'train'], "invalid choice: 'train'"),
    ([*EV, '--checkpoint-dir', '{finished}', '--device', 'tpu'], "unknown device 'tpu'"),
    (['eval', '--model', 'alexnet', '--checkpoint-dir', '{finished}'], 'no finished run of alexnet'),
    ([*EV, '--checkpoint-dir', '{crafted}'], 'is not a minisweep checkpoint (it holds Python objects): refusing to '
     'unpickle it'),
    ([*EV, '--checkpoint-dir', '{noconfig}'], 'is a damaged minisweep checkpoint: it has no config'),
    # curves
    (['curves'], 'required: results'),
    (['curves', '/nonexistent/results.json'], 'results file not found'),
    (['curves', '{empty}'], 'results file not found'),
    (['curves', '{other}'], 'not a minisweep results file'),
    (['curves', '{notjson}'], 'not a JSON results file'),
    (['curves', '{othercsv}'], 'missing columns'),
    (['curves', '{results}', '--out', '{file}'], '{file}'),
    (['curves', '{nanres}'], 'run 1: top5_error is nan, not a finite number'),
    (['curves', '{nullres}'], 'run 1: top1_error is nan, not a finite number'),
    (['curves', '{rundir12}'], 'run 1: run_dir must be a non-empty text, got 12'),
    (['curves', '{modelnull}'], 'run 1: model must be a non-empty text, got null'),
    # demo
    (['demo', '--frobnicate'], 'unrecognized arguments'),
    (['demo', '--device', 'tpu'], "unknown device 'tpu'"),
    (['demo', '--out', '{file}'], '{file}'),
]


def _case_id(argv: list) -> str:
    for base in (SW, TR):
        if argv[:len(base)] == base: return ' '.join([base[0], *argv[len(base):]])
    return ' '.join(argv) or '(nothing)'


_NEEDS_RUNS = ('{finished}', '{unfinished}', '{results}', '{crafted}',
               '{noconfig}')      # cases on the module's trained runs


@pytest.mark.parametrize('argv, says', [pytest.param(a, s, id=_case_id(a)) for a, s in BAD_INPUT])
def test_bad_input_is_one_line_and_exit_2(cli, bad, request, tmp_path, argv, says):
    paths = dict(bad)
    if any(k in ' '.join(argv) for k in _NEEDS_RUNS): paths.update(request.getfixturevalue('runs'))
    fill = lambda s: s.format(tmp=tmp_path, **paths)
    rc, out, err = cli(*map(fill, argv), cwd=tmp_path)
    lines = visible_lines(err)
    assert rc == 2 and len(lines) == 1 and 'Traceback' not in err, f'exit status {rc}, stderr:\n{err[-3000:]}'
    assert fill(says) in lines[0], lines[0]
    assert not list(tmp_path.rglob('*.pt')), 'a bad argument started training'
    if '{crafted}' in argv: assert not Path(paths['payload']).exists(), 'the crafted checkpoint ran its code'


def test_the_console_script_says_one_line_and_exits_2(tmp_path):
    "The installed script itself, once (the table runs its `main` in this process): exit status 2 reaches the shell."
    p = run_cli('sweep', *ONE_RUN, '--dataset', '/nonexistent/data', '--out', tmp_path / 'sw', cwd=tmp_path)
    lines = visible_lines(p.stderr)
    assert p.returncode == 2 and len(lines) == 1 and 'Traceback' not in p.stderr, p.stderr[-3000:]
    assert lines[0] == 'minisweep sweep: error: dataset folder /nonexistent/data does not exist', lines


def test_a_batch_larger_than_the_subset_fails_before_any_work(cli, tmp_path, monkeypatch):
    """The sample by its name; 0.05 of 40 images a class is 20 images, fewer than a batch: refused from the labels
    alone,
    before the first size trains, with no run folder made and no image decoded (a decode cache of its own stays empty).
    In a sweep the same grid fails that run only (tests/test_sweep.py)."""
    monkeypatch.setenv('MINISWEEP_CACHE', str(tmp_path / 'cache'))
    rc, _, err = cli('train', '--model', 'resnet18', '--subset-sizes', '1', '0.05', '--batch-size', '32',
                     '--image-size', '64',
                     '--dataset', '', '--checkpoint-dir', tmp_path / 'ck', cwd=tmp_path)
    lines = visible_lines(err)
    assert rc == 2 and len(lines) == 1, err
    assert 'batch size 32 is larger than the 20 images of subset 0.05' in lines[0]
    assert not (tmp_path / 'ck').exists() and not list(tmp_path.rglob('*.npy'))
    rc, out, _ = cli('train', '--help', cwd=tmp_path)
    assert rc == 0 and 'sample' in out


def test_a_folder_of_another_grid_is_refused(reference, cli, tmp_path):
    "A sweep folder (its sweep.json) of another grid: one line naming --out; the folder is left as it was."
    (tmp_path / 'sweep').mkdir()
    record = shutil.copy2(reference['out'] / 'sweep.json', tmp_path / 'sweep' / 'sweep.json')
    before = Path(record).read_bytes()
    grid = [a if a != '0.125' else '0.5' for a in ONE_RUN]           # subset 0.5: not a size of the reference grid
    rc, _, err = cli('sweep', *grid, '--out', tmp_path / 'sweep', cwd=tmp_path)
    lines = visible_lines(err)
    assert rc == 2 and len(lines) == 1 and 'another grid' in lines[0] and '--out' in lines[0], err
    assert Path(record).read_bytes() == before and not list((tmp_path / 'sweep').rglob('*.pt'))


# --- 11. planted modules, links and foreign files in the sweep folder -------------------------------------------------

PLANT = "open({marker!r}, 'a').write({name!r} + '\\n')\nraise ImportError('planted {name} was imported')\n"


def test_a_module_planted_in_the_run_folder_is_not_imported(tmp_path):
    """`torch.py` and `numpy.py` in the run folder and in the sweep folder (where the curves report runs): the jobs
    import
    neither (they run in an empty private folder, with PYTHONSAFEPATH). A one-model, one-size, one-seed grid, with
    figures."""
    out, marker = tmp_path / 'sweep', tmp_path / 'planted-ran'
    for folder in (out / 'resnet18' / 'subset_0.1250' / 'seed_0', out):
        folder.mkdir(parents=True, exist_ok=True)
        for name in ('torch', 'numpy'): (folder / f'{name}.py').write_text(PLANT.format(marker=str(marker), name=name))
    args = [a if a != '' or i == 0 or ONE_RUN[i - 1] != '--figures' else str(tmp_path / 'fig') for i,
            a in enumerate(ONE_RUN)]
    p = run_cli('sweep', *args, '--out', out, cwd=out)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert not marker.exists(), f'a planted module ran: {marker.read_text()}'
    assert states(out) == {'resnet18/subset_0.1250/seed_0': 'done'}
    assert {'resnet18_curve.png', 'curves.png', 'summary.md'} <= {f.name for f in (tmp_path / 'fig').iterdir()}


@pytest.mark.parametrize('kind', ['symlink', 'hardlink', 'other content'])
def test_a_lock_file_the_sweep_did_not_make_is_refused_and_left_alone(cli, tmp_path, kind):
    out, precious = tmp_path / 'sweep', tmp_path / 'precious.txt'
    out.mkdir(); precious.write_text('a file of the user\n')
    if kind == 'symlink': (out / '.lock').symlink_to(precious)
    elif kind == 'hardlink': os.link(precious, out / '.lock')
    else: (out / '.lock').write_text('a file of the user\n')
    rc, _, err = cli('sweep', *ONE_RUN, '--out', out, cwd=tmp_path)
    lines = visible_lines(err)
    assert rc == 2 and len(lines) == 1 and 'Traceback' not in err, err[-3000:]
    assert f'{out}/.lock is ' in lines[0] and ('symbolic link' in lines[0] if kind == 'symlink'
                                               else 'move it away' in lines[0])
    assert precious.read_text() == 'a file of the user\n'
    if kind == 'other content': assert (out / '.lock').read_text() == 'a file of the user\n'
    assert not (out / 'sweep.json').exists()


# --- 12. lost work: a finished run deleted during the sweep, an unwritable sweep.json, a damaged best.pt --------------

@pytest.mark.slow           # a sweep, then its rerun training the run again, about 60 s: make test-slow
def test_a_finished_run_deleted_during_the_sweep_is_reported_and_trained_again_on_rerun(reference, tmp_path):
    "Decision: the sweep reports it (failed, exit 1); the same command trains it again."
    out = tmp_path / 'sweep'
    p = start(['sweep', *GRID, '--out', out], tmp_path)
    assert poll(lambda: (out / R1 / 'metrics.json').exists() and states(out).get(R2) == 'running', p), output(p)
    shutil.rmtree(out / R1)
    p.wait(timeout=600)
    assert p.returncode == 1, output(p)
    run = json.loads((out / 'sweep.json').read_text())['runs'][R1]
    assert run['state'] == 'failed' and 'metrics.json is gone' in run['error'] and 'rerun' in run['error'], run
    assert f'| {R1} |' in raw_text(p.logs[1])                     # in the failure table, on stderr
    assert list(results(out)) == [('resnet18', 0.125, 0)]         # results hold what is on disk
    again = run_cli('sweep', *GRID, '--out', out, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert results(out) == reference['results'] and set(states(out).values()) == {'done'}


@pytest.mark.parametrize('errno_', [28, 30], ids=['disk full', 'read-only'])
def test_an_unwritable_sweep_json_is_one_line(reference, tmp_path, monkeypatch, capsys, errno_):
    """The console script's own `main`, in this process: writing sweep.json fails as a full disk or a read-only folder
    would."""
    import minisweep.sweep
    from minisweep.cli import main
    out = copy_sweep(reference['out'], tmp_path / 'sweep')
    def refuse(path, text):
        if Path(path).name == 'sweep.json': raise OSError(errno_, os.strerror(errno_))
    monkeypatch.setattr(minisweep.sweep, 'atomic_write', refuse)
    assert main(['sweep', *GRID, '--out', str(out)]) == 2
    lines = visible_lines(capsys.readouterr().err)
    assert len(lines) == 1 and f'cannot write {out}/sweep.json ({os.strerror(errno_)})' in lines[0], lines
    assert 'rerun the same command' in lines[0]


def test_a_damaged_best_pt_of_a_finished_run_says_how_to_recover(reference, cli, tmp_path):
    out = copy_sweep(reference['out'], tmp_path / 'sweep')
    best = out / R2 / 'best.pt'
    best.write_bytes(best.read_bytes()[:1000])
    rc, _, err = cli('sweep', *GRID, '--out', out, cwd=tmp_path)
    lines = visible_lines(err)
    assert rc == 2 and len(lines) == 1 and 'Traceback' not in err, err[-3000:]
    assert f'{best} cannot be read' in lines[0]
    assert f'delete the run folder {out / R2} and train that run again' in lines[0]
    shutil.rmtree(out / R2)                                       # what the line says
    again = run_cli('sweep', *GRID, '--out', out, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert results(out) == reference['results']


def test_a_crafted_last_pt_runs_no_code_and_the_run_starts_again(tmp_path):
    from minisweep.train import CKPT_FORMAT, TrainConfig, train_run
    import torch
    cfg = TrainConfig(model='resnet18', subset_size=0.125, image_size=64, num_epochs=1, batch_size=32, device='cpu',
                      bf16=False, progress=False, keep_last=True, out_dir=str(tmp_path / 'run'))
    (tmp_path / 'run').mkdir()
    torch.save({'format': CKPT_FORMAT, 'config': {}, 'model': Payload(tmp_path / 'payload-ran')},
               tmp_path / 'run' / 'last.pt')
    with pytest.warns(UserWarning, match='refusing to unpickle it: starting the run again from scratch'):
        m = train_run(cfg)
    assert not (tmp_path / 'payload-ran').exists()
    assert m['epochs_run'] == 1 and load_checkpoint(tmp_path / 'run' / 'last.pt')['epoch'] == 1
