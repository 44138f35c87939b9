#!/usr/bin/env python
"""minisweep benchmark: is the sweep bound by the accelerator, not by JPEG decoding?

Measured side by side, in one run, on one machine, with the same model, batch and image size:

1. training images/s of minisweep's own loop (`prepare_data` + `make_optimizer` + `_epoch`, as `train_run` calls them)
   against a bare PyTorch loop on synthetic tensors already on the device (the ceiling);
2. the same against a seed-style pipeline (HF dataset + PIL decode + torchvision transforms + DataLoader), on the
   64 px data and on a copy of a slice of it re-encoded as 500x375 JPEGs (Mini-ImageNet's usual size), and the
   data pipelines alone (the model removed);
3. the cost of decoding once (`decoded_split` into a fresh cache) and the proof that a sweep decodes each split once;
4. the demo's wall time and peak memory;
5. the peak memory of one training run over the whole split, at 64 px and at 227 px (a 9.6 GB cache), against
   the cache plus the model.

It prints everything and writes BENCHMARKS.md (and bench/out/bench.json). Run it with `make bench` or
`.venv/bin/python bench/bench.py`; `--quick` is a smoke run of about a minute. bench/device_check.sh checks the GPU path on a CUDA machine.
"""
from __future__ import annotations
import argparse, datetime, gc, io, itertools, json, os, platform, shutil, signal, statistics, subprocess, sys, threading, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(__file__).resolve().parents[2] / 'shared/data/tiny-imagenet-100'
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('HF_DATASETS_OFFLINE', '1')

import numpy as np
import torch
from torch import nn

# --------------------------------------------------------------------------------------------------------------------
# command line

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--dataset', default=str(DEFAULT_DATA), help='the 64 px dataset (timm/mini-imagenet layout)')
    p.add_argument('--models', nargs='+', default=['alexnet', 'resnet18'])
    p.add_argument('--image-sizes', nargs='+', type=int, default=[64, 227],
                   help='sizes above 64 train on the 500x375 re-encoded copy')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    p.add_argument('--quick', action='store_true',
                   help='CI-sized smoke run: 1 step per measurement, training rows at the smallest size only, no sweep or demo')
    p.add_argument('--compile', action='store_true', help='also measure minisweep and the bare loop under torch.compile')
    p.add_argument('--repeats', type=int, default=None, help='timed repeats per measurement (median reported); default 5, quick 1')
    p.add_argument('--seconds', type=float, default=None, help='target seconds of one timed repeat; default 2, quick 0.5')
    p.add_argument('--copy-per-class', type=int, default=None,
                   help='training images per class in the 500x375 copy; default 20 (2,000 images), quick 2')
    p.add_argument('--before', action='store_true',
                   help='on the CPU, also time minisweep as it was before the CPU fixes (batched gather + normalize, '
                        'for-loop SGD) and the bare loop with that SGD, in the same rounds')
    p.add_argument('--no-seed', action='store_true', help='skip the seed-style pipeline with the model')
    p.add_argument('--no-sweep', action='store_true', help='skip the decode-once sweep check (skipped by --quick unless --sweep)')
    p.add_argument('--no-demo', action='store_true', help='skip the demo run (skipped by --quick unless --demo)')
    p.add_argument('--sweep', action='store_true', help='run the sweep check even with --quick')
    p.add_argument('--demo', action='store_true', help='run the demo even with --quick')
    p.add_argument('--no-memory', action='store_true', help='skip the memory check of one training run on the whole split '
                   '(skipped by --quick unless --memory)')
    p.add_argument('--memory', action='store_true', help='run the memory check even with --quick')
    p.add_argument('--memory-sizes', nargs='+', type=int, default=None,
                   help='image sizes of the memory check (default 64 227: at 227 px the cache is 9.6 GB, near the real study\'s 11.5 GB; '
                        'quick: 64)')
    p.add_argument('--work-dir', default=str(REPO / 'bench/out'), help='caches, the 500x375 copy, runs (never committed)')
    p.add_argument('--out', default=str(REPO / 'BENCHMARKS.md'))
    p.add_argument('--json', default=None, help='raw results; default WORK_DIR/bench.json')
    p.add_argument('--render', default=None, metavar='JSON', help='measure nothing: write --out again from the results of an earlier run')
    a = p.parse_args(argv)
    a.repeats = a.repeats or (1 if a.quick else 5)
    a.seconds = a.seconds or (0.5 if a.quick else 2.0)
    a.copy_per_class = a.copy_per_class or (2 if a.quick else 20)
    if a.quick: a.no_sweep, a.no_demo, a.before = a.no_sweep or not a.sweep, a.no_demo or not a.demo, False
    if a.quick: a.no_memory = a.no_memory or not a.memory
    a.memory_sizes = a.memory_sizes or ([64] if a.quick else [64, 227])
    if a.batch_size < 1: p.error('--batch-size must be at least 1')
    return a

def log(*a):
    print(*a, flush=True)

# --------------------------------------------------------------------------------------------------------------------
# machine and versions

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
        r = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
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

# --------------------------------------------------------------------------------------------------------------------
# the 500x375 copy

def make_large_copy(src: str, dst: Path, per_class: dict, size=(500, 375), sigma=12.0, quality=90, seed=0) -> Path:
    """A class-balanced slice of `src` re-encoded as `size` JPEGs, in the same layout (data/<split>-*.parquet).

    The 64 px originals are upscaled (bicubic) and given mild Gaussian noise (`sigma`) so that the files have roughly
    the entropy of real photographs (about 70 KB at quality 90) rather than compressing to a blur: the decoder then
    does the work it does on Mini-ImageNet's ~500x375 originals. Reused when already made with the same parameters."""
    import datasets
    from PIL import Image
    from minisweep.data import load_splits
    spec = dict(src=str(src), per_class=per_class, size=list(size), sigma=sigma, quality=quality, seed=seed, v=1)
    marker = dst / 'copy.json'
    if marker.exists() and json.loads(marker.read_text()).get('spec') == spec: return dst
    shutil.rmtree(dst, ignore_errors=True); (dst / 'data').mkdir(parents=True)
    splits = load_splits(src, tuple(per_class))
    rng = np.random.default_rng(seed)
    nbytes = []
    for split, k in per_class.items():
        s = splits[split]
        raw = s.ds.cast_column('image', datasets.Image(decode=False))
        idx = np.concatenate([np.sort(rng.choice(np.flatnonzero(s.labels == c), min(k, int((s.labels == c).sum())), replace=False))
                              for c in range(len(s.classes)) if (s.labels == c).any()])
        images = []
        for row in raw.select(idx.tolist())['image']:
            im = Image.open(io.BytesIO(row['bytes'])).convert('RGB').resize(size, Image.BICUBIC)
            a = np.asarray(im, dtype=np.float32) + rng.normal(0, sigma, (size[1], size[0], 3)).astype(np.float32)
            buf = io.BytesIO(); Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(buf, 'JPEG', quality=quality)
            images.append({'bytes': buf.getvalue(), 'path': None}); nbytes.append(len(buf.getvalue()))
        feats = datasets.Features({'image': datasets.Image(), 'label': datasets.ClassLabel(names=s.classes)})
        datasets.Dataset.from_dict({'image': images, 'label': s.labels[idx].tolist()}, features=feats) \
            .to_parquet(str(dst / 'data' / f'{split}-00000-of-00001.parquet'))
    marker.write_text(json.dumps(dict(spec=spec, mean_kb=float(np.mean(nbytes)) / 1024)))
    return dst

