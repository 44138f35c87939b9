"""The Tiny-ImageNet-100 study, step by step: every step is a minisweep sweep in a folder of its own.
usage: python study.py DATASET [--models M ...] [--dry-run]   (run it twice, side by side: two lanes of one thread each)
       python study.py DATASET --join OUT.csv [--grids]       (the finished steps' results in one file, for curves;
                                                              --grids: the rate grids' runs alone, the pilot)

A lane takes the first step that is neither finished nor running in the other lane and whose learning rate is known,
runs it, and starts again; it stops when every step has finished. Rerunning resumes: a sweep keeps its finished runs,
and a finished sweep is not started again (so its checkpoints may be deleted). The rates: each model's grid on the
first seed at 1/32 and at 1; the chosen rate gets a second seed and a twin (`--budget-check`: twice the steps); the
sizes between take the rate interpolated in log n and rounded to the grid. ResNet18's steps are sweeps of several
runs; AlexNet's, whose runs are longer, hold one run each (a twin with its seed), so that a study stopped between runs
keeps the results of every finished run even where its checkpoints are gone."""
import csv, fcntl, json, math, shutil, subprocess, sys, time
from fractions import Fraction
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = ['--image-size', '64', '--num-epochs', '4', '--max-validations', '4', '--num-threads', '1', '--figures', '']
GRIDS = {'resnet18': (['0.05', '0.1', '0.2'], ['0.1', '0.2']), 'alexnet': (['0.01', '0.02', '0.04'], ['0.02', '0.04'])}

def floor(model, size):       # steps at least: ResNet18 500 below 1/4 and 1,014 from 1/4 up; AlexNet 1,000 everywhere
    return 1000 if model == 'alexnet' else 500 if Fraction(size) < Fraction(1, 4) else 1014

def steps(model):
    "The model's steps, in the order a lane takes them: the rate grids at both ends first."
    low, high = GRIDS[model]
    def step(name, size, seeds, rates=None, twin=False): return dict(name=name, model=model, size=size, seeds=seeds,
                                                                     rates=rates, twin=twin)
    if model == 'resnet18':
        return [step('r18-rates1', '1', ['0'], high), step('r18-rates32', '1/32', ['0'], low),
                step('r18-top', '1', ['1'], twin=True), step('r18-bottom', '1/32', ['1'], twin=True),
                step('r18-1_16', '1/16', ['0', '1']), step('r18-1_8', '1/8', ['0', '1']),
                step('r18-quarter', '1/4', ['0'], twin=True), step('r18-quarter-s1', '1/4', ['1']),
                step('r18-half', '1/2', ['0', '1']),
                step('r18-half-twin', '1/2', ['0'], twin=True)]   # 1/2's twin, with seed 0 again (the same numbers)
    return ([step(f'alex-rates1-{r}', '1', ['0'], [r]) for r in high] +
            [step(f'alex-rates32-{r}', '1/32', ['0'], [r]) for r in low] +
            [step('alex-top', '1', ['1'], twin=True), step('alex-bottom', '1/32', ['1'], twin=True)] +
            [step(f'alex-{n}-s{s}', f, [s]) for n, f in (('1_16', '1/16'), ('1_8', '1/8')) for s in '01'] +
            [step('alex-quarter-s0', '1/4', ['0']), step('alex-quarter', '1/4', ['1'], twin=True)] +
            [step(f'alex-half-s{s}', '1/2', [s]) for s in '01'] +
            [step('alex-quarter-0.04', '1/4', ['0'], ['0.04'])])   # a remedy: the full split's rate at 1/4

def _runs(out: Path) -> list:
    "The runs that the sweep in `out` records ([] before it starts)."
    try: return list(json.loads((out / 'sweep.json').read_text())['runs'].values())
    except (OSError, ValueError, KeyError): return []

def finished(out: Path) -> bool:
    "Whether the sweep in `out` has run and recorded every run done."
    runs = _runs(out)
    return bool(runs) and (out / 'results.csv').exists() and all(r['state'] == 'done' for r in runs)

def orphaned(out: Path) -> bool:
    "Whether an unfinished sweep has a finished run whose checkpoint is gone: it could not evaluate it at its end."
    return any(r['state'] == 'done' and not (out / r['run_dir'] / 'best.pt').exists() for r in _runs(out))

