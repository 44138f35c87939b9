#!/usr/bin/env bash
# minisweep's GPU path, checked in one offline run of at most 8 minutes (bench/device_check.py says what it checks;
# bench/README.md what a good report looks like).
#
#   bash bench/device_check.sh            on a CUDA machine: 227 px, the reduced dataset in .devdata/tiny-100
#   bash bench/device_check.sh --cpu      the same sections on the CPU at 64 px, small (the check of the check)
#
# Offline: it installs the wheels of .whl/py<X.Y> (made by `bash bench/fetch_wheels.sh X.Y`) with --no-index into a
# temporary folder put first on PYTHONPATH, beside the machine's own torch (python3, or $PYTHON). The dataset is made
# once, where the full one is: `make device-check-ready` makes both and prints the device call. On the device machine:
# carry .whl/py3.12 and .devdata. The report (report.md, results.json, the sweep's log tail) goes to $OUT when it is
# set, else bench/out/device-check, after every section. At the time limit the check gets SIGTERM: it stops its running
# job's whole process tree, writes the partial report and exits 124 (SIGKILL 20 s later if it has not). Exit status:
# 0 all passed, 1 a section failed, 2 it could not start, 124 stopped at the limit.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=()
LIMIT=480
for arg in "$@"; do
  case "$arg" in
    --cpu) MODE=(--cpu); LIMIT=900 ;;
    *) echo "device_check: unknown argument $arg (use --cpu or nothing)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
REPORT=${OUT:-bench/out/device-check}
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])') || { echo "device_check: no $PY" >&2; exit 2; }
"$PY" -c 'import torch, torchvision' 2>/dev/null || { echo "device_check: $PY has no torch/torchvision" >&2; exit 2; }
SCRATCH=$(mktemp -d -t device-check.XXXXXX)
trap 'rm -rf "$SCRATCH"' EXIT
WHL=.whl/py$PYVER
if compgen -G "$WHL/*.whl" >/dev/null; then
  t=$SECONDS
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
    --target "$SCRATCH/site" "$WHL"/*.whl || { echo "device_check: installing the wheels of $WHL failed" >&2; exit 2; }
  echo "installed $(ls "$WHL"/*.whl | wc -l) wheels of $WHL offline in $((SECONDS - t))s"
  export PYTHONPATH="$SCRATCH/site:$PWD"
elif [ ${#MODE[@]} -eq 0 ]; then
  echo "device_check: no wheels in $WHL: run 'bash bench/fetch_wheels.sh $PYVER' where pip reaches PyPI," \
       "and carry $WHL" >&2
  exit 2
else
  echo "no wheels in $WHL: the CPU mode uses the packages installed beside $PY"
  export PYTHONPATH="$PWD"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 MPLBACKEND=Agg PYTHONDONTWRITEBYTECODE=1
export PATH="$(dirname "$(command -v "$PY")"):$PATH"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout -s TERM --kill-after=20 "$LIMIT" "$PY" bench/device_check.py "${MODE[@]}" --out "$REPORT" \
  --work "$SCRATCH/work" --budget $((LIMIT - 70))
rc=$?
[ $rc -eq 124 ] || [ $rc -eq 137 ] &&
  echo "device_check: stopped at its limit of $LIMIT s; partial report in $REPORT" >&2
exit $rc
