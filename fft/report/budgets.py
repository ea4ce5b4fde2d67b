"""Doering et al.'s time budgets and spread (issue 16): BitFit against full fine-tuning at every
wall-clock budget of the time_budget grid (claim 9a, with every method's scores per budget as
evidence), and the adapters' seed-to-seed spread across data amounts and budgets (claim 9b).

The time_budget grid (configs/grids/time_budget.py) names its settings `<method>-<label>`, one per
budget of 1/3, 2/3, 1 and 2 epochs of full fine-tuning on this machine (tables.BUDGETS); each
run's config.json holds its budget in seconds. A cell without finished runs is missing."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping
from typing import Any

from fft.report import figures_data
from fft.report.tables import (
    BUDGET_METHODS,
    BUDGET_TASKS,
    BUDGETS,
    FRACTION_TASKS,
    FRACTIONS,
    SEEDS,
    budget_setting,
    epochs_text,
    find_row,
    seed_scores,
    seed_workdirs,
    summary,
)
from fft.report.verdicts import (
    EVERY_RULE,
    MOST_RULE,
    claim,
    comparison,
    equivalence_text,
    f_test_text,
    methods_at,
    overall_most,
    sd_ratio,
    sd_ratio_check,
)

SOURCE = "Doering et al. 2024"


def budget_seconds(table, task: str, label: str, root: pathlib.Path) -> float | None:
    """The cell's budget in seconds, from the config.json of any of its finished runs (workdirs
    relative to `root`); None when none is readable."""
    for method in BUDGET_METHODS:
        for workdir in seed_workdirs(find_row(table, task, budget_setting(method, label))).values():
            path = figures_data.resolve(workdir, root) / "config.json"
            try:
                budget = json.loads(path.read_text()).get("time_budget_s") if path.is_file() else None
            except (OSError, ValueError):
                budget = None
            if budget is not None:
                return float(budget)
    return None


def _budget_key(epochs: float, label: str) -> dict[str, Any]:
    return {"budget": label, "epochs": epochs, "epochs_text": epochs_text(epochs)}


def budget_evidence(table, confidence: float, root: pathlib.Path) -> list[dict[str, Any]]:
    """Per (task, budget): every method's score (mean ± sd over seeds) and its difference to
    full fine-tuning paired by seed; information beside claim 9a."""
    out = []
    for task in BUDGET_TASKS:
        for epochs, label in BUDGETS:
            settings = {m: budget_setting(m, label) for m in BUDGET_METHODS}
            out.append({"task": task, **_budget_key(epochs, label),
                        "budget_s": budget_seconds(table, task, label, root),
                        "methods": methods_at(table, task, settings, confidence)})
    return out


SHARED_FACTOR = 0.75  # A budget run below this share of the grid's median CPU share is flagged.


def machine_sharing(table) -> dict[str, Any]:
    """How much CPU the time_budget runs got (each run's `cpu_share`, CPU seconds per wall second
    of its training loop): the median over the runs that record it, and the runs below
    SHARED_FACTOR of it, which most likely shared the machine and so trained for fewer steps than
    their budget allows alone."""
    shares = []
    for row in (table or {}).get("rows", []):
        for workdir, share in zip(row.get("workdirs", []), row.get("cpu_shares") or []):
            if share is not None:
                shares.append((workdir, float(share)))
    if not shares:
        return {"recorded": 0, "median": None, "runs": [], "factor": SHARED_FACTOR}
    values = sorted(v for _, v in shares)
    mid = len(values) // 2
    median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    low = [{"workdir": w, "cpu_share": v} for w, v in shares if v < SHARED_FACTOR * median]
    return {"recorded": len(shares), "median": median, "runs": low, "factor": SHARED_FACTOR}


def bitfit_budget_claim(table, args) -> dict[str, Any]:
    """9a: BitFit − full at every (task, budget) of the time_budget grid, equivalence within the
    margin, every-cell rule."""
    cells = []
    for task in BUDGET_TASKS:
        for epochs, label in BUDGETS:
            c = comparison(task, find_row(table, task, budget_setting("bitfit", label)),
                           find_row(table, task, budget_setting("full", label)), args.margin, args.confidence)
            cells.append({**c, **_budget_key(epochs, label)})
    budgets = ", ".join(epochs_text(e) for e, _ in BUDGETS)
    what = (f"Under wall-clock budgets of {budgets} epochs of full fine-tuning on this machine (each "
            f"task's core-grid full runs' seconds per epoch; 100% of the data) on MRPC, CoLA and STS-B, "
            f"settings `<method>-<budget>`")
    return claim("9a", "BitFit matches full fine-tuning at every time budget", SOURCE,
                 equivalence_text("bitfit", what, args, grid="time_budget", unit="cell (task and budget)"),
                 EVERY_RULE, cells, kind="comparison", method="bitfit", baseline="full",
                 evidence=budget_evidence(table, args.confidence, pathlib.Path(args.root)),
                 machine=machine_sharing(table))


def _spread_cell(table, grid: str, task: str, settings: Mapping[str, str], sd_factor: float,
                 **key) -> dict[str, Any]:
    """Claim 9b's cell: the adapters' and full's settings ({method: setting}) at one cell."""
    s = {m: summary(seed_scores(find_row(table, task, settings[m], key.get("fraction"))))
         for m in ("adapters", "full")}
    verdict, note = sd_ratio_check(s, sd_factor)
    full_n = all(v["n"] >= len(SEEDS) for v in s.values())  # Ratios only where the verdict reads them.
    ratio = sd_ratio(s["adapters"]["sd"], s["full"]["sd"]) if full_n else None
    return {"grid": grid, "task": task, **key, "adapters": s["adapters"], "full": s["full"],
            "ratio_full": ratio, "verdict": verdict, "note": note}


def adapters_spread_claim(fractions: Mapping[str, Any] | None, budgets: Mapping[str, Any] | None,
                          args) -> dict[str, Any]:
    """9b: the adapters' sd over seeds against full fine-tuning's at every data_fraction cell
    (100% from the core grid) and every time_budget cell; majority rule."""
    methods = ("adapters", "full")
    cells = [_spread_cell(fractions, "data_fraction", t, {m: m for m in methods}, args.sd_factor, fraction=f)
             for t in FRACTION_TASKS for f in FRACTIONS]
    for task in BUDGET_TASKS:
        for epochs, label in BUDGETS:
            settings = {m: budget_setting(m, label) for m in methods}
            cells.append(_spread_cell(budgets, "time_budget", task, settings, args.sd_factor,
                                      **_budget_key(epochs, label)))
    return claim(
        "9b", "Adapters vary a lot across seeds, across data amounts and budgets", SOURCE,
        (f"As claim 6, at every cell of the data_fraction grid (train fractions "
         f"{', '.join(f'{f:g}' for f in FRACTIONS)}, the 100% cells from the core grid) and of the "
         f"time_budget grid, on MRPC, CoLA and STS-B: r = sd_adapters / sd_full over seeds of the main "
         f"dev metric. Per cell, with {len(SEEDS)} finished seeds of each: 'holds' if r ≥ "
         f"{args.sd_factor:g}, 'fails' if r ≤ 1, else 'inconclusive'; fewer seeds: 'inconclusive'; "
         f"none: 'missing'. {f_test_text()}"),
        MOST_RULE, cells, kind="sd_ratio", overall=overall_most)
