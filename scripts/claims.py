"""Each claim of the three papers behind fft (/work/shared/PAPERS.md) as a criterion that can be
tested on the packaged all-MiniLM-L6-v2, its evidence from the grid tables, and a verdict.

  python scripts/claims.py [--grids results/grids] [--out results/claims] [--margin 2.0]
                           [--no-distances]

Reads <grids>/core.json (configs/grids/core.py), <grids>/data_fraction.json
(configs/grids/data_fraction.py), <grids>/time_budget.json (configs/grids/time_budget.py),
<grids>/learners_ablation.json (configs/grids/learners_ablation.py) and <grids>/pooling.json
(configs/grids/pooling.py) where they exist; reads the runs' curve.json (under --root) for the
seconds to reach full fine-tuning's score; measures how far the core grid's full fine-tuning runs moved from their step-0 weights
(fft.analyze.run_params + fft.distances.grouped, cached by workdir in <out>_distances.json);
reads the gradient layer rankings in <rankings>/<task>_gradient.json; writes <out>.md and <out>.json.

Verdicts per cell (a task, or a task and data fraction): 'holds', 'fails', 'inconclusive' (the
data do not decide it, e.g. an interval that straddles the margin, or too few seeds), 'missing'
(no finished run on one side, or no table). A missing cell is never filled in: the claim's overall
verdict says so. Scores are the task's main metric in %, from the per-seed values of the tables'
`eval` entries; method and baseline are paired by seed (fft.stats.paired_difference).

The work is done by the fft.report package (tables, verdicts, distances, rankings, build,
markdown); this file is its command line.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from collections.abc import Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# After the path set-up above, so that the script runs from any directory.
from fft.report import build as report
from fft.report import markdown as report_md
from fft.report.tables import DEFAULTS, repo_relative

# The options that show in the report's "Regenerate" command when they differ from the default.
SHOWN_OPTIONS = ("grids", "out", "margin", "close_rel_l1", "close_angle", "layer_ratio", "sd_factor",
                 "confidence", "selection", "fallback_distances", "rankings", "root")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", default=str(REPO / "results" / "grids"), help="the grid tables")
    parser.add_argument("--out", default=str(REPO / "results" / "claims"),
                        help="writes <out>.md, <out>.json; caches distances in <out>_distances.json")
    parser.add_argument("--margin", type=float, default=DEFAULTS["margin"],
                        help="equivalence margin in %% points")
    parser.add_argument("--no-distances", action="store_true",
                        help="do not load runs for the distance claims (cached distances still count)")
    parser.add_argument("--close-rel-l1", type=float, default=DEFAULTS["close_rel_l1"])
    parser.add_argument("--close-angle", type=float, default=DEFAULTS["close_angle"], help="degrees")
    parser.add_argument("--layer-ratio", type=float, default=DEFAULTS["layer_ratio"])
    parser.add_argument("--sd-factor", type=float, default=DEFAULTS["sd_factor"])
    parser.add_argument("--confidence", type=float, default=DEFAULTS["confidence"])
    parser.add_argument("--selection", default=str(REPO / "results" / "selection.json"))
    parser.add_argument("--fallback-distances", default=str(REPO / "results" / "distances"),
                        help="per-task distances.json of earlier full runs, shown when the core grid has none")
    parser.add_argument("--rankings", default=str(REPO / "results" / "rankings"),
                        help="<task>_gradient.json of scripts/rank_layers.py, for critical2-grad runs "
                             "that have not run yet (a run's own distances_file comes first)")
    parser.add_argument("--root", default=str(REPO),
                        help="where the tables' run workdirs are relative to (their curve.json for claim "
                             "8c and the learners section; config.json for the time budgets)")
    args = parser.parse_args(argv)
    if not args.margin >= 0:
        parser.error("--margin must be >= 0")
    return args


def command(args) -> str:
    parts = ["python scripts/claims.py"]
    defaults = parse_args([])
    for flag in SHOWN_OPTIONS:
        value = getattr(args, flag)
        if value != getattr(defaults, flag):
            shown = repo_relative(pathlib.Path(value)) if isinstance(value, str) else f"{value:g}"
            parts.append(f"--{flag.replace('_', '-')} {shown}")
    if args.no_distances:
        parts.append("--no-distances")
    return " ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    doc = report.build(args, command(args))
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report.with_ext(out, "md").write_text(report_md.markdown(doc, args))
    report.with_ext(out, "json").write_text(json.dumps(report.jsonable(doc), indent=1, allow_nan=False) + "\n")
    for c in doc["claims"]:
        print(f"{c['id']:>3}  {c['verdict']:<12}  {c['title']}  ({report_md.counts_text(c['counts'])})")
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
