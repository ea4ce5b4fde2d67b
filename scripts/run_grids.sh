#!/usr/bin/env bash
# Runs the comparison grids of results/claims.md in order, then the selection, the figures and the
# claims report. Resumable: every sweep skips finished runs and resumes stopped ones, so after an
# interruption run it again. A grid with failed runs (see their log.txt; their cells are reported
# as missing) does not stop the queue; a step that cannot start (e.g. a grid whose settings need a
# selection that is not there) does, since the later steps read what the earlier ones chose.
#
#   bash scripts/run_grids.sh                 # everything, from where it stopped
#   bash scripts/run_grids.sh core            # from the core grid on
#   RESULTS=/elsewhere/results/grids bash scripts/run_grids.sh   # tables elsewhere
#   AFTER_STEP='cp results/grids/* /backup/' bash scripts/run_grids.sh   # a command after each step
#   bash scripts/run_grids_pinned.sh          # the same from a worktree pinned at HEAD (edit freely)
#
# CPU hours measured on the 2-core machine: results/claims.md (Protocol: compute used). The
# time_budget grid measures wall-clock time: give it the machine to itself. Other work beside a
# grid: lower its whole session first, `echo 19 > /proc/self/autogroup` (Linux autogroups share
# the CPU per session, so `nice` alone does not yield to a grid started from another shell).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RESULTS=${RESULTS:-results/grids}
# partition and supermask come last: they rerun the retired scripts' tables (cls pooling, one
# untuned learning rate) as grids, and no claim reads them.
STEPS=(pooling supermask_init lr_selection select core data_fraction time_budget learners_ablation report
       partition supermask)
start=${1:-pooling}
if [[ " ${STEPS[*]} " != *" $start "* ]]; then
  echo "run_grids: unknown step '$start'; steps, in order: ${STEPS[*]}" >&2
  exit 2
fi
started=0
failed=()
for step in "${STEPS[@]}"; do
  [[ $step == "$start" ]] && started=1
  [[ $started == 1 ]] || continue
  echo "[$(date +%T)] run_grids: $step"
  case $step in
    select) "$PY" scripts/select_hparams.py --table "$RESULTS/lr_selection.json" || exit $? ;;
    report)  # Tables rebuilt first, so every one has the columns this code writes.
      for grid in pooling supermask_init lr_selection core data_fraction time_budget learners_ablation; do
        "$PY" -m fft.sweep "$grid" --only-table --results "$RESULTS" || exit $?
      done
      "$PY" scripts/figures.py --grids "$RESULTS" && "$PY" scripts/claims.py --grids "$RESULTS" || exit $? ;;
    *) "$PY" -m fft.sweep "$step" --results "$RESULTS"; rc=$?
       # 1: some runs failed (named in the log; their cells show as missing): go on, say so at the
       # end. Anything else (a grid that cannot load, e.g. no selection yet): stop here.
       if [[ $rc == 1 ]]; then failed+=("$step"); elif [[ $rc != 0 ]]; then exit $rc; fi ;;
  esac
  if [[ -n "${AFTER_STEP:-}" ]]; then bash -c "$AFTER_STEP"; fi
done
if (( ${#failed[@]} )); then
  echo "[$(date +%T)] run_grids: done; runs failed in: ${failed[*]} (see the sweep logs; rerun to retry them)"
  exit 1
fi
echo "[$(date +%T)] run_grids: done"
