#!/usr/bin/env bash
# minisweep on a CUDA machine, in one go: is the sweep bound by the GPU, not by JPEG decoding?
#
#   bash bench/gpu.sh [DATASET]        DATASET: a folder in the timm/mini-imagenet layout
#                                      (default ../shared/data/tiny-imagenet-100, relative to the repository root)
#
# 1. creates (or reuses) the virtual environment .venv with minisweep installed (make, else pip install -e .);
# 2. runs bench/bench.py at 227 px for AlexNet and ResNet18 on the GPU fast path (uint8 cache on the device, bf16
#    autocast, channels_last, cudnn.benchmark) and once more under torch.compile, against the bare loop and the
#    seed-style DataLoader (one worker per core, pinned memory), plus the decode-once check of a small sweep;
# 3. times each speed switch flipped (bench/switches.py), then runs a short real sweep at 227 px and times it;
# 4. prints a short table last.
# Everything it writes goes to bench/out/ (git-ignored): BENCHMARKS-gpu.md, bench-gpu.json, logs, caches, runs.
# Environment knobs: BATCH (default 256), EPOCHS (short sweep, default 2), PER_CLASS (500x375 copy, default 50).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DATA=${1:-${DATA:-$ROOT/../shared/data/tiny-imagenet-100}}
BATCH=${BATCH:-256}
EPOCHS=${EPOCHS:-2}
PER_CLASS=${PER_CLASS:-50}
OUT=$ROOT/bench/out
PY=$ROOT/.venv/bin/python
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
mkdir -p "$OUT"

say() { printf '\n== %s\n' "$*"; }

say "environment"
if [ ! -x "$PY" ] || ! "$PY" -c 'import minisweep, torch' 2>/dev/null; then
  if ! { command -v make >/dev/null 2>&1 && make .venv/.installed; }; then
    test -x "$PY" || python3 -m venv .venv
    "$PY" -m pip install --quiet --upgrade pip
    "$PY" -m pip install --quiet -e ".[dev]"
  fi
fi
"$PY" - <<'EOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit('gpu.sh: torch sees no CUDA GPU (torch %s); run bench/bench.py for the CPU benchmark' % torch.__version__)
print('torch', torch.__version__, '| CUDA', torch.version.cuda, '|', torch.cuda.get_device_name(0),
      '| bf16', torch.cuda.is_bf16_supported())
EOF
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
if [ ! -d "$DATA/data" ]; then echo "gpu.sh: dataset $DATA not found (give it as the first argument)" >&2; exit 2; fi

say "benchmark at 227 px (eager and torch.compile), bare loop and seed-style pipeline side by side"
"$PY" bench/bench.py --device cuda --image-sizes 227 --models alexnet resnet18 --batch-size "$BATCH" --compile \
  --copy-per-class "$PER_CLASS" --dataset "$DATA" --no-demo \
  --out "$OUT/BENCHMARKS-gpu.md" --json "$OUT/bench-gpu.json" 2>&1 | tee "$OUT/bench-gpu.log"

say "each speed switch flipped, side by side (bench/switches.py) at 227 px on the 500x375 copy"
"$PY" bench/switches.py --device cuda --image-size 227 --batch-size "$BATCH" \
  --dataset "$(ls -d "$OUT"/mini-500x375-* 2>/dev/null | head -1)" --out "$OUT/switches-gpu.md" 2>&1 | tee "$OUT/switches-gpu.log" || true

say "short real sweep at 227 px ($EPOCHS epochs, 1/2 and 1/4 of the data, both models)"
rm -rf "$OUT/gpu-sweep" "$OUT/gpu-sweep-cache" "$OUT/gpu-sweep-figures"
start=$SECONDS
set +e
( cd "$OUT" && MINISWEEP_CACHE="$OUT/gpu-sweep-cache" "$ROOT/.venv/bin/minisweep" sweep --models alexnet resnet18 \
    --subset-sizes 0.5 0.25 --seeds 0 --num-epochs "$EPOCHS" --batch-size "$BATCH" --image-size 227 \
    --dataset "$DATA" --out "$OUT/gpu-sweep" --figures "$OUT/gpu-sweep-figures" ) > "$OUT/gpu-sweep.log" 2>&1
rc=$?
set -e
tail -n 5 "$OUT/gpu-sweep.log" | tr '\r' '\n' | grep -v decoding | tail -n 3 || true

say "summary"
SWEEP_RC=$rc SWEEP_S=$((SECONDS - start)) OUT="$OUT" "$PY" - <<'EOF'
import json, os
from pathlib import Path
out = Path(os.environ['OUT'])
res = json.loads((out / 'bench-gpu.json').read_text())
i = res['info']
print(f"{i['gpu']} | {i['cpu']} x{i['cores']} | torch {i['torch']} | minisweep {i['minisweep']}")
print(f"{'model':<18}{'px':>5}{'bare':>10}{'minisweep':>11}{'ms/bare':>9}{'seed':>9}{'ms/seed':>9}{'GiB':>7}")
for r in res['train']:
    seed = r.get('seed')
    print(f"{r['model'] + (' +compile' if r['compile'] else ''):<18}{r['image_size']:>5}{r['bare']['ips']:>10.0f}"
          f"{r['minisweep']['ips']:>11.0f}{r['ratio_minisweep_bare']:>9.3f}{(seed['ips'] if seed else float('nan')):>9.0f}"
          f"{r.get('ratio_minisweep_seed', float('nan')):>9.2f}{r.get('max_memory_allocated_gib', float('nan')):>7.2f}")
for d in res['data']:
    print(f"data only {d['image_size']}px: seed loader {d['seed']['ips']:.0f} img/s, minisweep batches {d['minisweep']['ips']:.0f} img/s ({d['ratio']:.1f}x)")
for d in res['decode']:
    print(f"decode once {d['dataset']} {d['split']}: {d['n']} images at {d['stored_px']}px, {d['ips']:.0f} img/s")
sw = res.get('sweep') or {}
if sw.get('available'):
    print(f"decode-once sweep (64 px): exit {sw['rc']}, {sw['wall']:.0f}s, builds.jsonl lines {sw['builds']} ({'once per split' if sw['once'] else 'NOT once'})")
cache = out / 'gpu-sweep-cache' / 'builds.jsonl'
builds = len(cache.read_text().splitlines()) if cache.exists() else 0
ips = []
for log in sorted((out / 'gpu-sweep').glob('*/*/*/log.jsonl')):
    rows = [json.loads(l) for l in log.read_text().splitlines() if l.strip()]
    if rows: ips.append(f"{log.parent.relative_to(out / 'gpu-sweep')}: {rows[-1]['images_per_second']:.0f} img/s")
print(f"short sweep 227 px: exit {os.environ['SWEEP_RC']}, {float(os.environ['SWEEP_S']):.0f}s, {builds} cache builds; " + '; '.join(ips))
print(f"full report: {out / 'BENCHMARKS-gpu.md'}")
EOF
exit $rc
