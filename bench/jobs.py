"""minisweep's own commands run as subprocesses (the sweep, the demo, one training run), watched for peak memory.

A job runs in its own session, in the folder of its log, with a fresh `MINISWEEP_CACHE`; `CHILD` is the job being
waited for, so that a benchmark killed by SIGTERM can take the job down with it."""
from __future__ import annotations
import json, os, shutil, signal, statistics, subprocess, sys, threading, time
from pathlib import Path

import torch

from machine import log


def minisweep_exe() -> str:
    exe = Path(sys.executable).parent / 'minisweep'
    return str(exe) if exe.exists() else (shutil.which('minisweep') or 'minisweep')

def has_command(cmd: str) -> tuple:
    try:
        r = subprocess.run([minisweep_exe(), cmd, '--help'], capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as e: return False, str(e)
    tail = (r.stderr or r.stdout).strip().splitlines()
    return r.returncode == 0, (tail[-1] if tail else f'exit status {r.returncode}')

def unavailable(command: str) -> dict | None:
    "None when `minisweep COMMAND --help` works; else the result of a check that could not run, saying why (logged)."
    ok, why = has_command(command)
    if ok: return None
    log(f'  {command} not available ({why})'); return dict(available=False, why=why)

def fresh(*folders: Path) -> tuple:
    "`folders`, each removed with what it holds, so that a job starts from nothing."
    for d in folders: shutil.rmtree(d, ignore_errors=True)
    return folders

def gpu_used_mib():
    "Device-wide GPU memory in use (nvidia-smi, MiB; the largest over the GPUs), or None."
    if not shutil.which('nvidia-smi'): return None
    try:
        used = subprocess.run(['nvidia-smi', '--query-gpu=memory.used', '--format=csv,noheader,nounits'],
                              capture_output=True, text=True, timeout=5).stdout.split()
        return max(map(float, used)) if used else None
    except Exception: return None

def gpu_used_by_pid() -> dict:
    """GPU memory of each process nvidia-smi lists ({pid: MiB}); empty where it lists none (or, in a container, other
    pids)."""
    if not shutil.which('nvidia-smi'): return {}
    try:
        rows = subprocess.run(['nvidia-smi', '--query-compute-apps=pid,used_memory', '--format=csv,noheader,nounits'],
                              capture_output=True, text=True, timeout=5).stdout.strip().splitlines()
        return {int(p): float(m) for p, m in (r.split(',') for r in rows if r.count(',') == 1)}
    except Exception: return {}

class TreeMonitor(threading.Thread):
    """Peak memory of a process and all its descendants, polled: sum of PSS (shared pages, such as the memory-mapped
    cache every process reads, counted once), sum of RSS (counts them once per process: an over-estimate), largest RSS;
    on CUDA machines the GPU memory of the tree's own processes (nvidia-smi per pid) and device-wide. Every pid seen is
    kept in `pids`, so that a process that left the tree (a kernel whose papermill died) can still be stopped."""
    def __init__(self, pid, interval=0.2):
        super().__init__(daemon=True)
        self.pid, self.interval, self.stop_ = pid, interval, threading.Event()
        self.peak_pss = self.peak_rss_sum = self.peak_rss_one = 0; self.n_procs = 0
        self.peak_gpu_mib = self.peak_gpu_mib_own = None
        self.pids = {pid}
        self.gpu = bool(shutil.which('nvidia-smi')) and torch.cuda.is_available()
    def run(self):
        import psutil
        try: root = psutil.Process(self.pid)
        except psutil.NoSuchProcess: return
        while not self.stop_.is_set():
            try: procs = [root] + root.children(recursive=True)
            except psutil.NoSuchProcess: break
            self.pids |= {p.pid for p in procs}
            pss = rss = one = 0
            for p in procs:
                try:
                    m = p.memory_full_info()
                    pss += getattr(m, 'pss', m.rss); rss += m.rss; one = max(one, m.rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied): pass
            self.peak_pss, self.peak_rss_sum = max(self.peak_pss, pss), max(self.peak_rss_sum, rss)
            self.peak_rss_one, self.n_procs = max(self.peak_rss_one, one), max(self.n_procs, len(procs))
            if self.gpu:
                dev = gpu_used_mib()
                if dev is not None: self.peak_gpu_mib = max(self.peak_gpu_mib or 0, dev)
                own = [m for p, m in gpu_used_by_pid().items() if p in self.pids]
                if own: self.peak_gpu_mib_own = max(self.peak_gpu_mib_own or 0, sum(own))
            self.stop_.wait(self.interval)

def kill_tree(pid: int, extra=(), sig=signal.SIGKILL):
    """Stop the job `pid` started in a session of its own: its process group, then every descendant by pid (a Jupyter
    kernel runs in a session of its own, outside the group), and the pids in `extra` that the monitor saw."""
    pids = set(extra)
    try:
        import psutil
        pids |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
    except Exception: pass
    try: os.killpg(pid, sig)
    except OSError: pass
    for p in sorted(pids - {pid}):
        try: os.kill(p, sig)
        except OSError: pass

CHILD = None   # (process, monitor) of the job `run_monitored` is waiting for, so that a SIGTERM can take it down too

def run_monitored(cmd, env, log_path: Path, timeout: float) -> dict:
    """Run `cmd` in the folder of `log_path` (so nothing it writes by default lands in the repository), in a session of
    its own, watching its memory; on the timeout, or when this process is interrupted, its whole tree is stopped."""
    global CHILD
    t = time.perf_counter()
    killed = None
    with open(log_path, 'w') as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=log_path.parent,
                                start_new_session=True)
        mon = None
        try:
            import psutil  # noqa: F401
            mon = TreeMonitor(proc.pid); mon.start()
        except ImportError: pass
        CHILD = (proc, mon)
        try:
            try: rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_tree(proc.pid, mon.pids if mon else ()); proc.wait(); rc, killed = 'timeout', 'timeout'
            # interrupted: take the whole job (papermill, kernel) down with us
            except BaseException:
                kill_tree(proc.pid, mon.pids if mon else (), signal.SIGTERM); time.sleep(0.5)
                kill_tree(proc.pid, mon.pids if mon else ()); proc.wait(); raise
        finally:
            CHILD = None
            if mon: mon.stop_.set(); mon.join()
    out = dict(cmd=' '.join(map(str, cmd)), rc=rc, wall=time.perf_counter() - t, log=str(log_path), killed=killed)
    if mon: out.update(peak_pss_mb=mon.peak_pss / 2**20, peak_rss_sum_mb=mon.peak_rss_sum / 2**20,
                       peak_rss_one_mb=mon.peak_rss_one / 2**20, processes=mon.n_procs, peak_gpu_mib=mon.peak_gpu_mib,
                       peak_gpu_mib_own=mon.peak_gpu_mib_own)
    return out

