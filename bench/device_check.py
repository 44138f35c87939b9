#!/usr/bin/env python
"""minisweep's GPU path checked in one run: correctness, synchronisations, speed, and a real papermill job.

Run by bench/device_check.sh (which installs the carried wheels first); `--cpu` runs the same sections on the CPU at
small sizes. Sections, each reported as it ends, each failing on its own without stopping the others (a section that
needs one that failed is skipped, saying which):

1. imports: minisweep's data and training modules, and the versions of what they import;
2. data: the reduced dataset opened and its train split decoded into the cache (its own section: a `datasets` or
   decoding problem is reported, with its traceback, instead of ending the check before any report);
3. batches: the GPU-cache, placed-subset and host-staged batches bit-identical to `cpu_batch`; the bytes a 1/64 job
   places;
4. gather: a batch gathered from a uint8 tensor of more than 2**32 elements (CPU mode: the same code, 2**24);
5. syncs: host synchronisations per training step under `torch.cuda.set_sync_debug_mode` (target 0);
6. rng: the run's random state through a checkpoint file and back;
7. ceilings: a bf16 matrix product, a device-to-device and a pinned host-to-device copy (seconds; to read 8-10 by);
8. speed: minisweep's training loop against the bare loop (bench/loops.py's), both models, at the study's batch (128),
   images/s and ratio, and each model's own peak GPU memory;
9. datapath: minisweep's batches alone (no model), from the GPU cache and through host staging, images/s;
10. sweep: a one-run papermill sweep, its best checkpoint evaluated again on the CPU; the job's own GPU memory;
11. compile: minisweep's loop with `torch.compile` on against off, per model, and the compile time (last: the dearest).

On CUDA every section starts from collected garbage, an emptied cache and reset peak statistics, and reports its own
peak allocated and reserved GPU memory. Writes report.md and results.json to --out (the device tool's $OUT) after every
section; on SIGTERM (the shell's time limit) it takes the running job's whole process tree down, writes what it has,
and exits 124.
    --make-data DIR   write the reduced dataset (make_sample) the check reads, then stop.
"""
from __future__ import annotations
import argparse, gc, json, os, platform, shutil, signal, sys, tempfile, time, traceback, warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'bench'))
DEFAULT_DATA = REPO / '.devdata' / 'tiny-100'
STUDY_BATCH = 128          # the study's batch size (README's GPU command); the speed rows are timed at it


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--cpu', action='store_true', help='run on the CPU at small sizes (the check of the check)')
    p.add_argument('--data', default=None, help='dataset folder (timm/mini-imagenet layout); default: '
                   '.devdata/tiny-100 on a GPU, the sample shipped with minisweep in the CPU mode')
    p.add_argument('--out', default=str(REPO / 'bench/out/device-check'), help='folder of report.md and results.json')
    p.add_argument('--work', default=None, help='scratch folder (caches, runs); default: a temporary one, removed')
    p.add_argument('--budget', type=float, default=420, help='seconds; sections that would start after it are skipped')
    p.add_argument('--make-data', metavar='DIR', default=None, help='write the reduced dataset to DIR and stop')
    p.add_argument('--source', default=str(REPO.parent / 'shared/data/tiny-imagenet-100'),
                   help='dataset --make-data reads')
    p.add_argument('--per-class', nargs=3, type=int, default=[100, 20, 10], metavar=('TRAIN', 'VAL', 'TEST'))
    p.add_argument('--sections', nargs='+', default=None, help='run only these sections (and what they need)')
    return p.parse_args(argv)


def log(*a): print(*a, flush=True)


def make_data(a) -> int:
    from minisweep.data import make_sample, load_splits
    src = Path(a.source)
    if not (src / 'data').is_dir(): print(f'device_check: source dataset {src} not found', file=sys.stderr); return 2
    n = len(load_splits(str(src), ('train',))['train'].classes)
    per = dict(zip(('train', 'validation', 'test'), a.per_class))
    dst = make_sample(str(src), a.make_data, n_classes=n, per_class=per)
    mb = sum(f.stat().st_size for f in Path(dst).rglob('*') if f.is_file()) / 2**20
    log(f'wrote {dst}: {n} classes x {per}, {mb:.1f} MiB'); return 0


class Stopped(BaseException):
    "SIGTERM (the shell's time limit): ends the section in progress; not an `Exception`, so no section swallows it."


def _on_term(signum, frame): raise Stopped()


