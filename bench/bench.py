#!/usr/bin/env python
"""minisweep benchmark: is the sweep bound by the accelerator, not by JPEG decoding?

Measured side by side, in one run, on one machine, with the same model, batch and image size:

1. training images/s of minisweep's own loop (`prepare_data` + `make_optimizer` + `train_epoch`, as `train_run` calls
them)
   against a bare PyTorch loop on synthetic tensors already on the device (the ceiling);
2. the same against a seed-style pipeline (HF dataset + PIL decode + torchvision transforms + DataLoader), on the
   64 px data and on a copy of a slice of it re-encoded as 500x375 JPEGs (Mini-ImageNet's usual size), and the
   data pipelines alone (the model removed);
3. the cost of decoding once (`decoded_split` into a fresh cache) and the proof that a sweep decodes each split once;
4. the demo's wall time and peak memory;
5. the peak memory of one training run over the whole split, at 64 px and at 227 px (a 9.6 GB cache), against
   the cache plus the model.

It prints everything and writes BENCHMARKS.md (and bench/out/bench.json). Run it with `make bench` or
`.venv/bin/python bench/bench.py`; `--quick` is a smoke run of about a minute; `--render JSON` writes BENCHMARKS.md
again
from saved results without measuring. bench/device_check.sh checks the GPU path on a CUDA machine.

This file is the command line and the order of the sections; the measurements live beside it, one module a family:
speed.py (1-2), data_path.py (the data path alone), decode.py (3), memory.py (4-5), built on loops.py (the three
training loops), timing.py (repeats, warm-up, other load), jobs.py (minisweep's commands as watched subprocesses) and
machine.py; report.py turns the results into BENCHMARKS.md, one function a section.
"""
from __future__ import annotations
import argparse, json, os, shutil, signal, sys, time
from pathlib import Path

from machine import REPO, DEFAULT_DATA, log, machine_info, open_device      # first: it keeps the benchmark offline

from timing import Contention
from report import findings, report
from minisweep.core import atomic_write      # the report and its numbers are never half-written
from decode import large_copy, measure_decode, sweep_check
from speed import measure_training
from data_path import measure_data_only
from memory import demo_check, memory_check
import jobs

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--dataset', default=str(DEFAULT_DATA), help='the 64 px dataset (timm/mini-imagenet layout)')
    p.add_argument('--models', nargs='+', default=['alexnet', 'resnet18'])
    p.add_argument('--image-sizes', nargs='+', type=int, default=[64, 227],
                   help='sizes above 64 train on the 500x375 re-encoded copy')
    p.add_argument('--batch-size', type=int, default=64)
    p.add_argument('--device', default='auto', help='auto, cpu, cuda or cuda:N')
    p.add_argument('--quick', action='store_true',
                   help='CI-sized smoke run: 1 step per measurement, training rows at the smallest size only, no sweep '
                   'or demo')
    p.add_argument('--compile', action='store_true', help='also measure minisweep and the bare loop under '
                   'torch.compile')
    p.add_argument('--repeats', type=int, default=None, help='timed repeats per measurement (median reported); default '
                   '5, quick 1')
    p.add_argument('--seconds', type=float, default=None, help='target seconds of one timed repeat; default 2, quick '
                   '0.5')
    p.add_argument('--copy-per-class', type=int, default=None,
                   help='training images per class in the 500x375 copy; default 20 (2,000 images), quick 2')
    p.add_argument('--no-seed', action='store_true', help='skip the seed-style pipeline with the model')
    p.add_argument('--no-sweep', action='store_true', help='skip the decode-once sweep check (skipped by --quick '
                   'unless --sweep)')
    p.add_argument('--no-demo', action='store_true', help='skip the demo run (skipped by --quick unless --demo)')
    p.add_argument('--sweep', action='store_true', help='run the sweep check even with --quick')
    p.add_argument('--demo', action='store_true', help='run the demo even with --quick')
    p.add_argument('--no-memory', action='store_true', help='skip the memory check of one training run on the whole '
                   'split (skipped by --quick unless --memory)')
    p.add_argument('--memory', action='store_true', help='run the memory check even with --quick')
    p.add_argument('--memory-sizes', nargs='+', type=int, default=None,
                   help='image sizes of the memory check (default 64 227: at 227 px the cache is 9.6 GB, near the real '
                        'study\'s 11.5 GB; quick: 64)')
    p.add_argument('--work-dir', default=str(REPO / 'bench/out'),
                   help='caches, the 500x375 copy, runs (never committed)')
    p.add_argument('--out', default=str(REPO / 'BENCHMARKS.md'))
    p.add_argument('--json', default=None, help='raw results; default WORK_DIR/bench.json')
    p.add_argument('--render', default=None, metavar='JSON',
                   help='measure nothing: write --out again from the results of an earlier run')
    a = p.parse_args(argv)
    a.repeats = a.repeats or (1 if a.quick else 5)
    a.seconds = a.seconds or (0.5 if a.quick else 2.0)
    a.copy_per_class = a.copy_per_class or (2 if a.quick else 20)
    if a.quick: a.no_sweep, a.no_demo = a.no_sweep or not a.sweep, a.no_demo or not a.demo
    if a.quick: a.no_memory = a.no_memory or not a.memory
    a.memory_sizes = a.memory_sizes or ([64] if a.quick else [64, 227])
    if a.batch_size < 1: p.error('--batch-size must be at least 1')
    return a

def main(argv=None):
    args = parse_args(argv)
    if args.render: return render(args)
    with Contention() as whole: code = _main(args, argv, whole)
    return code

