#!/usr/bin/env bash
# Runs scripts/run_grids.sh from a git worktree pinned at this checkout's HEAD, so that editing
# the code here while the grids run (hours) cannot change the runs still to come. Run workdirs
# stay in this checkout's runs/ (the worktree links to it); after every step the grid tables and
# the selection are copied back into this checkout's results/.
#
#   bash scripts/run_grids_pinned.sh                 # everything, from where it stopped
#   bash scripts/run_grids_pinned.sh core            # from the core grid on
#   nohup bash scripts/run_grids_pinned.sh > runs/queue.log 2>&1 &
#
# The worktree is $PIN_DIR (default ../<this folder>-grids); it is moved to HEAD at each start, so
# commit what the grids should run first. Uses this checkout's .venv (or $PYTHON).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
pin="${PIN_DIR:-$here/../$(basename "$here")-grids}"
cd "$here"
if [[ -n "$(git status --porcelain --untracked-files=no -- fft configs scripts)" ]]; then
  echo "run_grids_pinned: uncommitted changes in fft/, configs/ or scripts/ would not run; commit them first" >&2
  exit 2
fi
if [[ ! -e "$pin/.git" ]]; then
  git worktree add --detach -f "$pin" HEAD >/dev/null
fi
git -C "$pin" checkout -q -f --detach "$(git rev-parse HEAD)"
mkdir -p runs results/grids
if [[ ! -L "$pin/runs" ]]; then
  rm -rf "$pin/runs"
  ln -s "$here/runs" "$pin/runs"
fi
# The worktree starts from this checkout's tables and selection (the later steps read them).
cp -p results/grids/*.json results/grids/*.md results/grids/*.csv "$pin/results/grids/" 2>/dev/null || true
cp -p results/selection.* "$pin/results/" 2>/dev/null || true
export PYTHON="${PYTHON:-$here/.venv/bin/python}"
# What the steps write: grid tables, the selection, the claims report, figures, time to target.
export AFTER_STEP="cp -p results/grids/*.json results/grids/*.md results/grids/*.csv '$here/results/grids/'; \
cp -p results/selection.* results/claims.* results/time_to_target.* '$here/results/' 2>/dev/null; \
cp -pr results/figures '$here/results/' 2>/dev/null; ${AFTER_STEP:-true}"
echo "[$(date +%T)] run_grids_pinned: $(git rev-parse --short HEAD) in $pin"
cd "$pin"
exec bash scripts/run_grids.sh "$@"