def gpu_clean(dev):
    "Collect what was freed (a cycle can hold a model until `gc.collect`), give it back, and reset the peak statistics."
    gc.collect()
    if dev is not None and dev.type == 'cuda':
        import torch
        torch.cuda.synchronize(dev); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(dev)


def gpu_peaks(dev) -> dict:
    if dev is None or dev.type != 'cuda': return {}
    import torch
    return dict(peak_allocated_gib=round(torch.cuda.max_memory_allocated(dev) / 2**30, 3),
                peak_reserved_gib=round(torch.cuda.max_memory_reserved(dev) / 2**30, 3))


class Check:
    "The sections' results, written to report.md and results.json after each one."
    def __init__(self, a, settings):
        self.a, self.out, self.t0 = a, Path(a.out), time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        self.res = dict(settings=settings, sections={}, finished=False)
        self.dev = None

    def left(self): return self.a.budget - (time.perf_counter() - self.t0)

    def run(self, name, fn, ctx, needs=()):
        S = self.res['sections']
        if self.a.sections and name not in self.a.sections: return
        bad = [n for n in needs if S.get(n, {}).get('status') != 'ok']
        if bad:
            S[name] = dict(status='skipped', why=f"needs {', '.join(bad)}"); log(f'== {name}: skipped (needs {bad})')
            return self.save()
        if self.left() <= 0:
            S[name] = dict(status='skipped', why='time budget spent'); log(f'== {name}: skipped (budget)')
            return self.save()
        log(f'== {name} ({time.perf_counter() - self.t0:.0f}s in, {self.left():.0f}s of budget left)')
        S[name] = dict(status='running'); self.save()
        t = time.perf_counter()
        try:
            gpu_clean(self.dev)
            r = dict(status='ok', **fn(ctx))
            r.update(gpu_peaks(self.dev))
        except Stopped:
            S[name] = dict(status='stopped', why='the time limit (SIGTERM) ended it',
                           seconds=round(time.perf_counter() - t, 1))
            raise
        except Exception as e:
            r = dict(status='failed', error=f'{type(e).__name__}: {e}'[:800],
                     where=traceback.format_exc(limit=-8)[-2500:])
        r['seconds'] = round(time.perf_counter() - t, 1)
        if r['status'] == 'ok' and r.get('passed') is False: r['status'] = 'failed'
        S[name] = r
        brief = {k: v for k, v in r.items() if k not in ('status', 'where')}
        log(f'   {r["status"]}: ' + json.dumps(brief, default=str)[:1500])
        if r['status'] == 'failed' and 'where' in r: log(r['where'])
        self.save()

    def save(self):
        self.res['seconds'] = round(time.perf_counter() - self.t0, 1)
        files = (('results.json', json.dumps(self.res, indent=1, default=str)), ('report.md', report(self.res)))
        for name, text in files:
            tmp = self.out / f'.{name}.tmp'
            tmp.write_text(text); os.replace(tmp, self.out / name)

    @property
    def ok(self): return all(s['status'] == 'ok' for s in self.res['sections'].values())


def _cell(v):
    return '-' if v is None else f'{v:,.0f}' if isinstance(v, (int, float)) and abs(v) >= 100 else str(v)


