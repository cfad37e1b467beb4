# Sourced on a GPU host with no install of digitscan (no network there): lays out the
# digitscan namespace as pip would (worker/, trainer/, export/ as digitscan.worker, ...)
# with symlinks into this checkout, and puts it on PYTHONPATH.
work=$(mktemp -d)
mkdir -p "$work/pkg/digitscan"
ln -s "$PWD"/digitscan/*.py "$work/pkg/digitscan/"
for stage in worker trainer export models; do ln -s "$PWD/$stage" "$work/pkg/digitscan/$stage"; done
# PYTHONSAFEPATH: the checkout itself (with its own digitscan/ folder) must not come first.
export PYTHONPATH=$work/pkg:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 PYTHONSAFEPATH=1
