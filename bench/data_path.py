"""The data path alone: images/s of minisweep's `Batches` from the cache against the seed-style DataLoader, with the
model removed."""
import gc
from pathlib import Path

import torch

from machine import log, n_cores
from timing import Result, contended, pick_steps, timed_c, warm_up
from loops import MinisweepLoop, SeedLoop, make_cfg


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
