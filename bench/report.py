"""BENCHMARKS.md from a benchmark's results (the dict `bench.py` saves as bench.json): one function per section.

Each section function takes the results and returns its lines; `report` joins them, `findings` draws the short
conclusions. `bench.py --render JSON` writes the report again from saved results, measuring nothing."""
from pathlib import Path
import statistics

from machine import REPO
from timing import QUIET


def fmt(x, nd=1):
    return '-' if x is None else f'{x:,.{nd}f}'

def spread(r):
    return f"{min(r['ips_all']):,.0f}-{max(r['ips_all']):,.0f}" if len(r['ips_all']) > 1 else '-'

def s_models(res):
    return list(dict.fromkeys(r['model'] for r in res['train']))

def table(head: list, rows) -> list:
    """A Markdown table: the header of column names `head`, its rule, and a line per row of `rows` (a list of cells
    each)."""
    return (['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
            + ['| ' + ' | '.join(map(str, r)) + ' |' for r in rows])

def header(res: dict) -> list:
    "The title, what was measured and how to reproduce it, and warnings: no GPU, an incomplete run, a shared machine."
    info = res['info']
    L = ["# Benchmarks", '',
         "Is the sweep bound by the accelerator, not by JPEG decoding? Everything below was measured side by side in "
         "**one run**",
         f"of `bench/bench.py` (`{res['command']}`), same machine, same model, batch size and image size per row.",
         "Reproduce with `make bench` (or `.venv/bin/python bench/bench.py`; `--quick` for a one-minute smoke run);",
         "on a CUDA machine run `bash bench/device_check.sh` (offline, 8 minutes).", '']
    if info['gpu'] == 'none':
        L += ["> **No GPU was available for this run**: every number is from the CPU below. The GPU fast path (cache "
              "on the",
              "> device, bf16, channels_last, `torch.compile`) is checked by `bench/device_check.sh`, which is ready "
              "to run on a",
              "> CUDA machine and writes its own report; no GPU has run it yet (see 'The GPU path' below).", '']
    if res.get('incomplete'):
        L += [f"> **Incomplete run**: it stopped during {res['incomplete']}; the sections after that are missing or "
              f"empty.", '']
    oc = res.get('contention', {}).get('other_cores', 0)
    if oc > 0.25:
        L += [f"> **The machine was shared**: other processes used {oc:.2f} of its {info['cores']} cores on average "
              f"during this run (load average up to {res['contention']['load1']:.1f}); absolute images/s are depressed "
              "by that, ratios of interleaved measurements much less. The *other load* columns say how much each row "
              "was disturbed.", '']
    return L

def machine_section(res: dict) -> list:
    info = res['info']
    return ['## Machine and versions', '', '| | |', '|---|---|',
            f"| CPU | {info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB |",
            f"| GPU | {info['gpu']} |", f"| device | {info['device']} (torch threads: {info['torch_threads']}) |",
            f"| bf16 autocast | {'on' if info['bf16_autocast'] else 'off (not supported)'} |",
            f"| python | {info['python']} |", f"| torch / torchvision | {info['torch']} / {info['torchvision']} |",
            f"| datasets / numpy / Pillow | {info['datasets']} / {info['numpy']} / {info['pillow']} |",
            f"| minisweep | {info['minisweep']} (git {info['commit']}) |", f"| platform | {info['platform']} |",
            f"| date | {info['date']} |", '']

def settings_section(res: dict) -> list:
    "How each number was taken, the data of each row, and what the three loops are."
    info, s = res['info'], res['settings']
    cl = ('on' if info['device'].startswith('cuda')
          else 'as `auto` measured it faster on this CPU (the bare loop matches)')
    return ['## Settings', '',
            f"- batch size {s['batch_size']}, SGD (momentum 0.9, Nesterov, weight decay 5e-4, minisweep's per-model "
            f"learning rate), label smoothing 0.1; bf16 autocast {'on' if info['bf16_autocast'] else 'off'}; "
            f"channels_last {cl}.",
            f"- each number is the **median of {s['repeats']} timed repeats** of a fixed number of steps (the same for "
            f"every loop of a row, chosen so one repeat takes about {s['seconds']:g} s on the bare loop), after a "
            f"warm-up of at least 3 steps and 2 s per loop{' (quick: 1 step)' if s['quick'] else ''}. The repeats of "
            "minisweep and the bare loop run round-robin, so drift and other load hit them alike; the seed-style loop "
            "runs after them, its repeats back to back (its workers would otherwise prefetch for free while the other "
            "loops run).",
            f"- 64 px rows: `{s['dataset']}` (Tiny-ImageNet-100, 64x64 JPEGs, 40,000 training images), cache at "
            f"{s['stored'].get('64', '-')} px. Larger sizes: `{s['copy']}`, {s['copy_n']:,} training images of it "
            f"re-encoded as 500x375 JPEGs (bicubic upscale + mild noise, quality 90, mean {s['copy_kb']:.0f} KB a "
            f"file, as Mini-ImageNet's originals are about 500x375), made by `make_large_copy` in bench/out (never "
            f"committed).",
            "- **minisweep**: its own code path, `prepare_data(cfg, device)` + `create_model` + `make_optimizer` + "
            "`train_epoch` exactly as `train_run` calls them, on the decoded uint8 cache (random crop + flip + "
            "normalise per batch).",
            "- **bare**: the same model, optimizer settings (the same SGD kernel as minisweep's `make_optimizer`: "
            f"{', '.join(sorted(set(r.get('sgd', '?') for r in res['train']))) or '?'}), autocast and memory format on "
            "one synthetic batch already on the device: the ceiling of any data path.",
            f"- **seed-style**: the HF dataset decoded by PIL at every access, torchvision `Resize(stored) / "
            f"RandomCrop / RandomHorizontalFlip / ToTensor / Normalize`, `DataLoader(num_workers={info['cores']} (= "
            f"cores), pin_memory={'True' if info['device'].startswith('cuda') else 'False (CPU)'}, persistent "
            f"workers)`, same model and step.", '']

def training_section(res: dict) -> list:
    "Sections 1-2: images/s of the three loops per row, and the spread of their repeats."
    def row(r):
        seed, rr = r.get('seed'), r.get('rounds_minisweep_bare', {})
        q = (f"**{rr['quiet']:.3f}** ({rr['n_quiet']}/{rr['n']})" if rr.get('quiet') is not None
             else f"- (0/{rr.get('n', 0)})")
        return [name(r), r['image_size'], r['dataset'], fmt(r['bare']['ips']), fmt(r['minisweep']['ips']),
                f"{r['ratio_minisweep_bare']:.3f}",
                q, fmt(seed['ips']) if seed else '-', '**%.2fx**' % r['ratio_minisweep_seed'] if seed else '-',
                f"{r['bare']['steps']} x {len(r['bare']['ips_all'])}", f"{r['contention']['other_cores']:.2f}"]
    name = lambda r: r['model'] + (' + compile' if r['compile'] else '')
    L = ['## 1-2. Training images/s: minisweep vs the bare loop vs the seed-style pipeline', '']
    L += table(['model', 'px', 'data', 'bare (synthetic)', 'minisweep', 'minisweep / bare',
                '**minisweep / bare, quiet rounds**',
                'seed-style', '**minisweep / seed**', 'steps x repeats', 'other load (cores)'], map(row, res['train']))
    L += ['', 'Training images/s, median of the repeats. *minisweep / bare* is the ratio of the medians; *quiet '
          'rounds* is the median of the round-by-round ratios over the rounds in which other processes used under '
          f"{QUIET} cores during both repeats (how many of them, in brackets): the figure to trust on a shared "
          f"machine. "
          '*Other load* is the CPU cores that other processes used on average while the row ran (from /proc/stat, less '
          'this process and its workers and children): well above 0 means the absolute images/s of that row are '
          'depressed.',
          '', 'Spread of the repeats (min-max images/s):', '']
    return L + table(['model', 'px', 'bare', 'minisweep', 'seed-style'],
                     [[name(r), r['image_size'], spread(r['bare']), spread(r['minisweep']), spread(r['seed'])
                       if r.get('seed') else '-']
                      for r in res['train']])

def gpu_memory_line(res: dict) -> list:
    if not any('max_memory_allocated_gib' in r for r in res['train']): return []
    return ['', 'GPU memory (torch.cuda.max_memory_allocated, all loops of the row): ' +
            ', '.join(f"{r['model']} {r['image_size']}px {r['max_memory_allocated_gib']:.2f} GiB"
                      for r in res['train'])]

def data_path_section(res: dict) -> list:
    "Images/s of each data path with the model removed."
    L = ['', '## Data path alone (model removed)', '',
         'Images/s that each data path can deliver, with no model to feed: the seed-style DataLoader '
         f"({res['data'][0]['workers'] if res['data'] else '-'} workers: decode + resize + crop + flip + to-tensor + "
         f"normalise, "
         'moved to the device) against minisweep\'s `Batches` from the decoded cache (gather + crop + flip + '
         'normalise, on the device).', '']
    return L + table(['px', 'data', 'seed-style loader', 'minisweep batches', '**minisweep / seed**',
                      'other load (cores)'],
                     [[r['image_size'], r['dataset'], fmt(r['seed']['ips'], 0), fmt(r['minisweep']['ips'], 0),
                       f"**{r['ratio']:.1f}x**",
                       f"{r['contention']['other_cores']:.2f}"] for r in res['data']])

def decode_section(res: dict) -> list:
    "Section 3: the cost of decoding once, per dataset and split."
    L = ['', '## 3. Decode once', '',
         '`decoded_split` into a fresh `MINISWEEP_CACHE`, every core decoding (the seed-style pipeline pays the decode '
         'of the data-only table above at *every* epoch of *every* run; minisweep pays this once per dataset, split '
         'and size).', '']
    return L + table(['data', 'split', 'images', 'stored px', 'seconds', 'images/s', 'cache MB'],
                     [[r['dataset'], r['split'], f"{r['n']:,}", r['stored_px'], f"{r['seconds']:.1f}",
                       f"{r['ips']:,.0f}", f"{r['cache_mb']:,.0f}"]
                      for r in res['decode']])

def not_run(res: dict, key: str, not_reached: str, skipped: str, unavailable: str) -> list:
    """The line that stands for the section of a job (`res[key]`) that did not run: `not_reached` when the run stopped
    before it, `skipped` when it was skipped, `unavailable` (a format of `why`) when its command failed; [] when it
    ran."""
    if key not in res: return [not_reached]
    r = res[key]
    if r is None: return [skipped]
    first = r[0] if isinstance(r, list) and r else r
    return [unavailable.format(why=first['why'])] if isinstance(first, dict) and not first.get('available') else []

def sweep_section(res: dict) -> list:
    "Section 3b: the sweep's cache builds (each split decoded once?), the end of its log if it failed, and its runs."
    L = ['']
    if (line := not_run(res, 'sweep', 'Sweep check not reached (incomplete run).',
                        'Sweep check skipped (`--no-sweep`, or `--quick` without `--sweep`).',
                        "**Sweep not available**: `minisweep sweep --help` failed ({why}); the decode-once check of a "
                        "sweep was skipped. It runs as soon as the command exists.")): return L + line
    sw = res['sweep']
    L += [f"Sweep `{sw['cmd'].replace(str(REPO) + '/', '')}` (4 runs) into a fresh cache: exit status {sw['rc']}, "
          f"{sw['wall']:.0f} s; `builds.jsonl` has **{sw['builds']} lines** for {len(sw['per_file'])} cache files "
          f"({', '.join(f'{k}: {v}' for k, v in sw['per_file'].items())}): "
          + ('**each split was decoded exactly once** for the whole sweep.' if sw['once']
             else '**some split was decoded more than once.**')]
    if sw['rc'] != 0:
        tail = [l for l in Path(sw['log']).read_text(errors='replace').replace('\r', '\n').splitlines() if l.strip()
                and 'decoding' not in l][-8:]
        L += ['', f"The sweep exited with status {sw['rc']}; the end of its log (bench/out/sweep.log):", '',
              '```'] + tail + ['```']
    if sw.get('run_times'):
        L += ['', f"Its runs (other load during the sweep: {sw['contention']['other_cores']:.2f} cores):", '']
        L += table(['run', 'run seconds (papermill job)', 'epoch seconds (train + validate)', 'training images/s'],
                   [[r['run'], fmt(r['seconds']), fmt(r['epoch_seconds']), fmt(r['images_per_second'])]
                    for r in sw['run_times']])
    return L

def demo_section(res: dict) -> list:
    "Section 4: the demo's wall time and peak memory against the 1.5 x (cache + model state) target."
    L = ['', '## 4. Demo: wall time and peak memory', '']
    if (line := not_run(res, 'demo', 'Demo not reached (incomplete run).',
                        'Demo skipped (`--no-demo`, or `--quick` without `--demo`).',
                        "**Demo not available**: `minisweep demo --help` failed ({why}); skipped. It runs as soon as "
                        "the command exists.")):
        return L + line
    dm = res['demo']
    ok = dm.get('peak_pss_mb') is not None and dm['peak_pss_mb'] < dm['target_mb']
    runs = [r['seconds'] for r in dm.get('run_times') or [] if r['seconds']]
    median_run = statistics.median(runs) if runs else None
    L += ['| | |', '|---|---|', "| command | `minisweep demo --out bench/out/demo-run --figures "
          "bench/out/demo-figures` (fresh cache) |",
          f"| other load during the demo | {dm['contention']['other_cores']:.2f} cores |",
          f"| runs | {len(dm.get('run_times') or [])}, median {fmt(median_run)} s each |",
          f"| exit status | {dm['rc']} |", f"| wall time | {dm['wall']:.1f} s |",
          f"| peak memory of the process tree (sum of PSS, polled every 0.2 s) | {fmt(dm.get('peak_pss_mb'), 0)} MB |",
          f"| peak RSS of the largest single process | {fmt(dm.get('peak_rss_one_mb'), 0)} MB |",
          f"| processes in the tree (max) | {dm.get('processes', '-')} |",
          f"| a bare `python -c 'import torch, torchvision, datasets, papermill, minisweep.train'` | "
          f"{fmt(dm.get('baseline_rss_mb'), 0)} MB RSS |",
          f"| decoded caches (`*.npy`) | {dm['cache_mb']:.1f} MB in {len(dm['cache_files'])} files, {dm['builds']} "
          f"builds |",
          "| model (fp32 parameters) | " + ', '.join(f'{k} {v:.0f} MB' for k, v in dm['params_mb'].items()) + ' |',
          f"| training state of the largest (weights + grads + momentum) | {dm['train_state_mb']:.0f} MB |",
          f"| target: peak < 1.5 x (cache + model state) | {dm['target_mb']:.0f} MB: **{'met' if ok else 'not met'}** "
          f"|"]
    if dm.get('peak_rss_one_mb') and dm.get('baseline_rss_mb'):
        above = dm['peak_rss_one_mb'] - dm['baseline_rss_mb']
        L.append(f"| largest process above the import baseline / (cache + model state) | {above:,.0f} MB / "
                 f"{dm['cache_mb'] + dm['train_state_mb']:,.0f} MB = "
                 f"**{above / (dm['cache_mb'] + dm['train_state_mb']):.2f}x** |")
    if dm.get('peak_gpu_mib'): L.append(f"| peak GPU memory used (nvidia-smi) | {dm['peak_gpu_mib']:.0f} MiB |")
    return L

def memory_section(res: dict) -> list:
    "Section 5: peak RSS of one training run on the whole split against the cache plus the model, per model and size."
    L = ['', '## 5. Memory of one training run at the real cache size', '']
    if (line := not_run(res, 'memory', 'Not reached (incomplete run).',
                        'Skipped (`--no-memory`, or `--quick` without `--memory`).',
                        '**Not available**: `minisweep train --help` failed ({why}).')): return L + line
    L += ['The demo\'s caches are 9 MB, so its memory says little about the cache. Here one `minisweep train` process '
          'trains each model for one epoch on the **whole** training split of the 64 px dataset (all of its cache is '
          'mapped and read), validates, and saves its checkpoints; its RSS is polled every 0.2 s. At 227 px the same '
          'images are decoded into a 259 px cache, so that the cache has nearly the size the real study\'s has at that '
          'resolution (Mini-ImageNet at 227 px: 11.5 GB for train + validation, 9.6 GB here); what the pictures show '
          'does not matter to memory. *Import baseline*: a process that only imports the same modules (`import torch, '
          'torchvision, datasets, minisweep.train, minisweep.cli`).', '',
          '| model | px | exit | seconds | decoded caches (train + validation) | parameters | training state (weights '
          '+ grads + momentum) | **peak RSS** | import baseline RSS | peak / (cache + parameters) | peak / (cache + '
          'training state) | **above the baseline: / (cache + parameters)** | above the baseline: / (cache + training '
          'state) | other load (cores) |',
          '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
    for r in res['memory']:
        L.append(f"| {r['model']} | {r.get('image_size', 64)} | {r['rc']} | {r['wall']:.0f} | {r['cache_mb']:,.0f} MB "
                 f"| {r['params_mb']:,.0f} MB | {r['train_state_mb']:,.0f} MB | **{fmt(r.get('peak_rss_one_mb'), 0)} "
                 f"MB** | {fmt(r.get('baseline_rss_mb'), 0)} MB | {fmt(r.get('ratio_params'), 2)} | "
                 f"{fmt(r.get('ratio_state'), 2)} | **{fmt(r.get('ratio_params_above_base'), 2)}** | "
                 f"{fmt(r.get('ratio_state_above_base'), 2)} | {r['contention']['other_cores']:.2f} |")
        if r.get('peak_gpu_mib'): L.append(f"|   GPU memory used (nvidia-smi, peak) | | | | | | | "
                                           f"{r['peak_gpu_mib']:.0f} MiB | | | | | | |")
    return L

def findings_section(res: dict) -> list:
    "The findings of this run, then the hand-written analysis (bench/ANALYSIS.md)."
    L = ['', '## Findings (computed from this run)', ''] + res.get('findings', ['(none)']) + ['']
    notes = Path(__file__).with_name('ANALYSIS.md')
    if notes.exists(): L += [notes.read_text().strip(), '']
    return L

SECTIONS = (header, machine_section, settings_section, training_section, gpu_memory_line,
            data_path_section, decode_section, sweep_section, demo_section, memory_section, findings_section)

def report(res: dict) -> str:
    "BENCHMARKS.md: every section of `SECTIONS`, in order."
    return '\n'.join(line for section in SECTIONS for line in section(res))

def training_findings(res: dict) -> list:
    "A line per training row: minisweep against the bare loop (the 0.9x target) and the seed-style pipeline."
    out = []
    for r in res['train']:
        tag = f"{r['model']}{' + compile' if r['compile'] else ''} at {r['image_size']} px"
        rr = r.get('rounds_minisweep_bare') or {}
        if rr.get('quiet') is not None: ratio, basis = rr['quiet'], f"quiet rounds, {rr['n_quiet']}/{rr['n']}"
        else: ratio, basis = r['ratio_minisweep_bare'], 'no quiet round: all repeats'
        verdict = 'meets' if ratio >= 0.9 else 'misses'
        line = f"- {tag}: minisweep runs at {ratio:.2f}x the bare loop ({basis}; {verdict} the 0.9x target)"
        if r.get('seed'): line += f", {r['ratio_minisweep_seed']:.2f}x the seed-style pipeline"
        out.append(line + '.')
    return out

def data_findings(res: dict) -> list:
    "A line per data-path row."
    out = []
    for r in res['data']:
        out.append(f"- Data path alone at {r['image_size']} px ({r['dataset']}): minisweep's batches come "
                   f"{r['ratio']:.1f}x as fast as the seed-style loader's ({r['minisweep']['ips']:,.0f} vs "
                   f"{r['seed']['ips']:,.0f} images/s).")
    return out

def job_findings(res: dict) -> list:
    "A line per memory row (the 1.5x target), and the sweep's and the demo's exit status and time."
    out = []
    for r in res.get('memory') or []:
        if r.get('available') and r.get('ratio_params') is not None:
            ab = r.get('ratio_params_above_base')
            out.append(f"- memory, {r['model']} at {r.get('image_size', 64)} px on the whole training split: peak RSS "
                       f"{r['peak_rss_one_mb']:,.0f} MB = {r['ratio_params']:.2f}x (cache + parameters) "
                       f"({'meets' if r['ratio_params'] < 1.5 else 'misses'} 1.5x as stated); above the import "
                       f"baseline {fmt(ab, 2)}x ({'meets' if ab is not None and ab < 1.5 else 'misses'} 1.5x).")
    for name, r in (('sweep', res.get('sweep')), ('demo', res.get('demo'))):
        if r and r.get('available'):
            builds = f", {r['builds']} cache builds" if 'builds' in r else ''
            out.append(f"- {name}: exit status {r['rc']}, {r['wall']:.0f} s{builds}.")
    return out

def findings(res: dict) -> list:
    "Short conclusions drawn from the numbers of this run (the hand-written analysis lives under 'Analysis')."
    return training_findings(res) + data_findings(res) + job_findings(res)
