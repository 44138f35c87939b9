"""Timing a measurement on a shared machine: timed repeats, warm-up, and how much *other* work ran meanwhile.

A measurement is a fixed number of steps timed `repeats` times (the median is the number); loops that are compared run
their repeats round-robin, and `round_ratios` compares them round by round, over the quiet rounds where there are
some."""
import functools, os, statistics, time
from pathlib import Path

import torch


def sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)

def timed(fn, steps, device) -> float:
    sync(device); t = time.perf_counter(); fn(steps); sync(device)
    return time.perf_counter() - t

def timed_c(fn, steps, device) -> tuple:
    "`timed`, and the cores other processes used meanwhile."
    with Contention() as c: t = timed(fn, steps, device)
    return t, c.other_cores

def warm_up(fn, device, min_steps: int, min_seconds: float) -> float:
    "Run `fn` one step at a time until both minimums are met; seconds per step of the last half of the warm-up."
    times, t_all = [], time.perf_counter()
    while len(times) < min_steps or time.perf_counter() - t_all < min_seconds:
        times.append(timed(fn, 1, device))
        if len(times) >= 200: break
    tail = times[len(times) // 2:]
    return sum(tail) / len(tail)

def pick_steps(per_step: float, args) -> int:
    "Steps of one timed repeat: about `args.seconds` at `per_step` seconds a step."
    return int(max(1, min(2000, round(args.seconds / max(per_step, 1e-6)))))

def _busy_seconds() -> float:
    "CPU seconds all processes of the machine have used since boot (from /proc/stat; 0 where there is none)."
    try: f = [int(v) for v in Path('/proc/stat').read_text().split('\n', 1)[0].split()[1:]]
    except (OSError, ValueError): return 0.0
    return (sum(f[:8]) - f[3] - f[4]) / os.sysconf('SC_CLK_TCK')      # all but idle and iowait (guest is inside user)

def _own_cpu_seconds() -> float:
    "CPU seconds of this process, its finished children and its live descendants (DataLoader workers, subprocesses)."
    t = os.times(); own = t[0] + t[1] + t[2] + t[3]
    try:
        import psutil
        for c in psutil.Process().children(recursive=True):
            try: ct = c.cpu_times(); own += ct.user + ct.system
            except psutil.Error: pass
    except ImportError: pass
    return own

QUIET = 0.25   # a timed repeat is 'quiet' when other processes used fewer cores than this on average

class Contention:
    """How busy the machine was with *other* work while a block ran: CPU cores used by other processes, and the load
    average."""
    def __enter__(self):
        self.t0, self.busy0, self.own0 = time.perf_counter(), _busy_seconds(), _own_cpu_seconds()
        self.load0 = os.getloadavg()[0]; return self
    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        own = _own_cpu_seconds() - self.own0
        self.other_cores = max(0.0, (_busy_seconds() - self.busy0 - own) / max(wall, 1e-9))
        self.load = max(self.load0, os.getloadavg()[0])
    def snapshot(self) -> dict:
        "`as_dict` of the block so far, without ending it."
        self.__exit__(None, None, None); return self.as_dict()
    def as_dict(self): return dict(other_cores=round(self.other_cores, 2), load1=round(self.load, 2))

def contended(measure):
    "`measure(...)`'s result dict, with the `contention` of the machine while it ran."
    @functools.wraps(measure)
    def run(*a, **kw):
        with Contention() as c: out = measure(*a, **kw)
        out['contention'] = c.as_dict(); return out
    return run

class Result(dict):
    "Images/s of the repeats of one measurement; the median is the number."
    @classmethod
    def of(cls, name, times, steps, bs, other=None, **extra):
        ips = [steps * bs / t for t in times]
        return cls(name=name, steps=steps, batch_size=bs, seconds=times, ips_all=ips, ips=statistics.median(ips),
                   other_cores=other or [], **extra)

def round_ratios(a: dict, b: dict) -> dict:
    """Ratio a/b of images/s round by round (the repeats of a and b ran in the same round, one after the other):
    the median over all rounds, and over the quiet rounds only (both repeats under `QUIET` other cores)."""
    pairs = list(zip(a['ips_all'], b['ips_all'], a['other_cores'] or [0] * len(a['ips_all']), b['other_cores']
                     or [0] * len(b['ips_all'])))
    quiet = [x / y for x, y, oa, ob in pairs if max(oa, ob) < QUIET]
    return dict(all=statistics.median([x / y for x, y, _, _ in pairs]), quiet=statistics.median(quiet) if quiet
                else None,
                n=len(pairs), n_quiet=len(quiet))
