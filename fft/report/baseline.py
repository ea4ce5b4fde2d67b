"""Full fine-tuning here beside public reference numbers (context, no verdict).

Every claim compares a method with full fine-tuning, so the report first shows that baseline: the
core grid's full runs, each dev metric as mean ± sd over seeds, next to the dev scores public
sources give for related models (/work/shared/PAPERS.md, "Numbers from public sources"). None of
them is this checkpoint: all-MiniLM-L6-v2 is MiniLM-L12 cut to every second layer and then trained
for sentence embeddings, so the numbers say what range to expect, not what to match.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fft.report.tables import find_row
from fft.report.text import num

# (column, source, {task: what the source reports, as written there}); dev sets, in %.
REFERENCES: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("MiniLM-L6-H384 (official checkpoint)", "microsoft/unilm MiniLM README",
     {"cola": "47.5", "rte": "68.8", "mrpc": "88.9", "sst2": "91.5"}),
    ("DistilBERT", "Sanh et al. 2019, median of 5 runs",
     {"cola": "51.3", "stsb": "86.9", "rte": "59.9", "mrpc": "87.5", "sst2": "91.3"}),
    ("bert-base-cased", "transformers text-classification example (lr 2e-5, bs 32, 3 epochs)",
     {"cola": "MCC 56.53", "stsb": "Pearson 88.64 / Spearman 88.48", "rte": "acc 65.70",
      "mrpc": "F1 88.85 / acc 84.07", "sst2": "acc 92.32"}),
)
TASKS = ("cola", "stsb", "rte", "mrpc", "sst2")
_SKIP = ("loss", "combined")  # Not GLUE metrics: the eval loss and the mean of two metrics.


def _metrics(row: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """{metric: {'mean', 'sd', 'n'}} in % from a table row's evaluation of its reported split."""
    if not row or not row.get("n"):
        return {}
    split = row["eval"].get(row["split"], {})
    out = {}
    for name, s in split.items():
        if name in _SKIP or s.get("mean") is None:
            continue
        out[name] = {"mean": 100 * s["mean"], "sd": None if s["sd"] is None else 100 * s["sd"],
                     "n": len(s.get("values") or []) or row["n"]}
    return out


def baseline_section(core: Mapping[str, Any] | None) -> dict[str, Any]:
    """{'present', 'rows': [{task, fraction, n, planned, metrics, references}], 'references'}."""
    rows = []
    for task in TASKS:
        row = find_row(core, task, "full")
        rows.append({
            "task": task, "fraction": None if row is None else row["fraction"],
            "n": 0 if row is None else row["n"], "planned": None if row is None else row["planned"],
            "metrics": _metrics(row), "references": [ref.get(task) for _, _, ref in REFERENCES],
        })
    return {"present": core is not None, "rows": rows,
            "references": [{"column": c, "source": s} for c, s, _ in REFERENCES]}


def metrics_text(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    if not metrics:
        return "missing"
    parts = [f"{name} {num(m['mean'])}" + ("" if m["sd"] is None else f" ± {num(m['sd'])}")
             for name, m in metrics.items()]
    return "; ".join(parts) + f" (n={next(iter(metrics.values()))['n']})"


def baseline_lines(section: Mapping[str, Any], path: str) -> list[str]:
    lines = ["", "## Full fine-tuning here, beside public reference numbers (context, no verdict)", ""]
    if not section["present"]:
        return lines + [f"`{path}` does not exist yet: **missing**.", ""]
    refs = section["references"]
    lines += [("The baseline of every comparison below: the core grid's `full` runs, every dev "
               "metric as mean ± sd over seeds (%). Beside them, what public sources report on dev "
               "for related models, none of them this checkpoint (all-MiniLM-L6-v2 is MiniLM-L12 "
               "cut to every second layer, then trained for sentence embeddings with mean pooling): "
               "a range to expect, not a target. Sources: "
               + "; ".join(f"{r['column']}: {r['source']}" for r in refs) + "."), "",
              "| task | train data | full fine-tuning here | " + " | ".join(r["column"] for r in refs) + " |",
              "|---" * (3 + len(refs)) + "|"]
    for r in section["rows"]:
        data = "—" if r["fraction"] is None else f"{100 * r['fraction']:g}%"
        if r["planned"] and r["n"] < r["planned"]:
            data += f" ({r['n']} of {r['planned']} seeds)"
        refs_text = " | ".join(x or "—" for x in r["references"])
        lines.append(f"| {r['task']} | {data} | {metrics_text(r['metrics'])} | {refs_text} |")
    return lines + [""]
