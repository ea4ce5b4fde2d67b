"""Chooses each method's hyperparameters from the validation scores of a selection grid.

  python scripts/select_hparams.py [--table results/grids/lr_selection.json] [--out results/selection]

The grid (configs/grids/lr_selection.py) trains every candidate setting on 90% of the train split of
its tasks and scores it on the held-out 10% (`validation`); dev is never read. Per method, the
chosen setting has the best mean over the grid's tasks of the task's main metric (mean over
seeds); a candidate missing any task is not eligible, and a method with no eligible candidate is
listed as not chosen. Writes <out>.json ({method: {lr, options, score, per task, candidates}}) and
<out>.md (every candidate, the chosen one marked), which the core grid reads.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent


def candidates(rows: list[dict[str, Any]]) -> dict[str, dict[tuple, dict[str, Any]]]:
    """{method: {(setting, lr): {"setting", "lr", "options", "scores": {task: %}}}} from table rows
    scored on the validation split."""
    out: dict[str, dict[tuple, dict[str, Any]]] = {}
    for row in rows:
        if row["split"] != "validation":
            raise SystemExit(f"select_hparams: row {row['task']}/{row['setting']} is scored on "
                             f"{row['split']!r}, not 'validation': selection never reads dev")
        key = (row["setting"], row["lr"])
        cell = out.setdefault(row["method"], {}).setdefault(
            key, {"setting": row["setting"], "lr": row["lr"], "options": row["options"], "scores": {}})
        if row["mean"] is not None:
            cell["scores"][row["task"]] = row["mean"]
    return out


def choose(table: dict[str, Any]) -> dict[str, Any]:
    tasks = list(dict.fromkeys(r["task"] for r in table["rows"]))
    chosen = {}
    for method, cells in candidates(table["rows"]).items():
        ranked = []
        for cell in cells.values():
            complete = all(t in cell["scores"] for t in tasks)
            cell["score"] = sum(cell["scores"][t] for t in tasks) / len(tasks) if complete else None
            if complete:
                ranked.append(cell)
        ranked.sort(key=lambda c: -c["score"])
        best = ranked[0] if ranked else None
        chosen[method] = {
            "setting": best and best["setting"], "lr": best and best["lr"],
            "options": best and best["options"], "score": best and round(best["score"], 2),
            "lr_at_edge": best and lr_at_edge(best, ranked),
            "options_at_edge": (best and options_at_edge(best, ranked)) or {},
            "tasks": tasks, "eligible": len(ranked), "candidates": list(cells.values()),
        }
    return chosen


def lr_at_edge(best: dict[str, Any], ranked: list[dict[str, Any]]) -> str | None:
    """'lowest' or 'highest' when the chosen learning rate is at that end of the rates tried for
    its setting (the optimum may lie beyond: extend the grid), else None."""
    lrs = sorted({c["lr"] for c in ranked if c["setting"] == best["setting"]})
    if len(lrs) < 2:
        return None
    return "lowest" if best["lr"] == lrs[0] else "highest" if best["lr"] == lrs[-1] else None


def options_at_edge(best: dict[str, Any], ranked: list[dict[str, Any]]) -> dict[str, str]:
    """{option: 'lowest' | 'highest'} for each numeric option crossed over 3 or more values whose
    chosen value is at that end of the values tried (as for the learning rate; with 2 values
    every choice is an end, so those are not flagged)."""
    out = {}
    for key, value in (best["options"] or {}).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        values = sorted({c["options"][key] for c in ranked if isinstance(c["options"].get(key), (int, float))})
        if len(values) >= 3 and value in (values[0], values[-1]):
            out[key] = "lowest" if value == values[0] else "highest"
    return out


def markdown(chosen: dict[str, Any], source: str) -> str:
    lines = [
        "# Hyperparameters chosen on held-out validation data",
        "",
        (f"From `{source}` (regenerate: `python scripts/select_hparams.py`). Each candidate trained "
        "on 90% of the train split and was scored on the other 10% (`validation`, stratified; dev "
        "is never read). Score: main metric in % (RTE accuracy, STS-B mean of Pearson and "
        "Spearman); the chosen setting (**bold**) has the best mean over the tasks."),
        "",
    ]
    for method, c in chosen.items():
        tasks = c["tasks"]
        lines += [f"## {method}", "", "| setting | lr | " + " | ".join(tasks) + " | mean |",
                  "|---|---|" + "---|" * (len(tasks) + 1)]
        for cell in c["candidates"]:
            mark = "**" if cell["setting"] == c["setting"] and cell["lr"] == c["lr"] else ""
            scores = [f"{cell['scores'][t]:.2f}" if t in cell["scores"] else "missing" for t in tasks]
            mean = "—" if cell["score"] is None else f"{mark}{cell['score']:.2f}{mark}"
            lines.append(f"| {mark}{cell['setting']}{mark} | {cell['lr']:g} | " + " | ".join(scores) + f" | {mean} |")
        if c["setting"] is None:
            lines.append("\nNo candidate finished on every task: not chosen.")
        elif c["lr_at_edge"]:
            lines.append(f"\nThe chosen learning rate is the {c['lr_at_edge']} tried for this setting: "
                         "the best may lie beyond it (extend the grid's rates).")
        for key, end in (c.get("options_at_edge") or {}).items():
            lines.append(f"\nThe chosen {key} ({c['options'][key]:g}) is the {end} tried: the best may "
                         "lie beyond it; compare its neighbours' scores above before extending the grid.")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", default=str(REPO / "results" / "grids" / "lr_selection.json"))
    parser.add_argument("--out", default=str(REPO / "results" / "selection"))
    args = parser.parse_args(argv)
    path = pathlib.Path(args.table)
    if not path.is_file():
        print(f"select_hparams: {path}: no such table (run: fft sweep lr_selection)", file=sys.stderr)
        return 2
    table = json.loads(path.read_text())
    chosen = choose(table)
    source = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    out = pathlib.Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(
        {"source": str(source), "methods": {m: {k: v for k, v in c.items() if k != "candidates"}
                                            for m, c in chosen.items()}}, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(chosen, str(source)))
    for method, c in chosen.items():
        what = "not chosen" if c["setting"] is None else f"{c['setting']} lr {c['lr']:g} (validation {c['score']:.2f})"
        if c["setting"] is not None and c["lr_at_edge"]:
            what += f"; warning: the {c['lr_at_edge']} learning rate tried"
        for key, end in (c.get("options_at_edge") or {}).items():
            what += f"; warning: the {end} {key} tried"
        print(f"{method}: {what}")
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