# --------------------------------------------------------------------------------------------------------------------
# timing

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
    "How busy the machine was with *other* work while a block ran: CPU cores used by other processes, and the load average."
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
    pairs = list(zip(a['ips_all'], b['ips_all'], a['other_cores'] or [0] * len(a['ips_all']), b['other_cores'] or [0] * len(b['ips_all'])))
    quiet = [x / y for x, y, oa, ob in pairs if max(oa, ob) < QUIET]
    return dict(all=statistics.median([x / y for x, y, _, _ in pairs]), quiet=statistics.median(quiet) if quiet else None,
                n=len(pairs), n_quiet=len(quiet))

# --------------------------------------------------------------------------------------------------------------------
# the three training loops

class MinisweepLoop:
    "minisweep's own code path: `prepare_data`, `create_model`, `make_optimizer` and `_epoch`, set up as `train_run` does."
    def __init__(self, cfg, device, before=False):
        from minisweep.train import prepare_data, run_length, make_optimizer, compile_model
        from minisweep.models import create_model
        self.cfg, self.device = cfg, device
        torch.manual_seed(cfg.seed); np.random.seed(cfg.seed)
        self.data = prepare_data(cfg, device)
        length = run_length(self.data['n_train'], cfg)
        model = create_model(cfg.model, len(self.data['classes']), cfg.image_size).to(device)
        if self.data['train'].channels_last: model = model.to(memory_format=torch.channels_last)
        self.opt, self.sched = (old_optimizer if before else make_optimizer)(model, cfg, length['total_steps'], length['warmup_steps'], device)
        if before: patch_batches_before(self.data['train'])
        self.crit = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.model = compile_model(model) if cfg.compile else model
        self.n_classes, self.channels_last = len(self.data['classes']), self.data['train'].channels_last
        self.epoch, self.stream, self.last = 0, self._stream(), None

    def _stream(self):
        "The training batches of epoch after epoch (a timed repeat may cross an epoch boundary, as a long run does)."
        b = self.data['train']
        while True:
            self.epoch += 1; b.set_epoch(self.cfg.seed, self.epoch)
            yield from b

    def train(self, steps):
        from minisweep.train import _epoch
        from tqdm.auto import tqdm
        with tqdm(total=steps * self.cfg.batch_size, disable=True) as bar:
            self.last = _epoch(self.model, itertools.islice(self.stream, steps), self.opt, self.sched, self.crit,
                               self.device, self.cfg.bf16, bar)

    def batches(self, steps):
        "The data path alone: `Batches` cut, moved, cropped, flipped and normalised, no model."
        for x, y, n in itertools.islice(self.stream, steps): pass

def old_optimizer(model, cfg, total_steps, warmup_steps, device):
    "BEFORE, not minisweep's current code: `make_optimizer` as it was, a for-loop SGD (`foreach=False`) on the CPU."
    from minisweep.train import param_groups, lr_factor
    opt = torch.optim.SGD(param_groups(model, cfg.weight_decay), lr=cfg.lr, momentum=cfg.momentum,
                          nesterov=cfg.momentum > 0, foreach=False)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total_steps, warmup_steps))

def old_batch(images, idx, size, gen):
    "BEFORE: the CPU batch as minisweep cut it until the fix: `normalize(crop_flip(images[idx]), channels_last=False)`."
    from minisweep.data import crop_flip, normalize
    return normalize(crop_flip(images[idx], size, gen), False)

def patch_batches_before(b):
    "BEFORE: make this `Batches` cut its CPU batches the old way (bit-identical batches, only slower)."
    orig = b._batch
    def _batch(idx, gen):
        if b.images.device.type != 'cpu' or b.device.type != 'cpu' or b.channels_last: return orig(idx, gen)
        return old_batch(b.images, idx, b.image_size, gen), b.labels[idx]
    b._batch = _batch