def render(args) -> int:
    "`--render`: write the report again from the results of an earlier run, measuring nothing."
    try: res = json.loads(Path(args.render).read_text())
    except (OSError, ValueError) as e:
        print(f'bench: cannot read the results {args.render}: {getattr(e, "strerror", None) or e}',
              file=sys.stderr); return 2
    try: res['findings'] = findings(res); md = report(res)
    except (KeyError, TypeError, AttributeError) as e:
        print(f'bench: {args.render} does not hold the results of bench/bench.py ({type(e).__name__}: {e})',
              file=sys.stderr); return 2
    atomic_write(Path(args.out), md); log(f'wrote {args.out} from {args.render}')
    return 0

def find_dataset(args) -> Path | None:
    "`--dataset`, or with `--quick` the sample shipped with minisweep when it is missing; None when it is missing."
    from minisweep.data import sample_dataset
    dataset = Path(args.dataset).expanduser()
    if (dataset / 'data').is_dir(): return dataset
    if not args.quick: return None
    log(f'dataset {dataset} not found: --quick falls back to the sample shipped with minisweep')
    return Path(sample_dataset())

def _main(args, argv, whole):
    t_start = time.perf_counter()
    from minisweep.data import UserError, stored_size
    try: device = open_device(args.device)
    except UserError as e: print(f'bench: {e}', file=sys.stderr); return 2
    dataset = find_dataset(args)
    if dataset is None:
        print(f'bench: dataset {Path(args.dataset).expanduser()} not found (give --dataset, or use --quick to fall '
              f'back to the shipped sample)', file=sys.stderr)
        return 2
    work = Path(args.work_dir); work.mkdir(parents=True, exist_ok=True)
    cache = work / 'cache'
    shutil.rmtree(cache, ignore_errors=True); cache.mkdir(parents=True)
    os.environ['MINISWEEP_CACHE'] = str(cache)            # prepare_data reads it: every cache below is built afresh

    info = machine_info(device)
    log('machine:', ', '.join(f'{k}={v}' for k, v in info.items()))
    args.image_sizes = sorted(set(args.image_sizes))
    copy = large_copy(args, dataset, work)
    settings = dict(batch_size=args.batch_size, repeats=args.repeats, seconds=args.seconds, quick=args.quick,
                    dataset=str(dataset), copy=str(copy) if copy else '-', models=args.models,
                    image_sizes=args.image_sizes,
                    stored={str(s): stored_size(s) for s in args.image_sizes},
                    copy_n=0, copy_kb=json.loads((copy / 'copy.json').read_text())['mean_kb'] if copy else 0)
    command = 'bench/bench.py ' + ' '.join(sys.argv[1:] if argv is None else argv)
    res = dict(info=info, settings=settings, command=command,
               train=[], data=[], decode=[], incomplete='starting')
    json_path = Path(args.json or work / 'bench.json')

    def save(stage=None):
        "Write the JSON and the report as they stand (after every section, so a killed run leaves what it measured)."
        res['incomplete'], res['seconds'] = stage, time.perf_counter() - t_start
        res['contention'] = whole.snapshot(); res['findings'] = findings(res)
        atomic_write(json_path, json.dumps(res, indent=1, default=str))
        atomic_write(Path(args.out), report(res))
        return report(res)

    def on_term(signum, frame):
        "Killed: stop the job we may be running, write what was measured, and go (no unwinding through DataLoaders)."
        jobs.stop_child()
        try: save(f"{res['incomplete']} (terminated by signal {signum})")
        finally:
            print(f"bench: terminated during {res['incomplete']}; partial results in {args.out} and {json_path}",
                  file=sys.stderr, flush=True)
            os._exit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    try: code = measure_all(args, res, save, device, dataset, copy, work)
    except KeyboardInterrupt as e:
        save(f"{res['incomplete']} (interrupted: {e or 'Ctrl-C'})")
        print(f"bench: interrupted during {res['incomplete']}; partial results in {args.out} and {json_path}",
              file=sys.stderr)
        return 130
    log(f'\nwrote {args.out} and {json_path} in {res["seconds"]:.0f}s')
    return code

def measure_all(args, res, save, device, dataset: Path, copy: Path | None, work: Path) -> int:
    "Every section in turn into `res`, saving before each one (so that a killed run says where it stopped)."
    from minisweep.data import stored_size
    data_for = lambda s: dataset if s <= 64 else copy
    save('decode once')

    log('3. decode once (fresh cache) ...')
    for s in sorted(set(stored_size(x) for x in args.image_sizes if x <= 64)):
        res['decode'] += measure_decode(dataset, s, work / 'cache')
    for s in sorted(set(stored_size(x) for x in args.image_sizes if x > 64)):
        res['decode'] += measure_decode(copy, s, work / 'cache')
    if copy:
        res['settings']['copy_n'] = next(r['n'] for r in res['decode']
                                         if r['dataset'] == copy.name and r['split'] == 'train')

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

    log('3b. decode once in a sweep ...')
    save('the sweep')
    res['sweep'] = None if args.no_sweep else sweep_check(args, dataset, work)
    log('5. memory at the real cache size ...')
    save('memory')
    res['memory'] = None if args.no_memory else memory_check(args, dataset, work)
    log('4. demo ...')
    save('the demo')
    res['demo'] = None if args.no_demo else demo_check(args, work)
    log('\n' + save(None))
    return 0

if __name__ == '__main__':
    sys.exit(main())