def report(res) -> str:
    "report.md: the settings, the headline tables (speed, data path, compile, job memory), then every section's result."
    s, S = res['settings'], res['sections']
    L = [f"# minisweep device check ({'CPU mode' if s.get('cpu') else 'GPU'})", '',
         f"{s.get('device_name')} | torch {s.get('torch')} | Python {s.get('python')} | "
         f"precision {s.get('precision')} | {s.get('image_size')} px, batch {s.get('batch_size')} | "
         f"data {s.get('data')} | {res.get('seconds', 0):.0f} s in all"
         f"{'' if res.get('finished') else ' | **partial: the check did not finish**'}", '']
    sp, dp, cp, sw = (S.get(k, {}) for k in ('speed', 'datapath', 'compile', 'sweep'))
    models = [m for m in ('alexnet', 'resnet18') if isinstance(sp.get(m), dict) or isinstance(cp.get(m), dict)]
    if models:
        L += [f"## Training images/s at batch {s.get('batch_size')}", '',
              '| model | bare loop | minisweep | minisweep / bare | compile off | compile on | on / off | compile s '
              '| peak GiB |',
              '|---|---|---|---|---|---|---|---|---|']
        for m in models:
            a, c = sp.get(m) or {}, cp.get(m) or {}
            L.append(f"| {m} | {_cell(a.get('bare_ips'))} | {_cell(a.get('minisweep_ips'))} | {a.get('ratio', '-')} | "
                     f"{_cell(c.get('off_ips'))} | {_cell(c.get('on_ips'))} | {c.get('ratio', '-')} | "
                     f"{c.get('compile_seconds', '-')} | {a.get('peak_allocated_gib', '-')} |")
        L.append('')
    if any(isinstance(v, dict) for v in dp.values()):
        L += ['## The data path alone (no model)', '', '| cache | images/s | ms a batch |', '|---|---|---|']
        L += [f"| {k} | {_cell(v.get('ips'))} | {v.get('ms_per_batch')} |" for k, v in dp.items()
              if isinstance(v, dict) and 'ips' in v]
        if dp.get('training_share'):
            L.append(f"\nminisweep's training images/s over the first row's: {dp['training_share']} (the share "
                     "of a step the data path would take if nothing overlapped it).")
        L.append('')
    if sw.get('status') == 'ok':
        g = lambda k, none='-', unit=' MiB': none if sw.get(k) is None else f'{sw[k]}{unit}'
        L += ['## The sweep job', '',
              f"wall {g('wall_s', unit=' s')} (training {g('train_seconds', unit=' s')}). The job's own GPU memory: "
              f"{g('job_max_memory_allocated_mib', 'none in its metrics.json')} allocated at most (torch, in the job); "
              f"{g('gpu_mib_job_processes', 'none listed')} used by its processes (nvidia-smi per pid); "
              f"{g('gpu_mib_above_start')} above the device's use when it started (the checking process idle). "
              f"Host memory: {g('peak_pss_mb', unit=' MB')} PSS of its process tree (shared pages once).", '']
    ba = S.get('batches', {})
    if ba.get('status') == 'ok' and 'job_1_64_train_mib' in ba:
        L += ['## What a 1/64 job places', '',
              f"{ba['job_1_64_train_rows']} train rows, {ba['job_1_64_train_mib']} MiB "
              f"({ba.get('job_1_64_allocated_mib') or '-'} MiB allocated on the device), of a train split of "
              f"{ba['whole_train_mib']} MiB; the validation split goes whole. Mini-ImageNet at 227 px: 780 rows, "
              '157 MB of 10.1 GB.', '']
    ce = S.get('ceilings', {})
    if ce.get('status') == 'ok':
        L += ['## Ceilings measured here', '',
              ', '.join(f'{k} {v}' for k, v in ce.items()
                        if k not in ('status', 'seconds') and not k.startswith('peak_')),
              '']
    L += ['## Sections', '', '| section | status | seconds | result |', '|---|---|---|---|']
    for name, r in S.items():
        brief = {k: v for k, v in r.items() if k not in ('status', 'seconds', 'where')}
        L.append(f"| {name} | {r['status']} | {r.get('seconds', '')} | "
                 f"{json.dumps(brief, default=str)[:700].replace('|', '/')} |")
    fails = [(n, r) for n, r in S.items() if r['status'] == 'failed' and r.get('where')]
    for n, r in fails: L += ['', f'### {n}: traceback', '', '```', r['where'].strip(), '```']
    return '\n'.join(L) + '\n'


# --------------------------------------------------------------------------------------------------------------------
# sections

def check_imports(ctx):
    "minisweep's modules that the other sections use, and the versions of the packages they import."
    import minisweep.data, minisweep.train, minisweep.evaluate  # noqa: F401
    from minisweep.train import precision
    ctx['settings']['precision'] = precision(ctx['device'], True)
    import papermill, datasets
    return dict(papermill_from=str(Path(papermill.__file__).parents[1]),
                datasets_from=str(Path(datasets.__file__).parents[1]),
                packages={m: _version(m) for m in ('datasets', 'papermill', 'ipykernel', 'nbclient', 'fastcore',
                                                   'huggingface_hub', 'pyarrow', 'fsspec', 'numpy', 'pandas')})


def check_data(ctx):
    "The dataset opened with `datasets` and its train split decoded into the cache (timed)."
    from minisweep.data import load_splits, decoded_split, stored_size
    t = time.perf_counter()
    splits = load_splits(ctx['data'], ('train', 'validation'))
    train = decoded_split(splits['train'], stored_size(ctx['size']), progress=False)
    ctx['train_cache'] = train
    return dict(images=len(train), classes=len(train.classes), stored_px=stored_size(ctx['size']),
                cache_mib=round(train.images.nbytes / 2**20), decode_s=round(time.perf_counter() - t, 1),
                validation_images=len(splits['validation']))