class BareLoop:
    "The ceiling: the same model, optimizer settings, autocast and memory format on one synthetic batch already on the device."
    def __init__(self, cfg, device, n_classes, channels_last, like: torch.optim.Optimizer):
        from minisweep.models import create_model
        from minisweep.train import autocast
        self.device, self.autocast, self.bf16 = device, autocast, cfg.bf16
        torch.manual_seed(cfg.seed)
        model = create_model(cfg.model, n_classes, cfg.image_size).to(device)
        mf = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(memory_format=mf)
        extra = dict(fused=like.defaults.get('fused'), foreach=like.defaults.get('foreach'))   # the kernel minisweep's SGD uses
        self.sgd = 'fused' if extra['fused'] else 'foreach' if extra['foreach'] else 'for-loop'
        self.opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
                                   weight_decay=cfg.weight_decay, **extra)
        self.crit = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        self.model = torch.compile(model, dynamic=False) if cfg.compile else model
        self.x = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=device).contiguous(memory_format=mf)
        self.y = torch.randint(0, n_classes, (cfg.batch_size,), device=device)
        self.last = None

    def step(self, x, y):
        with self.autocast(self.device, self.bf16):
            loss = self.crit(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss

    def train(self, steps):
        self.model.train()
        for _ in range(steps): loss = self.step(self.x, self.y)
        self.last = loss.detach()

class SeedSet(torch.utils.data.Dataset):
    "Seed style: a Hugging Face dataset decoded by PIL on every access, then torchvision transforms."
    def __init__(self, path, image_size):
        import datasets, torchvision.transforms as T
        from minisweep.data import stored_size, IMAGENET_MEAN, IMAGENET_STD
        datasets.logging.set_verbosity_error(); datasets.disable_progress_bars()
        self.ds = datasets.load_dataset(str(path), split='train')
        self.tf = T.Compose([T.Resize(stored_size(image_size)), T.RandomCrop(image_size), T.RandomHorizontalFlip(),
                             T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    def __len__(self): return len(self.ds)
    def __getitem__(self, i):
        ex = self.ds[int(i)]
        return self.tf(ex['image'].convert('RGB')), ex['label']

class SeedLoop:
    "The seed-style pipeline: DataLoader with one worker per core (pinned memory on CUDA), optionally feeding the model."
    def __init__(self, path, cfg, device, bare: BareLoop | None, workers: int):
        self.device, self.bare, self.cl = device, bare, bare is not None and bare.x.is_contiguous(memory_format=torch.channels_last)
        ds = SeedSet(path, cfg.image_size)
        sampler = torch.utils.data.RandomSampler(ds, num_samples=10**8, generator=torch.Generator().manual_seed(cfg.seed))
        self.loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=workers,
                                                  pin_memory=device.type == 'cuda', drop_last=True,
                                                  persistent_workers=workers > 0)
        self.it = iter(self.loader)

    def _next(self):
        x, y = next(self.it)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.cl: x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def train(self, steps):
        self.bare.model.train()
        for _ in range(steps): loss = self.bare.step(*self._next())
        self.bare.last = loss.detach()

    def batches(self, steps):
        for _ in range(steps): self._next()

    def close(self):
        del self.it, self.loader; gc.collect()

# --------------------------------------------------------------------------------------------------------------------
# measurements

def make_cfg(args, model, size, dataset, device, compile=False):
    from minisweep.train import TrainConfig
    return TrainConfig(model=model, subset_size=1.0, seed=0, dataset=str(dataset), image_size=size, num_epochs=90,
                       batch_size=args.batch_size, device=str(device), bf16=True, channels_last=True, compile=compile,
                       cache_on_device=True, progress=False).check()

def pick_steps(per_step: float, args) -> int:
    return int(max(1, min(2000, round(args.seconds / max(per_step, 1e-6)))))

def measure_training(*a, **kw) -> dict:
    with Contention() as c: out = _measure_training(*a, **kw)
    out['contention'] = c.as_dict(); return out

def _measure_training(args, model_name, size, dataset, device, compile=False) -> dict:
    """minisweep vs bare, repeats interleaved round-robin (so drift and other load hit every loop alike); on the CPU also
    the before-the-fixes pair with `--before` (minisweep as it was, bare with its SGD); then the seed-style pipeline, same model."""
    cfg = make_cfg(args, model_name, size, dataset, device, compile)
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)
    ms = MinisweepLoop(cfg, device)
    loops = dict(bare=BareLoop(cfg, device, ms.n_classes, ms.channels_last, ms.opt), minisweep=ms)
    if args.before and device.type == 'cpu' and not compile:
        old = MinisweepLoop(cfg, device, before=True)
        loops['bare_before'] = BareLoop(cfg, device, ms.n_classes, ms.channels_last, old.opt)
        loops['minisweep_before'] = old
    warm_steps, warm_s = (1, 0.0) if args.quick else (3, 2.0)
    if compile: warm_steps = max(warm_steps, 3)
    per_step = {k: warm_up(l.train, device, warm_steps, warm_s) for k, l in loops.items()}
    steps = pick_steps(per_step['bare'], args)
    times, other = {k: [] for k in loops}, {k: [] for k in loops}
    for r in range(args.repeats):
        for k, l in loops.items():
            t, oc = timed_c(l.train, steps, device); times[k].append(t); other[k].append(oc)
    out = dict(model=model_name, image_size=size, dataset=Path(dataset).name, compile=compile,
               channels_last=ms.channels_last, bf16=cfg.bf16, lr=cfg.lr, sgd=loops['bare'].sgd)
    for k, l in loops.items():
        out[k] = Result.of(k, times[k], steps, cfg.batch_size, other[k], loss=float(l.last if isinstance(l, BareLoop) else l.last[0]))
    out['ratio_minisweep_bare'] = out['minisweep']['ips'] / out['bare']['ips']
    out['rounds_minisweep_bare'] = round_ratios(out['minisweep'], out['bare'])
    log(f"  {model_name} {size}px{' compile' if compile else ''}: bare {out['bare']['ips']:.1f} img/s, "
        f"minisweep {out['minisweep']['ips']:.1f} img/s, ratio {out['ratio_minisweep_bare']:.3f} ({steps} steps x {args.repeats})")
    if 'bare_before' in out:
        out['rounds_before_bare_before'] = round_ratios(out['minisweep_before'], out['bare_before'])
        out['rounds_now_before'] = round_ratios(out['minisweep'], out['minisweep_before'])
        log(f"  {model_name} {size}px before the CPU fixes: bare ({loops['bare_before'].sgd} SGD) {out['bare_before']['ips']:.1f} img/s, "
            f"minisweep {out['minisweep_before']['ips']:.1f} img/s; minisweep now / before {out['rounds_now_before']['all']:.2f}x")
    del loops; gc.collect()
    if not args.no_seed and not compile:
        seed_bare = BareLoop(cfg, device, ms.n_classes, ms.channels_last, ms.opt)      # a fresh model for the seed loop
        seed = SeedLoop(dataset, cfg, device, seed_bare, n_cores())
        try:
            warm_up(seed.train, device, max(warm_steps, 2), warm_s)
            tc = [timed_c(seed.train, steps, device) for _ in range(args.repeats)]
        finally: seed.close()
        out['seed'] = Result.of('seed', [t for t, _ in tc], steps, cfg.batch_size, [o for _, o in tc], loss=float(seed_bare.last))
        out['ratio_minisweep_seed'] = out['minisweep']['ips'] / out['seed']['ips']
        log(f"  {model_name} {size}px: seed-style {out['seed']['ips']:.1f} img/s, minisweep/seed {out['ratio_minisweep_seed']:.2f}x")
        del seed_bare
    if device.type == 'cuda': out['max_memory_allocated_gib'] = torch.cuda.max_memory_allocated(device) / 2**30
    del ms; gc.collect()
    return out

def measure_data_only(*a, **kw) -> dict:
    with Contention() as c: out = _measure_data_only(*a, **kw)
    out['contention'] = c.as_dict(); return out

def _measure_data_only(args, size, dataset, device) -> dict:
    "Images/s of the data paths alone: the seed-style DataLoader vs minisweep's Batches from the cache."
    cfg = make_cfg(args, args.models[0], size, dataset, device)
    ms = MinisweepLoop(cfg, device)
    warm_up(ms.batches, device, 3, 0.0 if args.quick else 1.0)
    per = warm_up(ms.batches, device, 3, 0.0)
    steps_ms = pick_steps(per, args)
    tc_ms = [timed_c(ms.batches, steps_ms, device) for _ in range(args.repeats)]
    del ms; gc.collect()
    seed = SeedLoop(dataset, cfg, device, None, n_cores())
    try:
        warm_up(seed.batches, device, 2 * n_cores() + 2, 0.0 if args.quick else 2.0)
        per = warm_up(seed.batches, device, 4, 0.0)
        steps_seed = pick_steps(per, args)
        tc_seed = [timed_c(seed.batches, steps_seed, device) for _ in range(args.repeats)]
    finally: seed.close()
    out = dict(image_size=size, dataset=Path(dataset).name, workers=n_cores(),
               seed=Result.of('seed loader', [t for t, _ in tc_seed], steps_seed, cfg.batch_size, [o for _, o in tc_seed]),
               minisweep=Result.of('minisweep batches', [t for t, _ in tc_ms], steps_ms, cfg.batch_size, [o for _, o in tc_ms]))
    out['ratio'] = out['minisweep']['ips'] / out['seed']['ips']
    log(f"  data only {size}px ({out['dataset']}): seed loader {out['seed']['ips']:.0f} img/s, "
        f"minisweep batches {out['minisweep']['ips']:.0f} img/s, {out['ratio']:.1f}x")
    return out

def measure_decode(dataset, size, root: Path) -> list:
    "Build the caches of train and validation at `size` into `root` (fresh) and time them."
    from minisweep.data import load_splits, decoded_split
    rows = []
    splits = load_splits(str(dataset), ('train', 'validation'))
    for name, split in splits.items():
        t = time.perf_counter()
        c = decoded_split(split, size, root=root, progress=False)
        wall = time.perf_counter() - t
        assert c.decoded, f'{c.path} was not decoded afresh'
        rows.append(dict(dataset=Path(dataset).name, split=name, n=len(c), stored_px=size, seconds=c.seconds, wall=wall,
                         ips=len(c) / c.seconds, cache_mb=c.path.stat().st_size / 2**20))
        log(f"  decode {Path(dataset).name} {name}: {len(c)} images at {size}px in {c.seconds:.1f}s = {len(c) / c.seconds:.0f} img/s")
    return rows

def data_breakdown(args, size, dataset, reps=15) -> dict:
    """Where the CPU batch time goes: minisweep's `cpu_batch` against the old path and its steps, each alone, timed as
    single-thread CPU time (`time.thread_time`, median of `reps`), which other processes on the machine barely disturb."""
    from minisweep.data import load_splits, decoded_split, crop_flip, normalize, stored_size
    import minisweep.data as md
    if not hasattr(md, 'cpu_batch'): return None
    c = decoded_split(load_splits(str(dataset), ('train',))['train'], stored_size(size), progress=False)
    images = torch.from_numpy(c.images)                    # what `device_images` returns on the CPU: the memory map itself
    bs = min(args.batch_size, len(c))
    rng = torch.Generator().manual_seed(1)
    prev = torch.get_num_threads(); torch.set_num_threads(1)
    def cpu_ms(fn):
        fn(torch.randperm(len(c), generator=rng)[:bs], torch.Generator().manual_seed(0))
        ts = []
        for r in range(reps):
            idx, g = torch.randperm(len(c), generator=rng)[:bs], torch.Generator().manual_seed(r)
            t = time.thread_time(); fn(idx, g); ts.append(time.thread_time() - t)
        return statistics.median(ts) * 1e3
    try:
        xb = images[torch.arange(bs)]
        cf = crop_flip(xb, size, torch.Generator().manual_seed(0))
        parts = {'before: images[idx] (gather from the cache)': cpu_ms(lambda i, g: images[i]),
                 'before: crop_flip (advanced indexing; still the CUDA path)': cpu_ms(lambda i, g: crop_flip(xb, size, g)),
                 'before: normalize(channels_last=False)': cpu_ms(lambda i, g: normalize(cf, False)),
                 'before, whole batch: normalize(crop_flip(images[idx]))': cpu_ms(lambda i, g: old_batch(images, i, size, g)),
                 'now: cpu_batch (per-image crop view, one copy to float NCHW, in-place normalise)': cpu_ms(lambda i, g: md.cpu_batch(images, i, size, g))}
        i, g1, g2 = torch.arange(bs), torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        same = torch.equal(old_batch(images, i, size, g1), md.cpu_batch(images, i, size, g2))
    finally: torch.set_num_threads(prev)
    out = dict(image_size=size, dataset=Path(dataset).name, batch_size=bs, parts=parts, identical=same)
    log(f"  breakdown {size}px: " + ', '.join(f'{k.split(" (")[0]} {v:.1f} ms' for k, v in parts.items()) + f'; identical batches: {same}')
    return out

# --------------------------------------------------------------------------------------------------------------------
# subprocesses: the sweep (decode-once proof) and the demo (wall time, peak memory)

def minisweep_exe() -> str:
    exe = Path(sys.executable).parent / 'minisweep'
    return str(exe) if exe.exists() else (shutil.which('minisweep') or 'minisweep')

def has_command(cmd: str) -> tuple:
    try:
        r = subprocess.run([minisweep_exe(), cmd, '--help'], capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.TimeoutExpired) as e: return False, str(e)
    tail = (r.stderr or r.stdout).strip().splitlines()
    return r.returncode == 0, (tail[-1] if tail else f'exit status {r.returncode}')

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

_CHILD = None   # the job `run_monitored` is waiting for, so that a SIGTERM can take it down too

def run_monitored(cmd, env, log_path: Path, timeout: float) -> dict:
    "Run `cmd` in the folder of `log_path` (so nothing it writes by default lands in the repository), watching its memory."
    t = time.perf_counter()
    with open(log_path, 'w') as f:
        global _CHILD
        proc = _CHILD = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=log_path.parent, start_new_session=True)
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

