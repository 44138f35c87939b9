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

class TreeMonitor(threading.Thread):
    "Peak memory of a process and all its descendants, polled: sum of PSS (shared pages counted once), largest RSS."
    def __init__(self, pid, interval=0.2):
        super().__init__(daemon=True)
        self.pid, self.interval, self.stop_ = pid, interval, threading.Event()
        self.peak_pss = self.peak_rss_sum = self.peak_rss_one = 0; self.peak_gpu_mib = None; self.n_procs = 0
    def run(self):
        import psutil
        try: root = psutil.Process(self.pid)
        except psutil.NoSuchProcess: return
        while not self.stop_.is_set():
            try: procs = [root] + root.children(recursive=True)
            except psutil.NoSuchProcess: break
            pss = rss = one = 0
            for p in procs:
                try:
                    m = p.memory_full_info()
                    pss += getattr(m, 'pss', m.rss); rss += m.rss; one = max(one, m.rss)
                except (psutil.NoSuchProcess, psutil.AccessDenied): pass
            self.peak_pss, self.peak_rss_sum = max(self.peak_pss, pss), max(self.peak_rss_sum, rss)
            self.peak_rss_one, self.n_procs = max(self.peak_rss_one, one), max(self.n_procs, len(procs))
            if shutil.which('nvidia-smi') and torch.cuda.is_available():
                try:
                    used = subprocess.run(['nvidia-smi', '--query-gpu=memory.used', '--format=csv,noheader,nounits'],
                                          capture_output=True, text=True, timeout=5).stdout.split()
                    self.peak_gpu_mib = max(self.peak_gpu_mib or 0, max(map(float, used)))
                except Exception: pass
            self.stop_.wait(self.interval)

CHILD = None   # the job `run_monitored` is waiting for, so that a SIGTERM can take it down too

def run_monitored(cmd, env, log_path: Path, timeout: float) -> dict:
    "Run `cmd` in the folder of `log_path` (so nothing it writes by default lands in the repository), watching its memory."
    global CHILD
    t = time.perf_counter()
    with open(log_path, 'w') as f:
        proc = CHILD = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=log_path.parent, start_new_session=True)
        mon = None
        try:
            import psutil  # noqa: F401
            mon = TreeMonitor(proc.pid); mon.start()
        except ImportError: pass
        try: rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL); proc.wait(); rc = 'timeout'
        except BaseException:                               # interrupted: take the whole job (papermill, kernel) down with us
            os.killpg(proc.pid, signal.SIGTERM); proc.wait(); raise
        if mon: mon.stop_.set(); mon.join()
    out = dict(cmd=' '.join(map(str, cmd)), rc=rc, wall=time.perf_counter() - t, log=str(log_path))
    if mon: out.update(peak_pss_mb=mon.peak_pss / 2**20, peak_rss_sum_mb=mon.peak_rss_sum / 2**20,
                       peak_rss_one_mb=mon.peak_rss_one / 2**20, processes=mon.n_procs, peak_gpu_mib=mon.peak_gpu_mib)
    return out

def stop_child():
    "Take down the job `run_monitored` is waiting for, if any is still running (on SIGTERM)."
    if CHILD is not None and CHILD.poll() is None:
        try: os.killpg(CHILD.pid, signal.SIGTERM)
        except OSError: pass

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
        logs = [json.loads(l) for l in (out / r.get('run_dir', key) / 'log.jsonl').read_text().splitlines() if l.strip()] \
            if (out / r.get('run_dir', key) / 'log.jsonl').exists() else []
        seen = [l.get('images_per_second') for l in logs]
        rows.append(dict(run=key, seconds=r.get('seconds'), epochs=logs[-1]['epoch'] if logs else 0, epoch_seconds=sum(l.get('seconds', 0) for l in logs),
                         images_per_second=statistics.median(seen) if seen and None not in seen else None))
    return rows
