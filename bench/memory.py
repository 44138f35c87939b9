"""Sections 4 and 5: peak memory against the decoded cache plus the model.

- `demo_check`: the demo's wall time and the peak memory of its whole process tree (its caches are small);
- `memory_check`: one `minisweep train` process on the whole training split, at 64 px and at a 227 px cache of nearly
  the real study's size, against the cache it maps plus the model; beside a process that only imports the same
  modules."""
import shutil, sys
from pathlib import Path

from machine import log
from timing import Contention
from jobs import fresh, minisweep_exe, read_builds, run_monitored, run_times, sub_env, unavailable
from report import fmt


def model_bytes(num_classes: int, size: int = 64) -> dict:
    "Bytes of each model's fp32 parameters."
    from minisweep.models import create_model, n_params
    return {m: n_params(create_model(m, num_classes)) * 4 for m in ('alexnet', 'resnet18')}

def demo_check(args, work: Path) -> dict:
    "Section 4: `minisweep demo` into a fresh cache, its wall time and peak memory against 1.5 x (cache + model state)."
    if (no := unavailable('demo')): return no
    cache, out = fresh(work / 'demo-cache', work / 'demo-run')
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
    r.update(available=True, cache_mb=sum(p.stat().st_size for p in caches) / 2**20,
             cache_files=[p.name for p in caches],
             builds=len(read_builds(cache)), params_mb={k: v / 2**20 for k, v in mb.items()},
             train_state_mb=3 * biggest / 2**20, baseline_rss_mb=base.get('peak_rss_one_mb'))
    r['target_mb'] = 1.5 * (r['cache_mb'] + r['train_state_mb'])
    log(f"  demo: exit {r['rc']}, {r['wall']:.0f}s, peak PSS of the process tree "
        f"{r.get('peak_pss_mb', float('nan')):.0f} MB (largest process RSS "
        f"{r.get('peak_rss_one_mb', float('nan')):.0f} MB), cache {r['cache_mb']:.1f} MB, model state "
        f"{r['train_state_mb']:.0f} MB, target 1.5x = {r['target_mb']:.0f} MB; bare interpreter with torch "
        f"{r['baseline_rss_mb'] or float('nan'):.0f} MB")
    return r

def memory_ratios(r: dict):
    """Peak RSS over (cache + parameters) and over (cache + training state), whole and above the import baseline, into
    `r`."""
    peak, b0 = r.get('peak_rss_one_mb'), r['baseline_rss_mb']
    if peak is None: return
    r['ratio_params'] = peak / (r['cache_mb'] + r['params_mb'])
    r['ratio_state'] = peak / (r['cache_mb'] + r['train_state_mb'])
    if b0 is not None:
        r['ratio_params_above_base'] = (peak - b0) / (r['cache_mb'] + r['params_mb'])
        r['ratio_state_above_base'] = (peak - b0) / (r['cache_mb'] + r['train_state_mb'])

def memory_check(args, dataset, work: Path) -> list:
    """Peak RSS of one `minisweep train` process on the whole training split (cache of real size), per image size and
    model, against the cache it maps plus the model: the memory target. Also the RSS of a process that only imports the
    same modules. At 227 px the 64 px images are decoded into a 259 px cache of nearly the real study's size (9.6 GB
    here,
    11.5 GB for Mini-ImageNet's train + validation), which is what the target is about; the pictures do not matter."""
    if (no := unavailable('train')): return [no]
    from minisweep.data import load_splits
    n_classes = len(load_splits(str(dataset), ('train',))['train'].classes)
    mb = model_bytes(n_classes)
    base = run_monitored([sys.executable, '-c', 'import torch, torchvision, datasets, minisweep.train, minisweep.cli'],
                         sub_env(work / 'mem-cache'), work / 'mem-baseline.log', timeout=300)
    rows = []
    for size, m in ((s, m) for s in args.memory_sizes for m in args.models):
        cache, out = fresh(work / 'mem-cache', work / f'mem-run-{m}-{size}')
        cmd = [minisweep_exe(), 'train', '--model', m, '--subset-sizes', '1', '--num-epochs', '1', '--batch-size',
               str(args.batch_size), '--image-size', str(size), '--dataset', str(dataset), '--checkpoint-dir', str(out)]
        with Contention() as c: r = run_monitored(cmd, sub_env(cache), work / f'mem-{m}-{size}.log', timeout=5400)
        cache_mb = sum(q.stat().st_size for q in cache.glob('*.npy')) / 2**20
        params_mb = mb[m] / 2**20
        r.update(available=True, model=m, image_size=size, contention=c.as_dict(), cache_mb=cache_mb,
                 params_mb=params_mb,
                 train_state_mb=3 * params_mb, baseline_rss_mb=base.get('peak_rss_one_mb'))
        memory_ratios(r)
        peak, b0 = r.get('peak_rss_one_mb'), r['baseline_rss_mb']
        log(f"  memory, {m} at {size} px: exit {r['rc']}, {r['wall']:.0f}s, peak RSS {fmt(peak, 0)} MB, caches "
            f"{cache_mb:.0f} MB, parameters {params_mb:.0f} MB; peak / (cache + parameters) "
            f"{fmt(r.get('ratio_params'), 2)}, above the import baseline ({fmt(b0, 0)} MB) "
            f"{fmt(r.get('ratio_params_above_base'), 2)}")
        for d in (cache, out): shutil.rmtree(d, ignore_errors=True)   # 10 GB at 227 px: never leave it behind
        rows.append(r)
    return rows
