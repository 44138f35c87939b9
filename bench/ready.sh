#!/usr/bin/env bash
# `make device-check-ready`: what the device check needs, made here, checked to travel; the device call printed.
#
#   1. .whl/py3.12: the wheels the device image lacks (bench/fetch_wheels.sh, checked against bench/device-image.txt);
#   2. .whl/pyX.Y for this machine's Python, so that `bash bench/device_check.sh --cpu` tests the same offline install;
#   3. .devdata/tiny-100: the reduced dataset (100 classes x 100/20/10 images), made once from the full one;
#   4. the tree that travels (tracked and untracked-not-ignored files) plus the carried folders under the 64 MiB a
#      device call takes.
# Needs pip to reach PyPI (once) and ../shared/data/tiny-imagenet-100 (or DATA_SOURCE) for the dataset. Exit status 0
# when ready, 1 when something does not fit or failed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LIMIT_MIB=64
DATA=.devdata/tiny-100
SOURCE=${DATA_SOURCE:-../shared/data/tiny-imagenet-100}
HERE=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

for v in 3.12 $([ "$HERE" != 3.12 ] && echo "$HERE"); do
  PYTHON="$PY" bash bench/fetch_wheels.sh "$v"
done
if [ -d "$DATA/data" ]; then echo "$DATA: there already ($(du -sm "$DATA" | cut -f1) MiB)"
else
  [ -d "$SOURCE/data" ] || {
    echo "device-check-ready: no dataset at $SOURCE to make $DATA from (set DATA_SOURCE)" >&2; exit 1; }
  "$PY" bench/device_check.py --make-data "$DATA" --source "$SOURCE"
fi

# what a device call carries: the working tree as git sees it, without what it ignores, plus the carried folders
tree=$( { git ls-files -z; git ls-files -z --others --exclude-standard; } | xargs -0 -r stat -c %s 2>/dev/null \
        | awk '{s += $1} END {print s + 0}')
carried=$(du -sb .whl/py3.12 .devdata | awk '{s += $1} END {print s + 0}')
total=$((tree + carried))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }
echo "travels: tree $(mib $tree) MiB + .whl/py3.12 and .devdata $(mib $carried) MiB" \
     "= $(mib $total) MiB of $LIMIT_MIB MiB"
if [ "$total" -ge $((LIMIT_MIB * 1048576)) ]; then
  echo "device-check-ready: $(mib $total) MiB would not travel (at most $LIMIT_MIB MiB)" >&2; exit 1
fi
cat <<EOF

Ready. Check the check here first (about 2 minutes; the same offline install from .whl/py$HERE):
    bash bench/device_check.sh --cpu
Then, where a GPU machine is lent, one call of the device tool from this checkout (about 9 minutes with its start):
    run(command="PYTHONUNBUFFERED=1 bash bench/device_check.sh", carry=[".whl/py3.12", ".devdata"], timeout_s=600)
The report comes back as report.md, results.json and sweep_log_tail.txt; bench/README.md says what good numbers are.
EOF