def sub_env(cache: Path) -> dict:
    env = dict(os.environ, MINISWEEP_CACHE=str(cache), HF_HUB_OFFLINE='1', HF_DATASETS_OFFLINE='1')
    env['PATH'] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env

def read_builds(cache: Path) -> list:
    p = cache / 'builds.jsonl'
    return [json.loads(l) for l in p.read_text().splitlines() if l.strip()] if p.exists() else []

def sweep_check(args, dataset, work: Path) -> dict:
    ok, why = has_command('sweep')
    if not ok:
        log(f'  sweep not available ({why})'); return dict(available=False, why=why)
    cache, out = work / 'sweep-cache', work / 'sweep-run'
    for d in (cache, out): shutil.rmtree(d, ignore_errors=True)
    cmd = [minisweep_exe(), 'sweep', '--models', 'alexnet', 'resnet18', '--subset-sizes', '0.02', '0.01', '--seeds', '0',
           '--num-epochs', '1', '--batch-size', '64', '--image-size', '64', '--dataset', str(dataset), '--out', str(out),
           '--figures', str(work / 'sweep-figures')]
    with Contention() as c: r = run_monitored(cmd, sub_env(cache), work / 'sweep.log', timeout=1800)
    r['contention'] = c.as_dict()
    builds = read_builds(cache)
    r['run_times'] = run_times(out)
    per_file = {}
    for b in builds: per_file[b['file']] = per_file.get(b['file'], 0) + 1
    r.update(available=True, builds=len(builds), per_file=per_file, runs=4,
             once=bool(builds) and all(v == 1 for v in per_file.values()))
    log(f"  sweep: exit {r['rc']}, {r['wall']:.0f}s, builds.jsonl has {len(builds)} lines for {len(per_file)} cache files "
        f"({'each split decoded once' if r['once'] else 'NOT once per split'})")
    return r

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

def model_bytes(num_classes: int, size: int = 64) -> dict:
    from minisweep.models import create_model, n_params
    return {m: n_params(create_model(m, num_classes)) * 4 for m in ('alexnet', 'resnet18')}

def demo_check(args, work: Path) -> dict:
    ok, why = has_command('demo')
    if not ok:
        log(f'  demo not available ({why})'); return dict(available=False, why=why)
    cache, out = work / 'demo-cache', work / 'demo-run'
    for d in (cache, out): shutil.rmtree(d, ignore_errors=True)
    base = run_monitored([sys.executable, '-c', 'import torch, torchvision, datasets, papermill, minisweep.train'],
                         sub_env(cache), work / 'baseline.log', timeout=300)
    with Contention() as c:
        r = run_monitored([minisweep_exe(), 'demo', '--out', str(out), '--figures', str(work / 'demo-figures')],
                          sub_env(cache), work / 'demo.log', timeout=3600)
    r['contention'] = c.as_dict(); r['run_times'] = run_times(out)
    caches = sorted(cache.glob('*.npy'))
    from minisweep.data import load_splits, sample_dataset
    n_classes = len(load_splits(sample_dataset(), ('train',))['train'].classes)
    mb = model_bytes(n_classes)
    biggest = max(mb.values())
    r.update(available=True, cache_mb=sum(p.stat().st_size for p in caches) / 2**20, cache_files=[p.name for p in caches],
             builds=len(read_builds(cache)), params_mb={k: v / 2**20 for k, v in mb.items()},
             train_state_mb=3 * biggest / 2**20, baseline_rss_mb=base.get('peak_rss_one_mb'))
    r['target_mb'] = 1.5 * (r['cache_mb'] + r['train_state_mb'])
    log(f"  demo: exit {r['rc']}, {r['wall']:.0f}s, peak PSS of the process tree {r.get('peak_pss_mb', float('nan')):.0f} MB "
        f"(largest process RSS {r.get('peak_rss_one_mb', float('nan')):.0f} MB), cache {r['cache_mb']:.1f} MB, "
        f"model state {r['train_state_mb']:.0f} MB, target 1.5x = {r['target_mb']:.0f} MB; bare interpreter with torch "
        f"{r['baseline_rss_mb'] or float('nan'):.0f} MB")
    return r

