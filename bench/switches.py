#!/usr/bin/env python
"""What each of minisweep's speed switches gives, measured side by side on this machine.

For each model: minisweep's own training loop (`MinisweepLoop` of bench/loops.py: `prepare_data`, `create_model`,
`make_optimizer` and `train_epoch`, set up as `train_run` sets them up) with every switch at its default, and once more
with
each switch flipped, all timed round-robin in the same rounds (median of the repeats, training images/s). Switches:

- everywhere: the memory format `auto` did not pick (`channels_last` forced the other way); `bf16` (autocast) off;
- on CUDA: `cache_on_device` off (the uint8 cache stays the memory map on disk; each batch is gathered into a pinned
  staging buffer and copied without blocking), `compile` on.

In the same rounds, the bare train step (`BareLoop`: one synthetic batch, no data path) in each memory format: the
ceiling, and the check that `auto` picked the faster one. Above the table, what `auto` picked for each model and the
measurement it picked on (`measured_format`'s record, from the cache beside the decoded splits, or measured now).

    .venv/bin/python bench/switches.py [--models alexnet resnet18] [--image-size 64] [--batch-size 64] [--repeats 5]
                                       [--formats-only]

Prints a Markdown table and writes it to bench/out/switches.md (or --out). Not a test: figures, not assertions.
"""
import argparse, dataclasses, gc, statistics, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from machine import log, machine_info, open_device  # noqa: E402  (the benchmark's loops and helpers)
from timing import Contention, timed, warm_up  # noqa: E402
from loops import BareLoop, MinisweepLoop, make_cfg  # noqa: E402

BARE = {'true': 'bare step, channels-last', 'false': 'bare step, contiguous'}


def variants(device, picked: str, formats_only: bool) -> list:
    "(label, TrainConfig changes) of every switch that applies on `device`; `picked` is auto's format."
    other = {'true': 'false', 'false': 'true'}[picked]
    v = [(f'defaults (auto: channels_last {picked})', {}), (f'channels_last {other}', dict(channels_last=other))]
    if formats_only: return v
    v.append(('bf16 off', dict(bf16=False)))
    if device.type == 'cuda':
        v += [('cache_on_device off (memory-mapped host cache, pinned staging)', dict(cache_on_device=False)),
              ('compile on', dict(compile=True))]
    return v


def auto_choice(cfg, device) -> dict:
    "What `auto` picks for `cfg` on `device`, and on what: the cached (or a fresh) measurement on a CPU."
    from minisweep.train import measured_format, run_format
    if device.type != 'cpu': return dict(channels_last=run_format(cfg, device), why='CUDA: channels-last, not measured')
    rec = measured_format(cfg, device)
    ips = rec['images_per_second']
    return dict(rec, why=f"measured {rec['measured']} in {rec['seconds']:.1f} s: contiguous {ips['contiguous']:.0f}, "
                         f"channels-last {ips['channels_last']:.0f} img/s (bare steps, {rec['key'].split(' | ')[4]})")


def measure(args, model, device) -> tuple:
    base = make_cfg(args, model, args.image_size, args.dataset, device)     # minisweep's defaults (compile off)
    choice = auto_choice(base, device)
    log(f"  {model}: auto picks channels_last {choice['channels_last']} ({choice['why']})")
    loops = []
    for label, changes in variants(device, choice['channels_last'], args.formats_only):
        loop = MinisweepLoop(dataclasses.replace(base, **changes), device)
        warm_up(loop.train, device, min_steps=3, min_seconds=2.0 if device.type == 'cpu' else 5.0)
        loops.append((label, loop))
    ms = loops[0][1]
    for fmt, label in BARE.items():
        loop = BareLoop(base, device, ms.n_classes, fmt == 'true', ms.opt)
        warm_up(loop.train, device, min_steps=3, min_seconds=2.0 if device.type == 'cpu' else 5.0)
        loops.append((label, loop))
    per_step = timed(loops[0][1].train, 2, device) / 2
    steps = max(1, round(args.seconds / per_step))
    ips = {label: [] for label, _ in loops}
    for _ in range(args.repeats):
        for label, loop in loops:
            ips[label].append(steps * args.batch_size / timed(loop.train, steps, device))
    d = statistics.median(ips[loops[0][0]])
    rows = [dict(model=model, switch=label, ips=statistics.median(ips[label]), ratio=statistics.median(ips[label]) / d,
                 spread=(min(ips[label]), max(ips[label])), steps=steps) for label, _ in loops]
    faster = max((r for r in rows if r['switch'] in BARE.values()), key=lambda r: r['ips'])
    choice.update(faster_bare=faster['switch'], auto_over_faster_bare=d / faster['ips'])
    for r in rows: log(f"  {model} {r['switch']}: {r['ips']:.0f} img/s ({r['ratio']:.2f}x the defaults)")
    log(f"  {model}: minisweep (auto) at {choice['auto_over_faster_bare']:.2f}x the faster bare step "
        f"({faster['switch']})")
    del loops, ms; gc.collect()
    return rows, choice


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--dataset',
                   default=str(Path(__file__).resolve().parents[1].parent / 'shared/data/tiny-imagenet-100'))
    p.add_argument('--models', nargs='+', default=['alexnet', 'resnet18'])
    p.add_argument('--image-size', type=int, default=64)
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--seconds', type=float, default=2.0, help='target seconds of one timed repeat (default 2)')
    p.add_argument('--device', default='auto')
    p.add_argument('--formats-only', action='store_true', help="time the two memory formats only (minisweep's and "
                   "bare)")
    p.add_argument('--out', default=str(Path(__file__).parent / 'out' / 'switches.md'))
    args = p.parse_args(argv)
    from minisweep.data import UserError
    try: device = open_device(args.device)
    except UserError as e: print(f'switches: {e}', file=sys.stderr); return 2
    if not (Path(args.dataset) / 'data').is_dir():
        print(f'switches: dataset {args.dataset} not found (give --dataset)', file=sys.stderr); return 2
    info = machine_info(device)
    rows, choices = [], {}
    with Contention() as c:
        for m in args.models:
            r, choices[m] = measure(args, m, device); rows += r
    L = [f"# minisweep's speed switches, side by side", '',
         f"{info['cpu']} x{info['cores']}, {info['gpu']}, device {device}; torch {info['torch']}; minisweep "
         f"{info['minisweep']} (git {info['commit']}); {info['date']}. Model at {args.image_size} px, batch "
         f"{args.batch_size}, `{Path(args.dataset).name}`; median of {args.repeats} round-robin repeats; other load "
         f"{c.as_dict()['other_cores']:.2f} cores.", '',
         '## The memory format `auto` picked', '']
    L += [f"- {m}: **channels_last {ch['channels_last']}** ({ch['why']}); minisweep's loop with it runs at "
          f"**{ch['auto_over_faster_bare']:.2f}x** the faster bare step ({ch['faster_bare']})" for m,
          ch in choices.items()]
    L += ['', '| model | switch | training images/s | vs the defaults | spread (min-max) |', '|---|---|---|---|---|']
    L += [f"| {r['model']} | {r['switch']} | {r['ips']:,.0f} | **{r['ratio']:.2f}x** | "
          f"{r['spread'][0]:,.0f}-{r['spread'][1]:,.0f} |" for r in rows]
    md = '\n'.join(L) + '\n'
    Path(args.out).parent.mkdir(parents=True, exist_ok=True); Path(args.out).write_text(md)
    print(md)
    return 0


if __name__ == '__main__':
    sys.exit(main())
