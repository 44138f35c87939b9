#!/usr/bin/env python
"""minisweep's GPU path checked in one run: correctness, synchronisations, speed, and a real papermill job.

Run by bench/device_check.sh (which installs the carried wheels first); `--cpu` runs the same sections on the CPU at
small sizes. Sections, each reported as it ends, each failing on its own without stopping the others:

1. batches: the GPU-cache and the host-staged batches bit-identical to `cpu_batch`;
2. gather: a batch gathered from a uint8 tensor of more than 2**32 elements (CPU mode: the same code, 2**24);
3. syncs: host synchronisations per training step under `torch.cuda.set_sync_debug_mode` (target 0);
4. rng: the run's random state through a checkpoint file and back;
5. speed: minisweep's training loop against the bare loop (bench/loops.py's), both models, images/s and ratio;
6. sweep: a one-run papermill sweep, its best checkpoint evaluated again on the CPU; peak GPU memory.

Writes report.md and results.json to --out (the device tool's $OUT), after every section.
    --make-data DIR   write the reduced dataset (make_sample) the check reads, then stop.
"""
from __future__ import annotations
import argparse, json, os, platform, shutil, sys, tempfile, time, traceback, warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'bench'))
DEFAULT_DATA = REPO / '.devdata' / 'tiny-100'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--cpu', action='store_true', help='run on the CPU at small sizes (the check of the check)')
    p.add_argument('--data', default=None, help='dataset folder (timm/mini-imagenet layout); default: .devdata/tiny-100 '
                   'on a GPU, the sample shipped with minisweep in the CPU mode')
    p.add_argument('--out', default=str(REPO / 'bench/out/device-check'), help='folder of report.md and results.json')
    p.add_argument('--work', default=None, help='scratch folder (caches, runs); default: a new temporary folder, removed')
    p.add_argument('--budget', type=float, default=450, help='seconds; sections that would start after it are skipped')
    p.add_argument('--make-data', metavar='DIR', default=None, help='write the reduced dataset to DIR and stop')
    p.add_argument('--source', default=str(REPO.parent / 'shared/data/tiny-imagenet-100'), help='dataset --make-data reads')
    p.add_argument('--per-class', nargs=3, type=int, default=[100, 20, 10], metavar=('TRAIN', 'VAL', 'TEST'))
    return p.parse_args(argv)


def log(*a): print(*a, flush=True)


def make_data(a) -> int:
    from minisweep.data import make_sample, load_splits
    src = Path(a.source)
    if not (src / 'data').is_dir(): log(f'device_check: source dataset {src} not found'); return 2
    n = len(load_splits(str(src), ('train',))['train'].classes)
    per = dict(zip(('train', 'validation', 'test'), a.per_class))
    dst = make_sample(str(src), a.make_data, n_classes=n, per_class=per)
    mb = sum(f.stat().st_size for f in Path(dst).rglob('*') if f.is_file()) / 2**20
    log(f'wrote {dst}: {n} classes x {per}, {mb:.1f} MiB'); return 0


class Check:
    "The sections' results, written to report.md and results.json after each one."
    def __init__(self, a, settings):
        self.a, self.out, self.t0 = a, Path(a.out), time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        self.res = dict(settings=settings, sections={})

    def run(self, name, fn, *args):
        left = self.a.budget - (time.perf_counter() - self.t0)
        if left <= 0:
            self.res['sections'][name] = dict(status='skipped', why='time budget spent'); log(f'== {name}: skipped (budget)')
            return self.save()
        log(f'== {name} ({time.perf_counter() - self.t0:.0f}s in)')
        t = time.perf_counter()
        try: r = dict(status='ok', **fn(*args))
        except Exception as e:
            r = dict(status='failed', error=f'{type(e).__name__}: {e}', where=traceback.format_exc(limit=4)[-1500:])
        r['seconds'] = round(time.perf_counter() - t, 1)
        if r['status'] == 'ok' and r.get('passed') is False: r['status'] = 'failed'
        self.res['sections'][name] = r
        log(f'   {r["status"]}: ' + json.dumps({k: v for k, v in r.items() if k not in ('status', 'where')}, default=str)[:1500])
        self.save()

    def save(self):
        from minisweep.core import atomic_write       # torch-free: safe before the device is chosen
        self.res['seconds'] = round(time.perf_counter() - self.t0, 1)
        atomic_write(self.out / 'results.json', json.dumps(self.res, indent=1, default=str))
        atomic_write(self.out / 'report.md', report(self.res))

    @property
    def ok(self): return all(s['status'] == 'ok' for s in self.res['sections'].values())


