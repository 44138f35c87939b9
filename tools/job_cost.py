"""The fixed cost of one sweep job: the training notebook executed by `execute_job`, as the sweep runs it, on a tiny run
(the shipped sample, 1 epoch, batch 32, 64 px, CPU) whose training is a small share of the time. Prints where the
seconds went, from papermill's own cell timings. Usage: python tools/job_cost.py [repeats]"""
import json, os, shutil, sys, tempfile, time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from minisweep.jobs import execute_job, train_notebook
from minisweep.sweep import Sweep


def when(s: str) -> float: return datetime.fromisoformat(s.replace('Z', '+00:00')).timestamp()


def one(params: dict) -> dict:
    nb_path = Path(params['out_dir']) / 'train.ipynb'
    t0 = time.time()
    ok, err, secs = execute_job(train_notebook(), nb_path, params)
    assert ok, err
    nb = json.loads(nb_path.read_text())
    cells = [c for c in nb['cells'] if c['cell_type'] == 'code']
    job = next(i for i, c in enumerate(cells) if 'train_run(cfg)' in ''.join(c['source']))
    m = json.loads((Path(params['out_dir']) / 'metrics.json').read_text())
    first = when(cells[0]['metadata']['papermill']['start_time'])
    job_start, job_end = (when(cells[job]['metadata']['papermill'][k]) for k in ('start_time', 'end_time'))
    end = when(cells[-1]['metadata']['papermill']['end_time'])
    before = job_start - first
    return dict(total=secs, kernel_start=first - t0, cells_before_job=before, job_cell=job_end - job_start,
                training=m['train_seconds'], to_first_step=(first - t0) + before + (job_end - job_start - m['train_seconds']),
                cells_after_job=end - job_end, after_notebook=t0 + secs - end)


if __name__ == '__main__':
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    root = Path(tempfile.mkdtemp(prefix='minisweep-jobcost-'))
    os.environ.setdefault('MINISWEEP_CACHE', str(root / 'cache'))     # a private decode cache, built by the first job
    try:
        sw = Sweep(['resnet18'], [0.5], [0], out=str(root / 's'),
                   train=dict(dataset='', image_size=64, num_epochs=1, batch_size=32, device='cpu')).check()
        rows = []
        for r in range(repeats + 1):                      # the first one warms the decode cache and the file cache
            shutil.rmtree(root / 's', ignore_errors=True)
            rows.append(one(asdict(sw.config('resnet18', 0.5, 0))))
        import pandas as pd
        df = pd.DataFrame(rows[1:])
        print(df.round(2).to_string())
        print('median:', df.median().round(2).to_dict())
    finally: shutil.rmtree(root, ignore_errors=True)