def check_batches(ctx):
    """GPU cache, a job's placed subset rows and host staging against `cpu_batch` (CPU mode: staging, the placed rows in
    host memory), train and padded evaluation batches; the bytes a 1/64 job places of the train split."""
    import torch
    from minisweep.data import Batches, device_rows, subset_indices
    c, size, dev = ctx['train_cache'], ctx['size'], ctx['device']
    host = torch.from_numpy(c.images)
    idx, out = subset_indices(c.labels, 0.2 if len(c) > 2000 else 1.0, 0), {}
    paths = {'host staging': host, 'placed subset rows': device_rows(c.images, idx, dev)}
    if dev.type == 'cuda': paths['gpu cache'] = host.to(dev)
    for label, images in paths.items():
        rows = idx if label == 'placed subset rows' else None
        for kw in (dict(train=True, indices=idx), dict(pad_last=True, indices=idx[:300])):
            b = Batches(c, size, 64, device=dev, channels_last=True, images=images, rows=rows, **kw)
            ref = Batches(c, size, 64, channels_last=False, **kw)
            b.set_epoch(0, 3); ref.set_epoch(0, 3)
            same = n = 0
            for (x, y, k), (xr, yr, kr) in zip(b, ref):
                same += bool(torch.equal(x.cpu(), xr) and torch.equal(y.cpu(), yr) and k == kr); n += 1
            out[f"{label}, {'train' if kw.get('train') else 'eval'}"] = f'{same}/{n} batches identical'
    del paths, b, ref
    before = torch.cuda.memory_allocated(dev) if dev.type == 'cuda' else 0
    job = device_rows(c.images, subset_indices(c.labels, 1 / 64, 0), dev)     # what a 1/64 job's prepare_data places
    allocated = torch.cuda.memory_allocated(dev) - before if dev.type == 'cuda' else None
    placed = dict(job_1_64_train_rows=len(job), job_1_64_train_mib=round(job.nbytes / 2**20, 2),
                  job_1_64_allocated_mib=None if allocated is None else round(allocated / 2**20, 2),
                  whole_train_mib=round(c.images.nbytes / 2**20, 1))
    del job
    return dict(passed=all(v.split('/')[0] == v.split('/')[1].split()[0] for v in out.values()), **out, **placed)


def check_gather(ctx):
    "Rows beyond 2**32 bytes of a uint8 cache on the device, gathered and cropped by `Batches`, against `cpu_batch`."
    import numpy as np, torch
    from minisweep.data import Batches, ImageCache, cpu_batch, stored_size
    dev, size = ctx['device'], ctx['size']
    S = stored_size(size)
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
    elements = big.numel(); del big, b
    return dict(passed=bool(torch.equal(x.cpu().contiguous(), want)), elements=elements, over_2_32=elements > 2**32)


def check_syncs(ctx):
    "Synchronising CUDA calls per training step of minisweep's loop, with the cache on the GPU and in host memory."
    import torch
    from loops import MinisweepLoop
    from timing import warm_up
    if ctx['device'].type != 'cuda': return dict(passed=True, note='not applicable on the CPU')
    out = {}
    for label, on_dev in (('gpu cache', True), ('host staging', False)):
        loop = MinisweepLoop(ctx['cfg']('resnet18', cache_on_device=on_dev), ctx['device'])
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
        per_step = (counts[12] - counts[4]) / 8
        out[label] = dict(per_step=per_step, per_epoch_end=counts[4] - 4 * per_step,
                          where=sorted(where)[:8])
        del loop; gpu_clean(ctx['device'])
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