def chosen(model, size, root: Path) -> float | None:
    "The rate of lowest validation top-5 error in the model's grid at `size` (1/32 or 1); None until the grid is done."
    grid = [s for s in steps(model) if s['rates'] and s['size'] == size]
    if not all(finished(root / s['name']) for s in grid): return None
    rows = [r for s in grid for r in csv.DictReader(open(root / s['name'] / 'results.csv')) if r['steps_factor'] == '1']
    return float(min(rows, key=lambda r: float(r['val_top5_error']))['learning_rate'])

def rate(model, size, root: Path) -> str | None:
    "The rate at `size`: chosen at both ends; between them, log(rate) interpolated in log(n), rounded to the grid."
    low, high = chosen(model, '1/32', root), chosen(model, '1', root)
    if size in ('1/32', '1'): r = low if size == '1/32' else high
    elif low is None or high is None: return None
    else:
        t = math.log(Fraction(size) * 32) / math.log(32)
        r = math.exp(math.log(low) + t * math.log(high / low))
        r = min({float(g) for g in sum(GRIDS[model], [])}, key=lambda g: abs(math.log(g / r)))
    return None if r is None else f'{r:g}'

def command(step, dataset: str, root: Path, lr: str | None) -> list:
    size, model = step['size'], step['model']
    cmd = ['minisweep', 'sweep', '--dataset', dataset, '--models', model, '--subset-sizes', size, '--seeds',
           *step['seeds'], '--min-steps', str(floor(model, size)), *SETTINGS, '--out', str(root / step['name'])]
    if step['rates'] and len(step['rates']) > 1: cmd += ['--learning-rates', *step['rates']]
    else: cmd += ['--learning-rate', step['rates'][0] if step['rates'] else lr]
    return cmd + (['--budget-check', size] if step['twin'] else [])

def lane(dataset: str, root: Path, models=('resnet18', 'alexnet'), dry_run=False, skip=()):
    plan, failures = [s for m in models for s in steps(m) if s['name'] not in skip], {}
    while True:
        todo = [s for s in plan if not finished(root / s['name']) and failures.get(s['name'], 0) < 2]
        if not todo:
            return print(f'failed twice: {failures}' if failures else 'every step has finished', flush=True)
        for s in todo:
            lr = None if s['rates'] else rate(s['model'], s['size'], root)
            if lr is None and not s['rates']: continue                  # its rate is not chosen yet
            cmd = command(s, dataset, root, lr)
            if dry_run: print(' '.join(cmd)); continue
            lock = open(root / f'.{s["name"]}.lock', 'w')
            try: fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError: continue                            # the other lane runs it
            if orphaned(root / s['name']):
                print(f'{s["name"]}: a finished run has lost its checkpoint; the step starts again', flush=True)
                shutil.rmtree(root / s['name'])
            print(f'{time.strftime("%H:%M:%S")} {s["name"]}: {" ".join(cmd)}', flush=True)
            if subprocess.run(cmd).returncode: failures[s['name']] = failures.get(s['name'], 0) + 1
            lock.close()
            break
        else:
            if dry_run: return
            time.sleep(30)

def join(root: Path, out: Path, models=('resnet18', 'alexnet'), grids=False):
    "Every finished step's `results.csv` in one file: `run_dir` inside this folder, `dataset` by its folder's name."
    rows, cols, seen = [], [], set()
    for s in [s for m in models for s in steps(m) if finished(root / s['name'])
              and (not grids or s['rates'] and s['size'] in ('1/32', '1'))]:
        for r in csv.DictReader(open(root / s['name'] / 'results.csv')):
            key = tuple(r[k] for k in ('model', 'subset_size', 'learning_rate', 'seed', 'steps_factor'))
            if key in seen: continue                          # a run trained again beside its twin: kept once
            r |= dict(run_dir=f'{s["name"]}/{r["run_dir"]}', dataset=Path(r['dataset']).name)
            rows.append(r); seen.add(key); cols += [c for c in r if c not in cols]
    with open(out, 'w', newline='') as f: w = csv.DictWriter(f, cols); w.writeheader(); w.writerows(rows)
    print(f'{len(rows)} runs -> {out}')

if __name__ == '__main__':
    import argparse
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('dataset'); p.add_argument('--models', nargs='+', default=['resnet18', 'alexnet'])
    p.add_argument('--dry-run', action='store_true'); p.add_argument('--join', type=Path)
    p.add_argument('--grids', action='store_true'); p.add_argument('--skip', nargs='+', default=[], help='steps')
    a = p.parse_args()
    if a.join: join(HERE, a.join, a.models, a.grids)
    else: lane(str(Path(a.dataset).resolve()), HERE, a.models, a.dry_run, a.skip)
