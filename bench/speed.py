"""Sections 1-2: training images/s of minisweep's loop against the bare loop (the ceiling) and the seed-style pipeline.

The repeats of minisweep and the bare loop run round-robin, so that drift and other load hit them alike; the seed-style
loop runs after them, its repeats back to back (its workers would otherwise prefetch for free while the other loops
run)."""
import gc
from pathlib import Path

import torch

from machine import log, n_cores
from timing import Result, contended, pick_steps, round_ratios, timed_c, warm_up
from loops import BareLoop, MinisweepLoop, SeedLoop, make_cfg


def interleaved(loops: dict, args, device, warm_steps: int, warm_s: float) -> tuple:
    """Warm each loop up, then time them round-robin: (steps of a repeat, seconds of each repeat, other cores during
    each)."""
    per_step = {k: warm_up(l.train, device, warm_steps, warm_s) for k, l in loops.items()}
    steps = pick_steps(per_step['bare'], args)
    times, other = {k: [] for k in loops}, {k: [] for k in loops}
    for r in range(args.repeats):
        for k, l in loops.items():
            t, oc = timed_c(l.train, steps, device); times[k].append(t); other[k].append(oc)
    return steps, times, other

def seed_style(args, cfg, dataset, device, ms, steps, warm_steps, warm_s) -> dict:
    "The seed-style pipeline feeding a fresh copy of the model, `args.repeats` repeats of `steps` back to back."
    seed_bare = BareLoop(cfg, device, ms.n_classes, ms.channels_last, ms.opt)
    seed = SeedLoop(dataset, cfg, device, seed_bare, n_cores())
    try:
        warm_up(seed.train, device, max(warm_steps, 2), warm_s)
        tc = [timed_c(seed.train, steps, device) for _ in range(args.repeats)]
    finally: seed.close()
    return Result.of('seed', [t for t, _ in tc], steps, cfg.batch_size, [o for _, o in tc], loss=float(seed_bare.last))

@contended
def measure_training(args, model_name, size, dataset, device, compile=False) -> dict:
    """minisweep vs bare, repeats interleaved round-robin (so drift and other load hit both alike); then the seed-style
    pipeline, same model."""
    cfg = make_cfg(args, model_name, size, dataset, device, compile)
    if device.type == 'cuda': torch.cuda.reset_peak_memory_stats(device)
    ms = MinisweepLoop(cfg, device)
    loops = dict(bare=BareLoop(cfg, device, ms.n_classes, ms.channels_last, ms.opt), minisweep=ms)
    warm_steps, warm_s = (1, 0.0) if args.quick else (3, 2.0)
    if compile: warm_steps = max(warm_steps, 3)
    steps, times, other = interleaved(loops, args, device, warm_steps, warm_s)
    out = dict(model=model_name, image_size=size, dataset=Path(dataset).name, compile=compile,
               channels_last=ms.channels_last, bf16=cfg.bf16, lr=cfg.lr, sgd=loops['bare'].sgd)
    for k, l in loops.items():
        loss = float(l.last if isinstance(l, BareLoop) else l.last[0])
        out[k] = Result.of(k, times[k], steps, cfg.batch_size, other[k], loss=loss)
    out['ratio_minisweep_bare'] = out['minisweep']['ips'] / out['bare']['ips']
    out['rounds_minisweep_bare'] = round_ratios(out['minisweep'], out['bare'])
    log(f"  {model_name} {size}px{' compile' if compile else ''}: bare {out['bare']['ips']:.1f} img/s, "
        f"minisweep {out['minisweep']['ips']:.1f} img/s, ratio {out['ratio_minisweep_bare']:.3f} ({steps} steps x "
        f"{args.repeats})")
    del loops; gc.collect()
    if not args.no_seed and not compile:
        out['seed'] = seed_style(args, cfg, dataset, device, ms, steps, warm_steps, warm_s)
        out['ratio_minisweep_seed'] = out['minisweep']['ips'] / out['seed']['ips']
        log(f"  {model_name} {size}px: seed-style {out['seed']['ips']:.1f} img/s, minisweep/seed "
            f"{out['ratio_minisweep_seed']:.2f}x")
    if device.type == 'cuda': out['max_memory_allocated_gib'] = torch.cuda.max_memory_allocated(device) / 2**30
    del ms; gc.collect()
    return out
