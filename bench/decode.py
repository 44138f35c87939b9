"""Section 3: decoding once. `measure_decode` times `decoded_split` into a fresh cache; `sweep_check` runs a small sweep
and reads the cache's `builds.jsonl` to prove that a sweep decodes each split once, however many runs read it.

Sizes above 64 px read `make_large_copy`: a slice of the 64 px data re-encoded as 500x375 JPEGs (Mini-ImageNet's usual
size)."""
import io, json, shutil, time
from pathlib import Path

import numpy as np

from machine import log
from timing import Contention
from jobs import fresh, minisweep_exe, read_builds, run_monitored, run_times, sub_env, unavailable


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
        idx = np.concatenate([np.sort(rng.choice(np.flatnonzero(s.labels == c), min(k, int((s.labels == c).sum())),
                                                 replace=False))
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

def large_copy(args, dataset: Path, work: Path) -> Path | None:
    "The 500x375 copy that image sizes above 64 px read (None when there are none)."
    if not any(s > 64 for s in args.image_sizes): return None
    log('making the 500x375 copy ...')
    t = time.perf_counter()
    copy = make_large_copy(str(dataset), work / f'mini-500x375-{args.copy_per_class}pc',
                           dict(train=args.copy_per_class, validation=max(1, args.copy_per_class // 10), test=1))
    log(f'  {copy} ready in {time.perf_counter() - t:.0f}s')
    return copy

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
        log(f"  decode {Path(dataset).name} {name}: {len(c)} images at {size}px in {c.seconds:.1f}s = "
            f"{len(c) / c.seconds:.0f} img/s")
    return rows

def sweep_check(args, dataset, work: Path) -> dict:
    "Section 3b: a sweep of 4 runs (two models, two fractions) into a fresh cache; each split must be decoded once."
    if (no := unavailable('sweep')): return no
    cache, out = fresh(work / 'sweep-cache', work / 'sweep-run')
    cmd = [minisweep_exe(), 'sweep', '--models', 'alexnet', 'resnet18', '--subset-sizes', '0.02', '0.01', '--seeds',
           '0',
           '--num-epochs', '1', '--batch-size', '64', '--image-size', '64', '--dataset', str(dataset), '--out',
           str(out),
           '--figures', str(work / 'sweep-figures')]
    with Contention() as c: r = run_monitored(cmd, sub_env(cache), work / 'sweep.log', timeout=1800)
    r['contention'] = c.as_dict()
    builds = read_builds(cache)
    r['run_times'] = run_times(out)
    per_file = {}
    for b in builds: per_file[b['file']] = per_file.get(b['file'], 0) + 1
    r.update(available=True, builds=len(builds), per_file=per_file, runs=4,
             once=bool(builds) and all(v == 1 for v in per_file.values()))
    log(f"  sweep: exit {r['rc']}, {r['wall']:.0f}s, builds.jsonl has {len(builds)} lines for {len(per_file)} cache "
        f"files ({'each split decoded once' if r['once'] else 'NOT once per split'})")
    return r