def check_ceilings(ctx):
    """The device's own ceilings, for reading the speed rows: a bf16 matrix product (TFLOP/s), a device-to-device copy
    (GB/s, bytes read plus written) and a pinned host-to-device copy (GB/s); random data, events, median of 5."""
    import statistics, torch
    dev = ctx['device']
    n, mb = (8192, 1024) if dev.type == 'cuda' else (512, 16)
    def t(fn, reps=5):
        fn()
        if dev.type != 'cuda':
            out = []
            for _ in range(reps): t0 = time.perf_counter(); fn(); out.append(time.perf_counter() - t0)
            return statistics.median(out)
        out = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record(); fn(); b.record(); b.synchronize(); out.append(a.elapsed_time(b) / 1e3)
        return statistics.median(out)
    x, y = torch.randn(n, n, device=dev, dtype=torch.bfloat16), torch.randn(n, n, device=dev, dtype=torch.bfloat16)
    mm = t(lambda: x @ y)
    src = torch.randint(0, 255, (mb * 2**20,), dtype=torch.uint8, device=dev); dst = torch.empty_like(src)
    cp = t(lambda: dst.copy_(src))
    out = dict(bf16_matmul_tflops=round(2 * n**3 / mm / 1e12, 1), d2d_copy_gbs=round(2 * src.numel() / cp / 1e9))
    if dev.type == 'cuda':
        host = src.cpu().pin_memory()
        h2d = t(lambda: dst.copy_(host, non_blocking=True))
        out['h2d_pinned_gbs'] = round(host.numel() / h2d / 1e9, 1)
        del host
    del x, y, src, dst
    return out


def interleaved(loops: dict, dev, ctx, base: str) -> dict:
    "Warm each loop up, then time them round-robin (drift and other load hit all alike): median images/s of each."
    import statistics
    from timing import timed, warm_up
    per = {k: warm_up(l.train, dev, 3, ctx['warm_s']) for k, l in loops.items()}
    steps = max(1, min(400, round(ctx['rep_s'] / per[base])))
    ips = {k: [] for k in loops}
    for _ in range(ctx['repeats']):
        for k, l in loops.items(): ips[k].append(steps * ctx['batch_size'] / timed(l.train, steps, dev))
    return dict(steps=steps, repeats=ctx['repeats'], **{k: statistics.median(v) for k, v in ips.items()})


def check_speed(ctx):
    "minisweep's loop against the bare loop, both models, at the study's batch; each model's own peak GPU memory."
    from loops import BareLoop, MinisweepLoop
    out, dev = {}, ctx['device']
    for m in ('alexnet', 'resnet18'):
        gpu_clean(dev)
        ms = MinisweepLoop(ctx['cfg'](m), dev)
        bare = BareLoop(ctx['cfg'](m), dev, ms.n_classes, ms.channels_last, ms.opt)
        r = interleaved(dict(bare=bare, minisweep=ms), dev, ctx, 'bare')
        out[m] = dict(bare_ips=round(r['bare']), minisweep_ips=round(r['minisweep']),
                      ratio=round(r['minisweep'] / r['bare'], 3), steps=r['steps'], repeats=r['repeats'],
                      sgd=bare.sgd, **gpu_peaks(dev))
        del ms, bare
    return out


def check_datapath(ctx):
    "minisweep's `Batches` alone (cut, moved, cropped, flipped, normalised; no model) from each cache placement."
    from loops import MinisweepLoop
    from timing import timed, warm_up
    dev, out = ctx['device'], {}
    places = (('gpu cache', True), ('host staging', False)) if dev.type == 'cuda' else (('host (CPU)', False),)
    for label, on_dev in places:
        gpu_clean(dev)
        loop = MinisweepLoop(ctx['cfg']('resnet18', cache_on_device=on_dev), dev)
        per = warm_up(loop.batches, dev, 3, ctx['warm_s'] / 2)
        steps = max(3, min(2000, round(ctx['rep_s'] / 2 / max(per, 1e-6))))
        t = min(timed(loop.batches, steps, dev) for _ in range(ctx['repeats']))
        out[label] = dict(ips=round(steps * ctx['batch_size'] / t), ms_per_batch=round(1e3 * t / steps, 3), steps=steps,
                          on_device=bool(loop.data['train'].images.device.type == 'cuda'), **gpu_peaks(dev))
        del loop
    sp = ctx.get('speed_ips')
    if sp: out['training_share'] = {m: round(v / out[next(iter(out))]['ips'], 3) for m, v in sp.items()}
    return out


