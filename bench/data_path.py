"""The data path alone: what minisweep's batches cost against the seed-style loader, with the model removed.

- `measure_data_only`: images/s of each data path (minisweep's `Batches` from the cache, the seed-style DataLoader);
- `data_breakdown`: where the CPU batch time goes, `cpu_batch` against the path it replaced and that path's steps."""
import gc, statistics, time
from pathlib import Path

import torch

from machine import log, n_cores
from timing import Result, contended, pick_steps, timed_c, warm_up
from loops import MinisweepLoop, SeedLoop, make_cfg, old_batch


def time_batches(loop, args, device, warm_steps: int, warm_s: float, probe_steps: int) -> tuple:
    """`loop.batches` (a data path with no model) warmed up, its seconds a step probed over `probe_steps`, then timed
    `args.repeats` times back to back: (steps of a repeat, seconds of each repeat, other cores during each)."""
    warm_up(loop.batches, device, warm_steps, warm_s)
    steps = pick_steps(warm_up(loop.batches, device, probe_steps, 0.0), args)
    tc = [timed_c(loop.batches, steps, device) for _ in range(args.repeats)]
    return steps, [t for t, _ in tc], [o for _, o in tc]

@contended
def measure_data_only(args, size, dataset, device) -> dict:
    "Images/s of the data paths alone: the seed-style DataLoader vs minisweep's Batches from the cache."
    cfg = make_cfg(args, args.models[0], size, dataset, device)
    ms = MinisweepLoop(cfg, device)
    steps_ms, t_ms, o_ms = time_batches(ms, args, device, 3, 0.0 if args.quick else 1.0, 3)
    del ms; gc.collect()
    seed = SeedLoop(dataset, cfg, device, None, n_cores())
    try: steps_seed, t_seed, o_seed = time_batches(seed, args, device, 2 * n_cores() + 2, 0.0 if args.quick else 2.0, 4)
    finally: seed.close()
    out = dict(image_size=size, dataset=Path(dataset).name, workers=n_cores(),
               seed=Result.of('seed loader', t_seed, steps_seed, cfg.batch_size, o_seed),
               minisweep=Result.of('minisweep batches', t_ms, steps_ms, cfg.batch_size, o_ms))
    out['ratio'] = out['minisweep']['ips'] / out['seed']['ips']
    log(f"  data only {size}px ({out['dataset']}): seed loader {out['seed']['ips']:.0f} img/s, "
        f"minisweep batches {out['minisweep']['ips']:.0f} img/s, {out['ratio']:.1f}x")
    return out

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
