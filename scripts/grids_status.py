"""Where the comparison grids stand: per grid of scripts/run_grids.sh, its runs, how many finished,
the wall time they took and an estimate for the rest (fft/sweep/cost.py), as a Markdown table.

  python scripts/grids_status.py                 # every grid of the queue, in its order
  python scripts/grids_status.py core time_budget

A grid that cannot be expanded yet (its settings come from a step that has not run, e.g. core
before the selection) says why instead of numbers.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fft import errors
from fft.sweep import cost, expand, is_finished, load_grid
from fft.sweep.grid import DEFAULT_ROOT

QUEUE = ("pooling", "supermask_init", "lr_selection", "core", "data_fraction", "time_budget",
         "learners_ablation", "partition", "supermask")


def status_rows(names, root: pathlib.Path) -> list[dict]:
    refs = cost.references(root)
    model = cost.Model(refs)
    rows = []
    for name in names:
        try:
            grid = load_grid(name)
            points = expand(grid)
        except (errors.FftError, OSError, ValueError) as e:
            rows.append({"grid": name, "error": errors.one_line(e) if isinstance(e, errors.FftError) else str(e)})
            continue
        c = cost.grid_cost(points, root / grid.name, model)
        known = [s for _, s in c["todo"] if s is not None]
        rows.append({"grid": grid.name, "runs": len(points), "finished": sum(is_finished(root / grid.name / p.rel)
                                                                          for p in points),
                     "spent_h": sum(w for _, w in c["done"]) / 3600, "left_h": sum(known) / 3600,
                     "unknown": len(c["todo"]) - len(known)})
    return rows


def markdown(rows: list[dict], num_refs: int) -> str:
    lines = ["| grid | runs | finished | wall time spent (h) | estimate left (h) |", "|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['grid']} | — | — | — | not expandable yet: {r['error']} |")
            continue
        left = f"{r['left_h']:.2f}" + (f" (+{r['unknown']} runs with no reference)" if r["unknown"] else "")
        lines.append(f"| {r['grid']} | {r['runs']} | {r['finished']} | {r['spent_h']:.2f} | {left} |")
    ok = [r for r in rows if "error" not in r]
    lines.append(f"| all | {sum(r['runs'] for r in ok)} | {sum(r['finished'] for r in ok)} | "
                 f"{sum(r['spent_h'] for r in ok):.2f} | {sum(r['left_h'] for r in ok):.2f} |")
    lines += ["", (f"Estimates: fft/sweep/cost.py, from the {num_refs} finished runs under the root "
                   "(one run at a time on this machine).")]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grids", nargs="*", default=list(QUEUE))
    parser.add_argument("--root", default=str(DEFAULT_ROOT))
    args = parser.parse_args(argv)
    root = pathlib.Path(args.root).absolute()
    print(markdown(status_rows(args.grids, root), len(cost.references(root))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
