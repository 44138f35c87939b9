#!/usr/bin/env bash
# Fails when `nbdev_export` or `nbdev_clean` would change a file: notebooks are the source of minisweep/*.py.
set -euo pipefail
snap() {
  find nbs minisweep -name '*.ipynb' -o -name '*.py' -not -path '*/notebooks/*' | LC_ALL=C sort | xargs sha1sum
}
before=$(snap)
nbdev_export
nbdev_clean
after=$(snap)
if [ "$before" != "$after" ]; then
  echo "nbdev_export/nbdev_clean changed these files (now fixed in the work tree; commit them):" >&2
  diff <(echo "$before") <(echo "$after") | grep '^[<>]' | awk '{print "  " $3}' | sort -u >&2
  exit 1
fi
echo "notebooks clean, library in sync"
