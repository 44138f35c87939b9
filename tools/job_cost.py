"""The fixed cost of one sweep job: the training notebook executed by `execute_job`, as the sweep runs it, on a tiny run
(the shipped sample, 1 epoch, batch 32, 64 px, CPU) whose training is a small share of the time. Prints where the
seconds went, from papermill's own cell timings, and the dearest cells.

    python tools/job_cost.py [REPEATS] [--notebook NB]  # NB: another training notebook to execute as the job
    python tools/job_cost.py --demo [OUT]               # `minisweep demo`: wall time, training time, efficiency

The fixed cost of a job is its whole time less its training and validation (`train_seconds` of its metrics.json)."""
import json, os, shutil, subprocess, sys, tempfile, time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from minisweep.jobs import execute_job, train_notebook
from minisweep.sweep import Sweep


def when(s: str) -> float: return datetime.fromisoformat(s.replace('Z', '+00:00')).timestamp()


def one(params: dict, notebook: Path) -> tuple:
    nb_path = Path(params['out_dir']) / 'train.ipynb'
    t0 = time.time()
    ok, err, secs = execute_job(notebook, nb_path, params)
    assert ok, err
    nb = json.loads(nb_path.read_text())
    cells = [c for c in nb['cells'] if c['cell_type'] == 'code']
    job = next(i for i, c in enumerate(cells) if 'train_run(cfg)' in ''.join(c['source']))
    m = json.loads((Path(params['out_dir']) / 'metrics.json').read_text())
    first = when(cells[0]['metadata']['papermill']['start_time'])
    job_start, job_end = (when(cells[job]['metadata']['papermill'][k]) for k in ('start_time', 'end_time'))
    end = when(cells[-1]['metadata']['papermill']['end_time'])
    before = job_start - first
    row = dict(total=secs, fixed=secs - m['train_seconds'], kernel_start=first - t0, cells_before_job=before,
               job_cell=job_end - job_start, training=m['train_seconds'],
               to_first_step=(first - t0) + before + (job_end - job_start - m['train_seconds']),
               cells_after_job=end - job_end, after_notebook=t0 + secs - end,
               notebook_kb=nb_path.stat().st_size / 1024)
    dear = sorted(((c['metadata']['papermill'].get('duration') or 0, ''.join(c['source'])[:70].replace('\n', ' | '))
                   for c in cells), reverse=True)[:6]
    return row, dear


def demo(out: Path) -> int:
    "`minisweep demo` into `out`: its wall time, the training and validation time of its runs, their ratio."
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    p = subprocess.run([sys.executable, '-m', 'minisweep', 'demo', '--out', str(out), '--figures',
                        str(out / 'figures')], capture_output=True, text=True)
    wall = time.perf_counter() - t
    print(p.stdout[-1500:], p.stderr[-1500:] if p.returncode else '')
    train = [json.loads(f.read_text())['train_seconds'] for f in out.glob('**/metrics.json')]
    print(f'demo: exit {p.returncode}, wall {wall:.1f} s, {len(train)} runs training and validating '
          f'{sum(train):.1f} s, efficiency {sum(train) / wall:.2f}; '
          f'fixed cost {(wall - sum(train)) / max(1, len(train)):.1f} s a run '
          '(the curves report and the sweep\'s own work included)')
    size = sum(f.stat().st_size for f in out.rglob('*') if f.is_file() and not f.is_symlink())
    print(f'demo: {size / 1e9:.2f} GB left in {out}')
    return p.returncode


if __name__ == '__main__':
    args = sys.argv[1:]
    root = Path(tempfile.mkdtemp(prefix='minisweep-jobcost-'))
    os.environ.setdefault('MINISWEEP_CACHE', str(root / 'cache'))     # a private decode cache, built by the first job
    try:
        if '--demo' in args:
            rest = [a for a in args if a != '--demo']
            sys.exit(demo(Path(rest[0]) if rest else root / 'demo'))
        notebook = Path(args[args.index('--notebook') + 1]) if '--notebook' in args else train_notebook()
        repeats = int(next((a for a in args if a.isdigit()), 3))
        sw = Sweep(['resnet18'], [0.5], [0], out=str(root / 's'),
                   train=dict(dataset='', image_size=64, num_epochs=1, batch_size=32, device='cpu')).check()
        rows = []
        for r in range(repeats + 1):                  # the first job warms the decode cache and the file cache
            shutil.rmtree(root / 's', ignore_errors=True)
            row, dear = one(asdict(sw.config('resnet18', 0.5, 0)), notebook)
            if r: rows.append(row)
        import pandas as pd
        df = pd.DataFrame(rows)
        print(f'{notebook}:\n' + df.round(2).to_string())
        print('median:', df.median().round(2).to_dict())
        print('dearest cells of the last job:', '; '.join(f'{d:.2f}s {s}' for d, s in dear))
    finally: shutil.rmtree(root, ignore_errors=True)