def check_compile(ctx):
    "minisweep's loop with `torch.compile` on against off, per model while the budget lasts; the first step's seconds."
    import torch, minisweep.train as mt
    from loops import MinisweepLoop
    from timing import timed
    dev, out = ctx['device'], {}
    real = mt.compile_model
    if dev.type == 'cpu':   # the section's own code checked: dynamo traces, the eager backend runs (no C++ compiler)
        mt.compile_model = lambda model, backend='eager': real(model, backend='eager')
        out['note'] = 'CPU mode: the eager backend (the code path, not a speed)'
    try:
        for m in ctx['compile_models']:
            if ctx['left']() < ctx['compile_need_s']:
                out[m] = dict(skipped=f"less than {ctx['compile_need_s']} s of budget left"); continue
            gpu_clean(dev); torch._dynamo.reset()
            off, on = MinisweepLoop(ctx['cfg'](m), dev), MinisweepLoop(ctx['cfg'](m, compile=True), dev)
            first = timed(on.train, 1, dev)                         # tracing and code generation: the compile time
            r = interleaved(dict(off=off, on=on), dev, ctx, 'off')
            out[m] = dict(off_ips=round(r['off']), on_ips=round(r['on']), ratio=round(r['on'] / r['off'], 3),
                          compile_seconds=round(first, 1), steps=r['steps'], **gpu_peaks(dev))
            del off, on
    finally: mt.compile_model = real
    return out


def _pids(pid) -> list:
    try:
        import psutil
        return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except Exception: return [pid]


def check_sweep(ctx):
    "One papermill run through `minisweep sweep`, evaluated there (GPU) and again on the CPU from its checkpoint."
    from jobs import run_monitored, gpu_used_mib
    from minisweep.evaluate import evaluate_checkpoint
    work = Path(ctx['work']); out = work / 'sweep'
    cmd = [sys.executable, '-c', 'import sys; from minisweep.cli import main; sys.exit(main())', 'sweep',
           '--models', 'resnet18', '--subset-sizes', str(ctx['sweep_fraction']), '--seeds', '0',
           '--num-epochs', str(ctx['sweep_epochs']), '--batch-size', str(ctx['batch_size']),
           '--image-size', str(ctx['size']),
           '--dataset', ctx['data'], '--out', str(out), '--figures', '']   # no curves: one run draws none
    at_start = gpu_used_mib() if ctx['device'].type == 'cuda' else None
    timeout = max(30.0, min(ctx['sweep_timeout'], ctx['left']() - 20))
    r = run_monitored(cmd, dict(os.environ), work / 'sweep.log', timeout=timeout)
    tail = (work / 'sweep.log').read_text()[-3000:]
    (Path(ctx['out']) / 'sweep_log_tail.txt').write_text(tail)
    res = dict(rc=r['rc'], wall_s=round(r['wall'], 1), timeout_s=round(timeout), killed=r.get('killed'),
               peak_pss_mb=_r(r.get('peak_pss_mb')), peak_rss_one_mb=_r(r.get('peak_rss_one_mb')),
               processes=r.get('processes'), gpu_mib_job_processes=_r(r.get('peak_gpu_mib_own')),
               gpu_mib_device_peak=_r(r.get('peak_gpu_mib')), gpu_mib_at_start=_r(at_start),
               gpu_mib_above_start=_r(r['peak_gpu_mib'] - at_start)
               if r.get('peak_gpu_mib') and at_start is not None else None)
    if r['rc'] != 0: return dict(passed=False, **res, log_tail=tail[-600:])
    run = next(out.glob('resnet18/*/seed_0'))
    metrics = json.loads((run / 'metrics.json').read_text())
    there = json.loads((out / 'results.json').read_text())['runs'][0]      # evaluated by the sweep, on the device
    ev = evaluate_checkpoint(run, device='cpu', progress=False)
    mem = next((metrics[k] for k in ('max_memory_allocated_mib', 'gpu_max_memory_allocated_mib') if k in metrics), None)
    res.update(device=metrics['device'], precision=metrics.get('precision'),
               train_seconds=round(metrics['train_seconds'], 1),
               job_max_memory_allocated_mib=mem,
               val_top5_error=round(metrics['val_top5_error'], 4), test_top5_error_there=round(there['top5_error'], 4),
               test_top5_error_cpu=round(ev.top5_error, 4), test_top1_error_there=round(there['top1_error'], 4),
               test_top1_error_cpu=round(ev.top1_error, 4))
    res['passed'] = abs(res['test_top5_error_there'] - res['test_top5_error_cpu']) <= 0.02
    return res


def _r(x): return None if x is None else round(x)