def memory_check(args, dataset, work: Path) -> list:
    """Peak RSS of one `minisweep train` process on the whole training split (cache of real size), per image size and
    model, against the cache it maps plus the model: the memory target. Also the RSS of a process that only imports the
    same modules. At 227 px the 64 px images are decoded into a 259 px cache of nearly the real study's size (9.6 GB here,
    11.5 GB for Mini-ImageNet's train + validation), which is what the target is about; the pictures do not matter."""
    ok, why = has_command('train')
    if not ok:
        log(f'  train not available ({why})'); return [dict(available=False, why=why)]
    from minisweep.data import load_splits
    n_classes = len(load_splits(str(dataset), ('train',))['train'].classes)
    mb = model_bytes(n_classes)
    base = run_monitored([sys.executable, '-c', 'import torch, torchvision, datasets, minisweep.train, minisweep.cli'],
                         sub_env(work / 'mem-cache'), work / 'mem-baseline.log', timeout=300)
    rows = []
    for size, m in ((s, m) for s in args.memory_sizes for m in args.models):
        cache, out = work / 'mem-cache', work / f'mem-run-{m}-{size}'
        for d in (cache, out): shutil.rmtree(d, ignore_errors=True)
        cmd = [minisweep_exe(), 'train', '--model', m, '--subset-sizes', '1', '--num-epochs', '1', '--batch-size',
               str(args.batch_size), '--image-size', str(size), '--dataset', str(dataset), '--checkpoint-dir', str(out)]
        with Contention() as c: r = run_monitored(cmd, sub_env(cache), work / f'mem-{m}-{size}.log', timeout=5400)
        cache_mb = sum(q.stat().st_size for q in cache.glob('*.npy')) / 2**20
        params_mb = mb[m] / 2**20
        r.update(available=True, model=m, image_size=size, contention=c.as_dict(), cache_mb=cache_mb, params_mb=params_mb,
                 train_state_mb=3 * params_mb, baseline_rss_mb=base.get('peak_rss_one_mb'))
        peak, b0 = r.get('peak_rss_one_mb'), r['baseline_rss_mb']
        if peak is not None:
            r['ratio_params'] = peak / (cache_mb + params_mb)
            r['ratio_state'] = peak / (cache_mb + r['train_state_mb'])
            if b0 is not None:
                r['ratio_params_above_base'] = (peak - b0) / (cache_mb + params_mb)
                r['ratio_state_above_base'] = (peak - b0) / (cache_mb + r['train_state_mb'])
        log(f"  memory, {m} at {size} px: exit {r['rc']}, {r['wall']:.0f}s, peak RSS {fmt(peak, 0)} MB, caches {cache_mb:.0f} MB, "
            f"parameters {params_mb:.0f} MB; peak / (cache + parameters) {fmt(r.get('ratio_params'), 2)}, "
            f"above the import baseline ({fmt(b0, 0)} MB) {fmt(r.get('ratio_params_above_base'), 2)}")
        for d in (cache, out): shutil.rmtree(d, ignore_errors=True)   # 10 GB at 227 px: never leave it behind
        rows.append(r)
    return rows

# --------------------------------------------------------------------------------------------------------------------
# report

def fmt(x, nd=1):
    return '-' if x is None else f'{x:,.{nd}f}'

def spread(r):
    return f"{min(r['ips_all']):,.0f}-{max(r['ips_all']):,.0f}" if len(r['ips_all']) > 1 else '-'