def report(res) -> str:
    s = res['settings']
    L = [f"# minisweep device check ({'CPU mode' if s['cpu'] else 'GPU'})", '',
         f"{s['device_name']} | torch {s['torch']} | Python {s['python']} | precision {s['precision']} | "
         f"{s['image_size']} px, batch {s['batch_size']} | data {s['data']} | {res.get('seconds', 0):.0f} s in all", '',
         '| section | status | seconds | result |', '|---|---|---|---|']
    for name, r in res['sections'].items():
        brief = {k: v for k, v in r.items() if k not in ('status', 'seconds', 'where')}
        L.append(f"| {name} | {r['status']} | {r.get('seconds', '')} | {json.dumps(brief, default=str)[:600].replace('|', '/')} |")
    return '\n'.join(L) + '\n'


# --------------------------------------------------------------------------------------------------------------------
# sections

def check_batches(ctx):
    "GPU cache and host staging against `cpu_batch` (CPU mode: the staging path), train and padded evaluation batches."
    import torch
    from minisweep.data import Batches, subset_indices
    c, size, dev = ctx['train_cache'], ctx['size'], ctx['device']
    host = torch.from_numpy(c.images)
    paths = {'host staging': host}
    if dev.type == 'cuda': paths['gpu cache'] = host.to(dev)
    idx, out = subset_indices(c.labels, 0.2 if len(c) > 2000 else 1.0, 0), {}
    for label, images in paths.items():
        for kw in (dict(train=True, indices=idx), dict(pad_last=True, indices=idx[:300])):
            b = Batches(c, size, 64, device=dev, channels_last=True, images=images, **kw)
            ref = Batches(c, size, 64, channels_last=False, **kw)
            b.set_epoch(0, 3); ref.set_epoch(0, 3)
            same = n = 0
            for (x, y, k), (xr, yr, kr) in zip(b, ref):
                same += bool(torch.equal(x.cpu(), xr) and torch.equal(y.cpu(), yr) and k == kr); n += 1
            out[f"{label}, {'train' if kw.get('train') else 'eval'}"] = f'{same}/{n} batches identical'
    del paths
    return dict(passed=all(v.split('/')[0] == v.split('/')[1].split()[0] for v in out.values()), **out)