# --------------------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    a = parse_args(argv)
    if a.make_data: return make_data(a)
    os.environ.setdefault('HF_HUB_OFFLINE', '1'); os.environ.setdefault('HF_DATASETS_OFFLINE', '1')
    import torch
    if a.cpu: dev = torch.device('cpu')
    elif not torch.cuda.is_available():
        print('device_check: torch sees no CUDA GPU (use --cpu for the CPU mode)', file=sys.stderr); return 2
    else: dev = torch.device('cuda')
    if a.data: data = Path(a.data)
    elif a.cpu:
        import minisweep                   # the package alone: its modules are imported (and reported) by a section
        data = Path(minisweep.__file__).parent / 'sample'
    else: data = DEFAULT_DATA
    if not (data / 'data').is_dir():
        print(f'device_check: dataset {data} not found (make it with --make-data DIR where the full one is, '
              'and carry it)',
              file=sys.stderr); return 2
    work = Path(a.work or tempfile.mkdtemp(prefix='device-check-'))
    work.mkdir(parents=True, exist_ok=True)
    os.environ['MINISWEEP_CACHE'] = str(work / 'cache')
    size, bs = (64, 32) if a.cpu else (227, STUDY_BATCH)
    from machine import set_up
    set_up(dev)
    settings = dict(cpu=a.cpu, device=str(dev),
                    device_name=torch.cuda.get_device_name(dev) if dev.type == 'cuda'
                    else platform.processor() or 'cpu',
                    capability=list(torch.cuda.get_device_capability(dev)) if dev.type == 'cuda' else None,
                    precision=None, torch=torch.__version__, python=platform.python_version(),
                    minisweep=_version('minisweep'), image_size=size, batch_size=bs, data=str(data), budget_s=a.budget)
    log('device check:', json.dumps(settings))
    chk = Check(a, settings); chk.dev = dev
    signal.signal(signal.SIGTERM, _on_term)

    def cfg(m, **kw):
        from minisweep.train import TrainConfig
        return TrainConfig(model=m, subset_size=1.0, dataset=str(data), image_size=size, batch_size=bs,
                           device=str(dev), progress=False, **kw).check()
    ctx = dict(device=dev, size=size, batch_size=bs, work=str(work), out=str(a.out), data=str(data), cfg=cfg,
               settings=settings, left=chk.left, warm_s=0.0 if a.cpu else 2.0, rep_s=1.0 if a.cpu else 3.0,
               repeats=1 if a.cpu else 3, sweep_fraction=0.5 if a.cpu else 0.25, sweep_epochs=1 if a.cpu else 2,
               sweep_timeout=400 if a.cpu else 150, compile_models=('resnet18',) if a.cpu else ('resnet18', 'alexnet'),
               compile_need_s=20 if a.cpu else 75)
    rc = 0
    try:
        chk.run('imports', check_imports, ctx)
        chk.run('data', check_data, ctx, needs=('imports',))
        chk.run('batches', check_batches, ctx, needs=('data',))
        chk.run('gather', check_gather, ctx, needs=('imports',))
        chk.run('syncs', check_syncs, ctx, needs=('data',))
        chk.run('rng', check_rng, ctx, needs=('imports',))
        chk.run('ceilings', check_ceilings, ctx)
        chk.run('speed', check_speed, ctx, needs=('data',))
        sp = chk.res['sections'].get('speed', {})
        ctx['speed_ips'] = {m: v['minisweep_ips'] for m, v in sp.items()
                            if isinstance(v, dict) and 'minisweep_ips' in v}
        chk.run('datapath', check_datapath, ctx, needs=('data',))
        chk.run('sweep', check_sweep, ctx, needs=('imports',))
        chk.run('compile', check_compile, ctx, needs=('data',))
        chk.res['finished'] = True
    except Stopped:
        log('device_check: stopped by SIGTERM (the time limit); the running job was taken down; partial report follows')
        rc = 124
    except KeyboardInterrupt:
        rc = 130
    finally:
        from jobs import stop_child
        stop_child()
        chk.save()
        ctx.pop('train_cache', None)
        if not a.work: shutil.rmtree(work, ignore_errors=True)
    log('\n' + report(chk.res))
    log(f"device check {'passed' if chk.ok and rc == 0 else 'FAILED' if rc == 0 else 'STOPPED'} in "
        f"{chk.res['seconds']:.0f}s; report in {a.out}")
    return rc or (0 if chk.ok else 1)


def _version(mod):
    try:
        from importlib.metadata import version
        return version(mod)
    except Exception: return None


if __name__ == '__main__':
    sys.exit(main())