def report(res: dict) -> str:
    info, s = res['info'], res['settings']
    L = [f"# Benchmarks", '',
         "Is the sweep bound by the accelerator, not by JPEG decoding? Everything below was measured side by side in **one run**",
         f"of `bench/bench.py` (`{res['command']}`), same machine, same model, batch size and image size per row.",
         "Reproduce with `make bench` (or `.venv/bin/python bench/bench.py`; `--quick` for a one-minute smoke run);",
         "on a CUDA machine run `bash bench/device_check.sh` (offline, 8 minutes).", '']
    if info['gpu'] == 'none':
        L += ["> **No GPU was available for this run**: every number is from the CPU below. The GPU fast path (cache on the",
              "> device, bf16, channels_last, `torch.compile`) is checked by `bench/device_check.sh`, which is ready to run on a",
              "> CUDA machine and writes its own report; no GPU has run it yet (see 'The GPU path' below).", '']
    if res.get('incomplete'):
        L += [f"> **Incomplete run**: it stopped during {res['incomplete']}; the sections after that are missing or empty.", '']
    oc = res.get('contention', {}).get('other_cores', 0)
    if oc > 0.25:
        L += [f"> **The machine was shared**: other processes used {oc:.2f} of its {info['cores']} cores on average during this run "
              f"(load average up to {res['contention']['load1']:.1f}); absolute images/s are depressed by that, ratios of interleaved "
              "measurements much less. The *other load* columns say how much each row was disturbed.", '']
    L += ['## Machine and versions', '', '| | |', '|---|---|',
          f"| CPU | {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB |",
          f"| GPU | {info['gpu']} |", f"| device | {info['device']} (torch threads: {info['torch_threads']}) |",
          f"| bf16 autocast | {'on' if info['bf16_autocast'] else 'off (not supported)'} |",
          f"| python | {info['python']} |", f"| torch / torchvision | {info['torch']} / {info['torchvision']} |",
          f"| datasets / numpy / Pillow | {info['datasets']} / {info['numpy']} / {info['pillow']} |",
          f"| minisweep | {info['minisweep']} (git {info['commit']}) |", f"| platform | {info['platform']} |",
          f"| date | {info['date']} |", '',
          '## Settings', '',
          f"- batch size {s['batch_size']}, SGD (momentum 0.9, Nesterov, weight decay 5e-4, minisweep's per-model learning rate), "
          f"label smoothing 0.1; bf16 autocast {'on' if info['bf16_autocast'] else 'off'}; channels_last "
          f"{'on' if info['device'].startswith('cuda') else 'off (minisweep uses it on CUDA only; the bare loop matches)'}.",
          f"- each number is the **median of {s['repeats']} timed repeats** of a fixed number of steps (the same for every "
          f"loop of a row, chosen so one repeat takes about {s['seconds']:g} s on the bare loop), after a warm-up of at least "
          f"3 steps and 2 s per loop{' (quick: 1 step)' if s['quick'] else ''}. The repeats of minisweep and the bare loop (and, with `--before`, "
          "the before-the-fixes pair) run round-robin, so drift and other load hit them alike; the seed-style loop runs after "
          "them, its repeats back to back (its workers would otherwise prefetch for free while the other loops run).",
          f"- 64 px rows: `{s['dataset']}` (Tiny-ImageNet-100, 64x64 JPEGs, 40,000 training images), cache at "
          f"{s['stored'].get('64', '-')} px. Larger sizes: `{s['copy']}`, {s['copy_n']:,} training images of it re-encoded "
          f"as 500x375 JPEGs (bicubic upscale + mild noise, quality 90, mean {s['copy_kb']:.0f} KB a file, as Mini-ImageNet's "
          f"originals are about 500x375), made by `make_large_copy` in bench/out (never committed).",
          "- **minisweep**: its own code path, `prepare_data(cfg, device)` + `create_model` + `make_optimizer` + `_epoch` "
          "exactly as `train_run` calls them, on the decoded uint8 cache (random crop + flip + normalise per batch).",
          "- **bare**: the same model, optimizer settings (the same SGD kernel as minisweep's `make_optimizer`: "
          f"{', '.join(sorted(set(r.get('sgd', '?') for r in res['train']))) or '?'}), autocast and memory format on one synthetic "
          "batch already on the device: the ceiling of any data path.",
          f"- **seed-style**: the HF dataset decoded by PIL at every access, torchvision `Resize(stored) / RandomCrop / "
          f"RandomHorizontalFlip / ToTensor / Normalize`, `DataLoader(num_workers={info['cores']} (= cores), "
          f"pin_memory={'True' if info['device'].startswith('cuda') else 'False (CPU)'}, persistent workers)`, same model and step.", '']

    L += ['## 1-2. Training images/s: minisweep vs the bare loop vs the seed-style pipeline', '',
          '| model | px | data | bare (synthetic) | minisweep | minisweep / bare | **minisweep / bare, quiet rounds** | seed-style | **minisweep / seed** | steps x repeats | other load (cores) |',
          '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in res['train']:
        name = r['model'] + (' + compile' if r['compile'] else '')
        seed, rr = r.get('seed'), r.get('rounds_minisweep_bare', {})
        q = f"**{rr['quiet']:.3f}** ({rr['n_quiet']}/{rr['n']})" if rr.get('quiet') is not None else f"- (0/{rr.get('n', 0)})"
        L.append(f"| {name} | {r['image_size']} | {r['dataset']} | {fmt(r['bare']['ips'])} | {fmt(r['minisweep']['ips'])} | "
                 f"{r['ratio_minisweep_bare']:.3f} | {q} | {fmt(seed['ips']) if seed else '-'} | "
                 f"{'**%.2fx**' % r['ratio_minisweep_seed'] if seed else '-'} | {r['bare']['steps']} x {len(r['bare']['ips_all'])} | "
                 f"{r['contention']['other_cores']:.2f} |")
    L += ['', 'Training images/s, median of the repeats. *minisweep / bare* is the ratio of the medians; *quiet rounds* is the '
          'median of the round-by-round ratios over the rounds in which other processes used under '
          f"{QUIET} cores during both repeats (how many of them, in brackets): the figure to trust on a shared machine. "
          '*Other load* is the CPU cores that other processes used on average while the row ran (from /proc/stat, less this '
          'process and its workers and children): well above 0 means the absolute images/s of that row are depressed.',
          '', 'Spread of the repeats (min-max images/s):', '',
          '| model | px | bare | minisweep | seed-style |', '|---|---|---|---|---|']
    for r in res['train']:
        L.append(f"| {r['model']}{' + compile' if r['compile'] else ''} | {r['image_size']} | {spread(r['bare'])} | "
                 f"{spread(r['minisweep'])} | {spread(r['seed']) if r.get('seed') else '-'} |")
    wb = [r for r in res['train'] if 'bare_before' in r]
    if wb:
        L += ['', '### Before and after the CPU fixes, measured in the same rounds', '',
              'Two more loops ran round-robin with the two above (same steps, same repeats): minisweep as it was before the CPU '
              'fixes (batches cut by `normalize(crop_flip(images[idx]))`, for-loop SGD), patched back **inside this benchmark '
              'only** (`patch_batches_before`, `old_optimizer`), and the bare loop with that old SGD. Ratios are medians of the '
              'round-by-round ratios over the quiet rounds (over all rounds where none was quiet; count in brackets).', '',
              '| model | px | bare, old SGD | minisweep before | **before / bare (old SGD)** | minisweep now | **now / before** |',
              '|---|---|---|---|---|---|---|']
        def qr(d):
            v, n = (d['quiet'], d['n_quiet']) if d['quiet'] is not None else (d['all'], d['n'])
            return f"{v:.3f} ({n}{'' if d['quiet'] is not None else ', none quiet'})"
        for r in wb:
            L.append(f"| {r['model']} | {r['image_size']} | {fmt(r['bare_before']['ips'])} | {fmt(r['minisweep_before']['ips'])} | "
                     f"**{qr(r['rounds_before_bare_before'])}** | {fmt(r['minisweep']['ips'])} | **{qr(r['rounds_now_before'])}** |")
    if any('max_memory_allocated_gib' in r for r in res['train']):
        L += ['', 'GPU memory (torch.cuda.max_memory_allocated, all loops of the row): ' +
              ', '.join(f"{r['model']} {r['image_size']}px {r['max_memory_allocated_gib']:.2f} GiB" for r in res['train'])]

    L += ['', '## Data path alone (model removed)', '',
          'Images/s that each data path can deliver, with no model to feed: the seed-style DataLoader '
          f"({res['data'][0]['workers'] if res['data'] else '-'} workers: decode + resize + crop + flip + to-tensor + normalise, "
          'moved to the device) against minisweep\'s `Batches` from the decoded cache (gather + crop + flip + normalise, on the device).', '',
          '| px | data | seed-style loader | minisweep batches | **minisweep / seed** | other load (cores) |', '|---|---|---|---|---|---|']
    for r in res['data']:
        L.append(f"| {r['image_size']} | {r['dataset']} | {fmt(r['seed']['ips'], 0)} | {fmt(r['minisweep']['ips'], 0)} | "
                 f"**{r['ratio']:.1f}x** | {r['contention']['other_cores']:.2f} |")
    if res.get('breakdown'):
        sizes = [b['image_size'] for b in res['breakdown']]
        L += ['', '### Where the CPU batch time goes', '',
              f"Milliseconds of single-thread CPU time per batch of {res['breakdown'][0]['batch_size']} (`time.thread_time`, median "
              'of 15; barely disturbed by other load): minisweep\'s CPU path now (`cpu_batch`) against the path it replaced and '
              'that path\'s steps. For scale, the bare training step per batch (wall time, all cores) is in the last rows.', '',
              '| step | ' + ' | '.join(f'{s} px' for s in sizes) + ' |', '|---|' + '---|' * len(sizes)]
        for k in res['breakdown'][0]['parts']:
            L.append(f'| {k} | ' + ' | '.join(f"{b['parts'][k]:.1f}" for b in res['breakdown']) + ' |')
        for m in s_models(res):
            row = []
            for sz in sizes:
                r = next((r for r in res['train'] if r['model'] == m and r['image_size'] == sz and not r['compile']), None)
                row.append(f"{1e3 * r['bare']['batch_size'] / r['bare']['ips']:.0f}" if r else '-')
            L.append(f'| for scale: bare {m} training step (wall, {res["info"]["cores"]} threads) | ' + ' | '.join(row) + ' |')
        L.append('| `cpu_batch` gives batches identical to the old path | ' + ' | '.join('yes' if b['identical'] else '**no**' for b in res['breakdown']) + ' |')

    L += ['', '## 3. Decode once', '',
          '`decoded_split` into a fresh `MINISWEEP_CACHE`, every core decoding (the seed-style pipeline pays the decode of '
          'the data-only table above at *every* epoch of *every* run; minisweep pays this once per dataset, split and size).', '',
          '| data | split | images | stored px | seconds | images/s | cache MB |', '|---|---|---|---|---|---|---|']
    for r in res['decode']:
        L.append(f"| {r['dataset']} | {r['split']} | {r['n']:,} | {r['stored_px']} | {r['seconds']:.1f} | {r['ips']:,.0f} | {r['cache_mb']:,.0f} |")
    sw = res.get('sweep')
    L += ['']
    if 'sweep' not in res: L.append('Sweep check not reached (incomplete run).')
    elif sw is None: L.append('Sweep check skipped (`--no-sweep`, or `--quick` without `--sweep`).')
    elif not sw['available']: L.append(f"**Sweep not available**: `minisweep sweep --help` failed ({sw['why']}); the decode-once check of a "
                                       "sweep was skipped. It runs as soon as the command exists.")
    else:
        L += [f"Sweep `{sw['cmd'].replace(str(REPO) + '/', '')}` (4 runs) into a fresh cache: exit status {sw['rc']}, "
              f"{sw['wall']:.0f} s; `builds.jsonl` has **{sw['builds']} lines** for {len(sw['per_file'])} cache files "
              f"({', '.join(f'{k}: {v}' for k, v in sw['per_file'].items())}): "
              + ('**each split was decoded exactly once** for the whole sweep.' if sw['once'] else '**some split was decoded more than once.**')]
        if sw['rc'] != 0: L += ['', f"The sweep exited with status {sw['rc']}; the end of its log (bench/out/sweep.log):", '', '```'] + \
            [l for l in Path(sw['log']).read_text(errors='replace').replace('\r', '\n').splitlines() if l.strip() and 'decoding' not in l][-8:] + ['```']
        if sw.get('run_times'):
            L += ['', f"Its runs (other load during the sweep: {sw['contention']['other_cores']:.2f} cores):", '',
                  '| run | run seconds (papermill job) | epoch seconds (train + validate) | training images/s |', '|---|---|---|---|']
            L += [f"| {r['run']} | {fmt(r['seconds'])} | {fmt(r['epoch_seconds'])} | {fmt(r['images_per_second'])} |" for r in sw['run_times']]
    dm = res.get('demo')
    L += ['', '## 4. Demo: wall time and peak memory', '']
    if 'demo' not in res: L.append('Demo not reached (incomplete run).')
    elif dm is None: L.append('Demo skipped (`--no-demo`, or `--quick` without `--demo`).')
    elif not dm['available']: L.append(f"**Demo not available**: `minisweep demo --help` failed ({dm['why']}); skipped. It runs as soon as the command exists.")
    else:
        ok = dm.get('peak_pss_mb') is not None and dm['peak_pss_mb'] < dm['target_mb']
        L += ['| | |', '|---|---|', f"| command | `minisweep demo --out bench/out/demo-run --figures bench/out/demo-figures` (fresh cache) |",
              f"| other load during the demo | {dm['contention']['other_cores']:.2f} cores |",
              f"| runs | {len(dm.get('run_times') or [])}, median {fmt(statistics.median([r['seconds'] for r in dm['run_times'] if r['seconds']]) if dm.get('run_times') else None)} s each |",
              f"| exit status | {dm['rc']} |", f"| wall time | {dm['wall']:.1f} s |",
              f"| peak memory of the process tree (sum of PSS, polled every 0.2 s) | {fmt(dm.get('peak_pss_mb'), 0)} MB |",
              f"| peak RSS of the largest single process | {fmt(dm.get('peak_rss_one_mb'), 0)} MB |",
              f"| processes in the tree (max) | {dm.get('processes', '-')} |",
              f"| a bare `python -c 'import torch, torchvision, datasets, papermill, minisweep.train'` | {fmt(dm.get('baseline_rss_mb'), 0)} MB RSS |",
              f"| decoded caches (`*.npy`) | {dm['cache_mb']:.1f} MB in {len(dm['cache_files'])} files, {dm['builds']} builds |",
              f"| model (fp32 parameters) | " + ', '.join(f'{k} {v:.0f} MB' for k, v in dm['params_mb'].items()) + ' |',
              f"| training state of the largest (weights + grads + momentum) | {dm['train_state_mb']:.0f} MB |",
              f"| target: peak < 1.5 x (cache + model state) | {dm['target_mb']:.0f} MB: **{'met' if ok else 'not met'}** |"]
        if dm.get('peak_rss_one_mb') and dm.get('baseline_rss_mb'):
            above = dm['peak_rss_one_mb'] - dm['baseline_rss_mb']
            L.append(f"| largest process above the import baseline / (cache + model state) | {above:,.0f} MB / "
                     f"{dm['cache_mb'] + dm['train_state_mb']:,.0f} MB = **{above / (dm['cache_mb'] + dm['train_state_mb']):.2f}x** |")
        if dm.get('peak_gpu_mib'): L.append(f"| peak GPU memory used (nvidia-smi) | {dm['peak_gpu_mib']:.0f} MiB |")
    mem = res.get('memory')
    L += ['', '## 5. Memory of one training run at the real cache size', '']
    if 'memory' not in res: L.append('Not reached (incomplete run).')
    elif mem is None: L.append('Skipped (`--no-memory`, or `--quick` without `--memory`).')
    elif mem and not mem[0].get('available'): L.append(f"**Not available**: `minisweep train --help` failed ({mem[0]['why']}).")
    else:
        L += ['The demo\'s caches are 9 MB, so its memory says little about the cache. Here one `minisweep train` process trains each '
              'model for one epoch on the **whole** training split of the 64 px dataset (all of its cache is mapped and read), '
              'validates, and saves its checkpoints; its RSS is polled every 0.2 s. At 227 px the same images are decoded into a '
              '259 px cache, so that the cache has nearly the size the real study\'s has at that resolution (Mini-ImageNet at 227 px: '
              '11.5 GB for train + validation, 9.6 GB here); what the pictures show does not matter to memory. *Import baseline*: a '
              'process that only imports the same modules (`import torch, torchvision, datasets, minisweep.train, minisweep.cli`).', '',
              '| model | px | exit | seconds | decoded caches (train + validation) | parameters | training state (weights + grads + momentum) | '
              '**peak RSS** | import baseline RSS | peak / (cache + parameters) | peak / (cache + training state) | '
              '**above the baseline: / (cache + parameters)** | above the baseline: / (cache + training state) | other load (cores) |',
              '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
        for r in mem:
            L.append(f"| {r['model']} | {r.get('image_size', 64)} | {r['rc']} | {r['wall']:.0f} | {r['cache_mb']:,.0f} MB | {r['params_mb']:,.0f} MB | {r['train_state_mb']:,.0f} MB | "
                     f"**{fmt(r.get('peak_rss_one_mb'), 0)} MB** | {fmt(r.get('baseline_rss_mb'), 0)} MB | {fmt(r.get('ratio_params'), 2)} | "
                     f"{fmt(r.get('ratio_state'), 2)} | **{fmt(r.get('ratio_params_above_base'), 2)}** | {fmt(r.get('ratio_state_above_base'), 2)} | "
                     f"{r['contention']['other_cores']:.2f} |")
            if r.get('peak_gpu_mib'): L.append(f"|   GPU memory used (nvidia-smi, peak) | | | | | | | {r['peak_gpu_mib']:.0f} MiB | | | | | | |")
    L += ['', '## Findings (computed from this run)', ''] + res.get('findings', ['(none)']) + ['']
    notes = Path(__file__).with_name('ANALYSIS.md')
    if notes.exists(): L += [notes.read_text().strip(), '']
    return '\n'.join(L)

def s_models(res):
    return list(dict.fromkeys(r['model'] for r in res['train']))

def findings(res: dict) -> list:
    "Short conclusions drawn from the numbers of this run (the hand-written analysis lives under 'Analysis')."
    out = []
    for r in res['train']:
        tag = f"{r['model']}{' + compile' if r['compile'] else ''} at {r['image_size']} px"
        rr = r.get('rounds_minisweep_bare') or {}
        ratio, basis = (rr['quiet'], f"quiet rounds, {rr['n_quiet']}/{rr['n']}") if rr.get('quiet') is not None else (r['ratio_minisweep_bare'], 'no quiet round: all repeats')
        verdict = 'meets' if ratio >= 0.9 else 'misses'
        line = f"- {tag}: minisweep runs at {ratio:.2f}x the bare loop ({basis}; {verdict} the 0.9x target)"
        if r.get('seed'): line += f", {r['ratio_minisweep_seed']:.2f}x the seed-style pipeline"
        if 'bare_before' in r:
            pick = lambda d: d['quiet'] if d['quiet'] is not None else d['all']
            line += (f"; {pick(r['rounds_now_before']):.2f}x as fast as before the CPU fixes, which ran at "
                     f"{pick(r['rounds_before_bare_before']):.2f}x a bare loop with the old SGD")
        out.append(line + '.')
    for r in res['data']:
        out.append(f"- Data path alone at {r['image_size']} px ({r['dataset']}): minisweep's batches come {r['ratio']:.1f}x as fast "
                   f"as the seed-style loader's ({r['minisweep']['ips']:,.0f} vs {r['seed']['ips']:,.0f} images/s).")
    for b in res.get('breakdown', []):
        p = b['parts']; whole = p['before, whole batch: normalize(crop_flip(images[idx]))']
        now = p['now: cpu_batch (per-image crop view, one copy to float NCHW, in-place normalise)']
        out.append(f"- CPU batch cost at {b['image_size']} px: {now:.1f} ms of CPU per batch with `cpu_batch`, against {whole:.1f} ms "
                   f"for the old path ({whole / now:.1f}x), {'identical' if b['identical'] else 'NOT identical'} batches.")
    for r in res.get('memory') or []:
        if r.get('available') and r.get('ratio_params') is not None:
            ab = r.get('ratio_params_above_base')
            out.append(f"- memory, {r['model']} at {r.get('image_size', 64)} px on the whole training split: peak RSS {r['peak_rss_one_mb']:,.0f} MB = {r['ratio_params']:.2f}x "
                       f"(cache + parameters) ({'meets' if r['ratio_params'] < 1.5 else 'misses'} 1.5x as stated); above the import "
                       f"baseline {fmt(ab, 2)}x ({'meets' if ab is not None and ab < 1.5 else 'misses'} 1.5x).")
    for name, r in (('sweep', res.get('sweep')), ('demo', res.get('demo'))):
        if r and r.get('available'):
            out.append(f"- {name}: exit status {r['rc']}, {r['wall']:.0f} s" + (f", {r['builds']} cache builds" if 'builds' in r else '') + '.')
    return out

# --------------------------------------------------------------------------------------------------------------------

def main(argv=None):
    args = parse_args(argv)
    if args.render:
        res = json.loads(Path(args.render).read_text())
        res['findings'] = findings(res)
        Path(args.out).write_text(report(res)); log(f'wrote {args.out} from {args.render}')
        return 0
    with Contention() as whole: code = _main(args, argv, whole)
    return code

def _main(args, argv, whole):
    t_start = time.perf_counter()
    from minisweep.train import resolve_device
    from minisweep.data import UserError, stored_size, sample_dataset
    try: device = resolve_device(args.device)
    except UserError as e: print(f'bench: {e}', file=sys.stderr); return 2
    if device.type == 'cpu': torch.set_num_threads(n_cores())
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        if device.index is not None: torch.cuda.set_device(device)
    dataset = Path(args.dataset).expanduser()
    if not (dataset / 'data').is_dir():
        if not args.quick:
            print(f'bench: dataset {dataset} not found (give --dataset, or use --quick to fall back to the shipped sample)', file=sys.stderr)
            return 2
        log(f'dataset {dataset} not found: --quick falls back to the sample shipped with minisweep')
        dataset = Path(sample_dataset())
    work = Path(args.work_dir); work.mkdir(parents=True, exist_ok=True)
    cache = work / 'cache'
    shutil.rmtree(cache, ignore_errors=True); cache.mkdir(parents=True)
    os.environ['MINISWEEP_CACHE'] = str(cache)            # prepare_data reads it: every cache below is built afresh

    info = machine_info(device)
    log('machine:', ', '.join(f'{k}={v}' for k, v in info.items()))
    args.image_sizes = sorted(set(args.image_sizes))
    small = [s for s in args.image_sizes if s <= 64]
    large = [s for s in args.image_sizes if s > 64]
    copy = None
    if large:
        log('making the 500x375 copy ...')
        t = time.perf_counter()
        copy = make_large_copy(str(dataset), work / f'mini-500x375-{args.copy_per_class}pc',
                               dict(train=args.copy_per_class, validation=max(1, args.copy_per_class // 10), test=1))
        log(f'  {copy} ready in {time.perf_counter() - t:.0f}s')
    data_for = lambda s: dataset if s <= 64 else copy
    settings = dict(batch_size=args.batch_size, repeats=args.repeats, seconds=args.seconds, quick=args.quick,
                    dataset=str(dataset), copy=str(copy) if copy else '-', models=args.models, image_sizes=args.image_sizes,
                    stored={str(s): stored_size(s) for s in args.image_sizes},
                    copy_n=0, copy_kb=json.loads((copy / 'copy.json').read_text())['mean_kb'] if copy else 0)
    res = dict(info=info, settings=settings, command='bench/bench.py ' + ' '.join(sys.argv[1:] if argv is None else argv),
               train=[], data=[], decode=[], breakdown=[], incomplete='starting')
    json_path = Path(args.json or work / 'bench.json')

    def save(stage=None):
        "Write the JSON and the report as they stand (after every section, so a killed run leaves what it measured)."
        res['incomplete'], res['seconds'] = stage, time.perf_counter() - t_start
        res['contention'] = whole.snapshot(); res['findings'] = findings(res)
        json_path.write_text(json.dumps(res, indent=1, default=str))
        Path(args.out).write_text(report(res))
        return report(res)

    def on_term(signum, frame):
        "Killed: stop the job we may be running, write what was measured, and go (no unwinding through DataLoaders)."
        if _CHILD is not None and _CHILD.poll() is None:
            try: os.killpg(_CHILD.pid, signal.SIGTERM)
            except OSError: pass
        try: save(f"{res['incomplete']} (terminated by signal {signum})")
        finally:
            print(f"bench: terminated during {res['incomplete']}; partial results in {args.out} and {json_path}", file=sys.stderr, flush=True)
            os._exit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    try: return _sections(args, res, save, dataset, copy, cache, work, device, small, large, data_for, json_path)
    except KeyboardInterrupt as e:
        save(f"{res['incomplete']} (interrupted: {e or 'Ctrl-C'})")
        print(f"bench: interrupted during {res['incomplete']}; partial results in {args.out} and {json_path}", file=sys.stderr)
        return 130

def _sections(args, res, save, dataset, copy, cache, work, device, small, large, data_for, json_path):
    from minisweep.data import stored_size
    settings = res['settings']
    save('decode once')

    log('3. decode once (fresh cache) ...')
    for s in sorted(set(stored_size(x) for x in small)): res['decode'] += measure_decode(dataset, s, cache)
    for s in sorted(set(stored_size(x) for x in large)): res['decode'] += measure_decode(copy, s, cache)
    if copy: settings['copy_n'] = next(r['n'] for r in res['decode'] if r['dataset'] == copy.name and r['split'] == 'train')

    log('1-2. training images/s ...')
    for s in (args.image_sizes[:1] if args.quick else args.image_sizes):
        for m in args.models:
            save(f'training, {m} at {s} px')
            res['train'].append(measure_training(args, m, s, data_for(s), device))
            if args.compile:
                save(f'training, {m} at {s} px, compiled')
                res['train'].append(measure_training(args, m, s, data_for(s), device, compile=True))
    log('data path alone ...')
    save('data path alone')
    for s in args.image_sizes: res['data'].append(measure_data_only(args, s, data_for(s), device))
    if device.type == 'cpu':
        log('where the CPU batch time goes ...')
        res['breakdown'] = [b for b in (data_breakdown(args, s, data_for(s)) for s in args.image_sizes) if b]

    log('3b. decode once in a sweep ...')
    save('the sweep')
    res['sweep'] = None if args.no_sweep else sweep_check(args, dataset, work)
    log('5. memory at the real cache size ...')
    save('memory')
    res['memory'] = None if args.no_memory else memory_check(args, dataset, work)
    log('4. demo ...')
    save('the demo')
    res['demo'] = None if args.no_demo else demo_check(args, work)
    md = save(None)
    log('\n' + md)
    log(f'\nwrote {args.out} and {json_path} in {res["seconds"]:.0f}s')
    return 0

if __name__ == '__main__':
    sys.exit(main())
