"""The machine and the versions a benchmark ran with, and the benchmark's log line.

Every benchmark entry point imports this module first: it keeps the benchmark offline (the Hub is never asked)."""
import datetime, os, platform, subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / 'shared/data/tiny-imagenet-100'
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')

import numpy as np
import torch


def log(*a):
    print(*a, flush=True)

def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'): return line.split(':', 1)[1].strip()
    except OSError: pass
    return platform.processor() or platform.machine()

def n_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else (os.cpu_count() or 1)

def mem_gib() -> float:
    try:
        import psutil; return psutil.virtual_memory().total / 2**30
    except ImportError: return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30

def git_commit() -> str:
    try:
        r = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True, text=True,
                           timeout=10)
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=REPO, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        return r.stdout.strip() + (' (with uncommitted changes)' if dirty else '') if r.returncode == 0 else '?'
    except Exception: return '?'

def machine_info(device: torch.device) -> dict:
    import datasets, torchvision, PIL, minisweep
    from minisweep.train import bf16_supported
    gpu = torch.cuda.get_device_name(device) if device.type == 'cuda' else 'none'
    return dict(cpu=cpu_model(), cores=n_cores(), memory_gib=round(mem_gib(), 1), gpu=gpu, device=str(device),
                bf16_autocast=bf16_supported(device), torch_threads=torch.get_num_threads(),
                python=platform.python_version(), torch=torch.__version__, torchvision=torchvision.__version__,
                datasets=datasets.__version__, numpy=np.__version__, pillow=PIL.__version__,
                minisweep=minisweep.__version__, commit=git_commit(), platform=platform.platform(),
                date=datetime.datetime.now().isoformat(timespec='seconds'))

def set_up(device: torch.device) -> torch.device:
    """`device` set up as `train_run` sets it up: every core on the CPU; cuDNN autotune and TF32 on CUDA. The one copy
    in the benchmark of the training chapter's lines, until that chapter exports them as a function of their own."""
    if device.type == 'cpu': torch.set_num_threads(n_cores())
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        if device.index is not None: torch.cuda.set_device(device)
    return device

def open_device(name: str) -> torch.device:
    "The device of `--device` (minisweep's `resolve_device`: a `UserError` when it is not there), set up."
    from minisweep.train import resolve_device
    return set_up(resolve_device(name))