def check_gather(ctx):
    "Rows beyond 2**32 bytes of a uint8 cache on the device, gathered and cropped by `Batches`, against `cpu_batch`."
    import numpy as np, torch
    from minisweep.data import Batches, ImageCache, cpu_batch
    dev, size = ctx['device'], ctx['size']
    S = ctx['stored']
    per = S * S * 3
    n = (2**32 // per + 2) if dev.type == 'cuda' else (2**24 // per + 2)
    big = torch.zeros((n, S, S, 3), dtype=torch.uint8, device=dev)
    rows = torch.tensor([0, 1, n - 3, n - 2, n - 1])
    gen = torch.Generator().manual_seed(7)
    small = torch.randint(0, 256, (len(rows), S, S, 3), dtype=torch.uint8, generator=gen)
    big[rows.to(dev)] = small.to(dev)
    cache = ImageCache(None, np.zeros(n, dtype=np.int64), ['a', 'b'], Path('none'), False, 0.0)
    b = Batches(cache, size, len(rows), indices=rows.numpy(), device=dev, channels_last=True, images=big)
    x, _, _ = next(iter(b))
    want = cpu_batch(small, torch.arange(len(rows)), size)
    elements = big.numel(); del big
    if dev.type == 'cuda': torch.cuda.empty_cache()
    return dict(passed=bool(torch.equal(x.cpu().contiguous(), want)), elements=elements, over_2_32=elements > 2**32)


def check_syncs(ctx):
    "Synchronising CUDA calls per training step of minisweep's loop, with the cache on the GPU and in host memory."
    import torch
    from loops import MinisweepLoop
    from timing import warm_up
    if ctx['device'].type != 'cuda': return dict(passed=True, note='not applicable on the CPU')
    out = {}
    for label, on_dev in (('gpu cache', True), ('host staging', False)):
        cfg = ctx['cfg']('resnet18', cache_on_device=on_dev)
        loop = MinisweepLoop(cfg, ctx['device'])
        warm_up(loop.train, ctx['device'], 5, 2.0)
        counts, where = {}, set()
        for steps in (4, 12):
            torch.cuda.synchronize()
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter('always')
                torch.cuda.set_sync_debug_mode('warn')
                try: loop.train(steps)
                finally: torch.cuda.set_sync_debug_mode('default')
            hits = [x for x in w if 'synchroniz' in str(x.message)]
            counts[steps] = len(hits); where |= {f'{Path(x.filename).name}:{x.lineno}' for x in hits}
        out[label] = dict(per_step=(counts[12] - counts[4]) / 8, per_epoch_end=counts[4] - 4 * (counts[12] - counts[4]) / 8,
                          where=sorted(where)[:8])
        del loop
    return dict(passed=out['gpu cache']['per_step'] == 0, **out)


def check_rng(ctx):
    "The run's random state saved through a checkpoint file, restored, and the same numbers drawn again."
    import torch
    from minisweep.train import CKPT_FORMAT, atomic_save, load_checkpoint, rng_state, set_rng_state
    dev = ctx['device']
    draw = lambda: (torch.rand(3).tolist(), torch.rand(3, device=dev).tolist())
    torch.manual_seed(5); draw()
    path = Path(ctx['work']) / 'rng.pt'
    atomic_save(dict(format=CKPT_FORMAT, rng=rng_state(dev)), path)
    first = draw(); draw()
    set_rng_state(load_checkpoint(path, keys=('rng',))['rng'])
    again = draw()
    return dict(passed=first == again, device=str(dev))


def check_speed(ctx):
    "minisweep's loop against the bare loop, both models, round-robin repeats (median)."
    import statistics
    from loops import BareLoop, MinisweepLoop
    from timing import timed, warm_up
    out, dev = {}, ctx['device']
    for m in ('alexnet', 'resnet18'):
        cfg = ctx['cfg'](m)
        ms = MinisweepLoop(cfg, dev)
        bare = BareLoop(cfg, dev, ms.n_classes, ms.channels_last, ms.opt)
        loops = dict(bare=bare, minisweep=ms)
        per = {k: warm_up(l.train, dev, 3, ctx['warm_s']) for k, l in loops.items()}
        steps = max(1, min(400, round(ctx['rep_s'] / per['bare'])))
        ips = {k: [] for k in loops}
        for _ in range(ctx['repeats']):
            for k, l in loops.items(): ips[k].append(steps * cfg.batch_size / timed(l.train, steps, dev))
        med = {k: statistics.median(v) for k, v in ips.items()}
        out[m] = dict(bare_ips=round(med['bare']), minisweep_ips=round(med['minisweep']),
                      ratio=round(med['minisweep'] / med['bare'], 3), steps=steps, repeats=ctx['repeats'])
        del ms, bare, loops
        if dev.type == 'cuda':
            import torch; out[m]['max_memory_allocated_gib'] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
            torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(dev)
    return out


def check_sweep(ctx):
    "One papermill run through `minisweep sweep`, evaluated there (GPU) and again on the CPU from its checkpoint."
    from jobs import run_monitored
    from minisweep.evaluate import evaluate_checkpoint
    work = Path(ctx['work']); out = work / 'sweep'
    cmd = [sys.executable, '-c', 'import sys; from minisweep.cli import main; sys.exit(main())', 'sweep',
           '--models', 'resnet18', '--subset-sizes', str(ctx['sweep_fraction']), '--seeds', '0',
           '--num-epochs', str(ctx['sweep_epochs']), '--batch-size', str(ctx['batch_size']), '--image-size', str(ctx['size']),
           '--dataset', ctx['data'], '--out', str(out), '--figures', '']   # no curves: one run draws none
    r = run_monitored(cmd, dict(os.environ), work / 'sweep.log', timeout=ctx['sweep_timeout'])
    tail = (work / 'sweep.log').read_text()[-3000:]
    (Path(ctx['out']) / 'sweep_log_tail.txt').write_text(tail)
    res = dict(rc=r['rc'], wall_s=round(r['wall'], 1), peak_gpu_mib=r.get('peak_gpu_mib'), peak_rss_mb=round(r.get('peak_rss_sum_mb') or 0))
    if r['rc'] != 0: return dict(passed=False, **res, log_tail=tail[-600:])
    run = next(out.glob('resnet18/*/seed_0'))
    metrics = json.loads((run / 'metrics.json').read_text())
    there = json.loads((out / 'results.json').read_text())
    there = there['runs'][0]                                   # evaluated by the sweep, on the device
    ev = evaluate_checkpoint(run, device='cpu', progress=False)
    res.update(device=metrics['device'], precision=metrics.get('precision'), train_seconds=round(metrics['train_seconds'], 1),
               val_top5_error=round(metrics['val_top5_error'], 4), test_top5_error_there=round(there['top5_error'], 4),
               test_top5_error_cpu=round(ev.top5_error, 4), test_top1_error_there=round(there['top1_error'], 4),
               test_top1_error_cpu=round(ev.top1_error, 4))
    res['passed'] = abs(res['test_top5_error_there'] - res['test_top5_error_cpu']) <= 0.02
    return res


# --------------------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    a = parse_args(argv)
    if a.make_data: return make_data(a)
    os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
    import torch
    import minisweep
    from minisweep.data import load_splits, decoded_split, stored_size, sample_dataset
    from minisweep.train import TrainConfig, precision
    if a.cpu: dev = torch.device('cpu')
    elif not torch.cuda.is_available():
        log('device_check: torch sees no CUDA GPU (use --cpu for the CPU mode)'); return 2
    else: dev = torch.device('cuda')
    work = Path(a.work or tempfile.mkdtemp(prefix='device-check-'))
    work.mkdir(parents=True, exist_ok=True)
    os.environ['MINISWEEP_CACHE'] = str(work / 'cache')
    data = Path(a.data or (sample_dataset() if a.cpu else DEFAULT_DATA))
    if not (data / 'data').is_dir():
        log(f'device_check: dataset {data} not found (make it with --make-data DIR where the full one is, and carry it)'); return 2
    size, bs = (64, 32) if a.cpu else (227, 256)
    if dev.type == 'cuda':
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    else: torch.set_num_threads(len(os.sched_getaffinity(0)))
    settings = dict(cpu=a.cpu, device=str(dev), device_name=torch.cuda.get_device_name(dev) if dev.type == 'cuda' else platform.processor() or 'cpu',
                    capability=list(torch.cuda.get_device_capability(dev)) if dev.type == 'cuda' else None,
                    precision=precision(dev, True), torch=torch.__version__, python=platform.python_version(),
                    minisweep=minisweep.__version__, image_size=size, batch_size=bs, data=str(data),
                    packages={m: _version(m) for m in ('datasets', 'papermill', 'ipykernel', 'fastcore', 'huggingface_hub', 'pyarrow', 'fsspec', 'numpy')})
    log('device check:', json.dumps(settings))
    chk = Check(a, settings)
    t = time.perf_counter()
    train = decoded_split(load_splits(str(data), ('train',))['train'], stored_size(size), progress=False)
    log(f'decoded the train split at {stored_size(size)} px in {time.perf_counter() - t:.1f}s ({len(train)} images)')
    cfg = lambda m, **kw: TrainConfig(model=m, subset_size=1.0, dataset=str(data), image_size=size, batch_size=bs,
                                      device=str(dev), progress=False, **kw).check()
    ctx = dict(device=dev, size=size, stored=stored_size(size), batch_size=bs, train_cache=train, work=str(work), out=str(a.out),
               data=str(data), cfg=cfg, warm_s=0.0 if a.cpu else 3.0, rep_s=1.0 if a.cpu else 4.0, repeats=1 if a.cpu else 3,
               sweep_fraction=0.5 if a.cpu else 0.25, sweep_epochs=1 if a.cpu else 2, sweep_timeout=400 if a.cpu else 200)
    for name, fn in (('batches', check_batches), ('gather', check_gather), ('syncs', check_syncs), ('rng', check_rng),
                     ('speed', check_speed), ('sweep', check_sweep)):
        chk.run(name, fn, ctx)
    chk.save()
    if not a.work: shutil.rmtree(work, ignore_errors=True)
    log(('\n' + report(chk.res)))
    log(f"device check {'passed' if chk.ok else 'FAILED'} in {chk.res['seconds']:.0f}s; report in {a.out}")
    return 0 if chk.ok else 1


def _version(mod):
    try:
        from importlib.metadata import version
        return version(mod)
    except Exception: return None


if __name__ == '__main__':
    sys.exit(main())
