#!/usr/bin/env bash
# Wheels of what minisweep needs beyond the device machine's image (bench/device-image.txt: Python 3.12, torch,
# torchvision, numpy, pandas, pyarrow, matplotlib, tqdm, pillow, huggingface-hub, fsspec, ...), for
# bench/device_check.sh, which installs them there with `pip install --no-index`. Run it where pip reaches PyPI:
#
#   bash bench/fetch_wheels.sh 3.12      # the device machine  -> .whl/py3.12 (carry it: .whl/py3.12)
#   bash bench/fetch_wheels.sh 3.11      # this machine's CPU mode -> .whl/py3.11
#
# The versions are those of bench/device-wheels.txt. The folder is made afresh each time (downloaded beside it, then
# swapped in), so that it never holds two versions of one package: two stop the whole offline install. Then
# bench/check_wheels.py checks every wheel's own requirements against the other wheels and the device image.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${1:?usage: bash bench/fetch_wheels.sh PYTHON_VERSION (3.12 for the device machine)}
case "$PYVER" in
  3.[0-9]|3.[0-9][0-9]) ;;
  *) echo "fetch_wheels: $PYVER is not a Python version like 3.12" >&2; exit 2;;
esac
DEST=.whl/py$PYVER
PY=${PYTHON:-python3}
mkdir -p .whl
git check-ignore -q "$DEST/x.whl" || { echo "fetch_wheels: $DEST is not git-ignored" >&2; exit 2; }
NEW=$(mktemp -d .whl/.new-py$PYVER.XXXXXX)
trap 'rm -rf "$NEW"' EXIT
PLAT=()
for p in manylinux_2_39_x86_64 manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 \
         manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
         manylinux1_x86_64 linux_x86_64; do
  PLAT+=(--platform "$p")
done
grep -v '^\s*#' bench/device-wheels.txt | grep -v '^\s*$' | while read -r req; do
  "$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp "${PLAT[@]}" -d "$NEW" "$req" 2> >(grep -v 'is ignored: it is neither' >&2) \
    || { echo "fetch_wheels: no wheel of $req for Python $PYVER" >&2; exit 1; }
done
rm -rf "$DEST"; mv "$NEW" "$DEST"
# the device's Python (3.12) is checked against the device image; this machine's (the CPU mode) against its own packages
HERE=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$PYVER" = "$HERE" ]; then AGAINST=(--here); else AGAINST=(); fi
"$PY" bench/check_wheels.py "$DEST" --python "$PYVER" "${AGAINST[@]}"
n=$(ls "$DEST"/*.whl | wc -l)
mib=$(du -sm "$DEST" | cut -f1)
echo "$DEST: $n wheels, $mib MiB"
if [ "$mib" -ge 40 ]; then
  echo "fetch_wheels: $DEST is $mib MiB: with the data and the tree it would not travel (64 MiB in all)" >&2; exit 1
fi