def stop_child():
    "Take down the job `run_monitored` is waiting for, if any is still running, with its whole tree (on SIGTERM)."
    if CHILD is not None:
        proc, mon = CHILD
        kill_tree(proc.pid, mon.pids if mon else ())

def sub_env(cache: Path) -> dict:
    env = dict(os.environ, MINISWEEP_CACHE=str(cache), HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1')
    env['PATH'] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env

def read_builds(cache: Path) -> list:
    p = cache / 'builds.jsonl'
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()] if p.exists() else []

def run_times(out: Path) -> list:
    "Per run of a sweep folder: its wall seconds (sweep.json), training seconds and images/s (log.jsonl)."
    rows = []
    try: runs = json.loads((out / 'sweep.json').read_text()).get('runs', {})
    except (OSError, ValueError): return rows
    for key, r in runs.items():
        logs = [json.loads(l) for l in (out / r.get('run_dir', key) / 'log.jsonl').read_text().splitlines()
                if l.strip()] \
            if (out / r.get('run_dir', key) / 'log.jsonl').exists() else []
        seen = [l.get('images_per_second') for l in logs]
        rows.append(dict(run=key, seconds=r.get('seconds'), epochs=logs[-1]['epoch'] if logs else 0,
                         epoch_seconds=sum(l.get('seconds', 0) for l in logs),
                         images_per_second=statistics.median(seen) if seen and None not in seen else None))
    return rows
