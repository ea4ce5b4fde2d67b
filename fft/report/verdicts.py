"""Verdicts from the grid tables: a method against full fine-tuning paired by seed (fft.stats), the
rules that turn a claim's cells into its overall verdict, and the claims about scores (3a-7c) and
the pooling comparison.

Verdicts per cell (a task, or a task and data fraction): 'holds', 'fails', 'inconclusive' (the
data do not decide it, e.g. an interval that straddles the margin, or too few seeds), 'missing'
(no finished run on one side, or no table). A missing cell is never filled in."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from fft import stats
from fft.report.tables import (
    CORE_TASKS,
    FRACTION_TASKS,
    FRACTIONS,
    INTERMEDIATE,
    POOLING_METHODS,
    SEEDS,
    STABLE_AT,
    find_row,
    seed_scores,
    summary,
)

HOLDS, FAILS, INCONCLUSIVE, MISSING = stats.HOLDS, stats.FAILS, stats.INCONCLUSIVE, "missing"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, MISSING)


def comparison(task: str, method_row: Mapping[str, Any] | None, base_row: Mapping[str, Any] | None,
               margin: float, confidence: float, fraction: float | None = None,
               superiority: bool = False, planned: int = len(SEEDS)) -> dict[str, Any]:
    """One cell: method - baseline paired by seed, its t interval and the verdict (equivalence
    within ±margin, or superiority with `superiority`)."""
    m, b = seed_scores(method_row), seed_scores(base_row)
    cell: dict[str, Any] = {"task": task, "fraction": fraction, "method": summary(m),
                            "baseline": summary(b), "diff": None, "note": ""}
    if not m or not b:
        side = "either" if not (m or b) else ("the method" if not m else "the baseline")
        cell.update(verdict=MISSING, note=f"no finished run of {side}")
        return cell
    d = stats.paired_difference(m, b, confidence)
    cell["diff"] = d
    if d["n"] == 0:
        cell.update(verdict=MISSING, note="no seed finished on both sides")
        return cell
    cell["verdict"] = (stats.better_verdict(d["low"], d["high"]) if superiority
                       else stats.verdict(d["low"], d["high"], margin))
    if d["n"] < 2:
        cell["note"] = "1 pair: no interval (inconclusive at this n)"
    elif cell["verdict"] == INCONCLUSIVE:
        need = stats.pairs_to_decide(d["mean"], d["sd"], None if superiority else margin, confidence)
        cell["pairs_to_decide"] = need
        at = f"n={d['n']} of {planned}" if d["n"] < planned else f"n={d['n']}"
        cell["note"] = f"inconclusive at {at}; " + (
            f"~{need} pairs would decide at this mean and sd" if need else "no n ≤ 100 would decide at this mean")
    return cell


def counts(verdicts: Iterable[str]) -> dict[str, int]:
    verdicts = list(verdicts)
    return {v: verdicts.count(v) for v in VERDICTS}


def overall_every(verdicts: Sequence[str]) -> str:
    """Every-cell rule: 'missing' if no cell has data; 'fails' if any cell fails; 'holds' if every
    planned cell holds; otherwise 'inconclusive' (some cells inconclusive or missing)."""
    if all(v == MISSING for v in verdicts):
        return MISSING
    if FAILS in verdicts:
        return FAILS
    return HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE


def overall_most(verdicts: Sequence[str]) -> str:
    """Majority rule: 'missing' if no cell has data; 'holds' / 'fails' if more than half of the
    planned cells hold / fail; otherwise 'inconclusive'."""
    if all(v == MISSING for v in verdicts):
        return MISSING
    half = len(verdicts) / 2
    if verdicts.count(HOLDS) > half:
        return HOLDS
    return FAILS if verdicts.count(FAILS) > half else INCONCLUSIVE


EVERY_RULE = "Overall verdict by the every-cell rule (see Protocol)."
MOST_RULE = "Overall verdict by the majority rule (see Protocol)."
RULES_TEXT = (
    "Overall verdict of a claim from its cells. Every-cell rule (claims about every task or data "
    "amount): 'holds' only if every planned cell holds; 'fails' if any cell fails; 'missing' if no "
    "cell has data; otherwise 'inconclusive' (some cells inconclusive or missing). No correction for "
    "testing several cells. Majority rule (the claims about seed-to-seed spread, 5b, 6 and 9b, where "
    "3-seed sds are noisy): 'holds' / 'fails' if more than half of the planned cells hold / fail; "
    "'missing' if no cell has data; otherwise 'inconclusive'.")


def claim(cid: str, title: str, source: str, criterion: str, rule: str, cells: list[dict[str, Any]],
          kind: str, overall: Callable[[Sequence[str]], str] = overall_every, **extra) -> dict[str, Any]:
    verdicts = [c["verdict"] for c in cells]
    return {"id": cid, "title": title, "source": source, "criterion": criterion, "rule": rule,
            "kind": kind, "verdict": overall(verdicts), "counts": counts(verdicts), "cells": cells,
            **extra}


def equivalence_text(method: str, what: str, args, grid: str = "core", unit: str = "task") -> str:
    return (f"{what}: `{method}` − `full` in the {grid} grid, the task's main metric on dev in % "
            f"points, paired by seed, with its {100 * args.confidence:g}% Student t interval. "
            f"Per {unit}: 'holds' if the interval lies within ±{args.margin:g} points, 'fails' if it "
            f"lies entirely outside (better or worse by more than the margin), else 'inconclusive' "
            f"(fft.stats.verdict); 'missing' if either side has no finished run.")


def core_comparison(cid, title, source, method, what, core, args) -> dict[str, Any]:
    cells = [comparison(t, find_row(core, t, method), find_row(core, t, "full"), args.margin,
                        args.confidence) for t in CORE_TASKS]
    return claim(cid, title, source, equivalence_text(method, what, args), EVERY_RULE, cells,
                 kind="comparison", method=method, baseline="full")


def _stable_cell(table, task: str) -> dict[str, Any]:
    b = seed_scores(find_row(table, task, "bitfit", STABLE_AT))
    f = seed_scores(find_row(table, task, "full", STABLE_AT))
    sb, sf = summary(b), summary(f)
    note = ""
    if not b or not f:
        verdict, note = MISSING, "no finished run of " + ("either" if not (b or f) else "bitfit" if not b else "full")
    elif sb["n"] < len(SEEDS) or sf["n"] < len(SEEDS):
        verdict, note = INCONCLUSIVE, f"n < {len(SEEDS)} (inconclusive at this n)"
    else:
        verdict = HOLDS if sb["sd"] <= sf["sd"] else FAILS
    return {"task": task, "fraction": STABLE_AT, "method": sb, "baseline": sf, "verdict": verdict,
            "note": note}


def methods_at(table, task: str, settings: Mapping[str, str], confidence: float,
               fraction: float | None = None, baseline: str = "full") -> dict[str, Any]:
    """{method: {'score': summary, 'vs_full': method − baseline paired by seed, or None}} for the
    methods' settings ({method: setting}) at one cell; information beside a claim, no verdict."""
    base = seed_scores(find_row(table, task, settings[baseline], fraction)) if baseline in settings else {}
    out = {}
    for method, setting in settings.items():
        scores = seed_scores(find_row(table, task, setting, fraction))
        vs = (stats.paired_difference(scores, base, confidence)
              if method != baseline and scores and base else None)
        out[method] = {"score": summary(scores), "vs_full": vs}
    return out


OTHER_FRACTION_METHODS = ("adapters", "lora", "learners")


def fraction_others(table, fractions: Sequence[float], confidence: float) -> list[dict[str, Any]]:
    """Adapters, LoRA and learners at the data_fraction cells, against full (information)."""
    settings = {m: m for m in ("full", *OTHER_FRACTION_METHODS)}
    return [{"task": t, "fraction": f, "methods": methods_at(table, t, settings, confidence, f)}
            for t in FRACTION_TASKS for f in fractions]


def data_fraction_claims(table, args) -> list[dict[str, Any]]:
    def cell(task, fraction, superiority=False):
        return comparison(task, find_row(table, task, "bitfit", fraction),
                          find_row(table, task, "full", fraction), args.margin, args.confidence,
                          fraction=fraction, superiority=superiority)

    matches = claim(
        "5a", "BitFit matches full fine-tuning at every data amount", "Doering et al. 2024",
        equivalence_text("bitfit", f"At each train fraction {', '.join(f'{f:g}' for f in FRACTIONS)} "
                         f"of MRPC, CoLA and STS-B", args, grid="data_fraction",
                         unit="cell (task and fraction)"),
        EVERY_RULE, [cell(t, f) for t in FRACTION_TASKS for f in FRACTIONS],
        kind="comparison", method="bitfit", baseline="full",
        others=fraction_others(table, FRACTIONS, args.confidence))
    stable = claim(
        "5b", "BitFit is stable with 30% of the data", "Doering et al. 2024",
        (f"At train fraction {STABLE_AT:g} (data_fraction grid), the sd over seeds of BitFit's main dev "
         f"metric is at most that of full fine-tuning (sd_bitfit ≤ sd_full). Per task: 'holds' / "
         f"'fails' by that comparison with {len(SEEDS)} finished seeds on each side, 'inconclusive' "
         f"with fewer, 'missing' with none. Weak: sds from 3 seeds each differ by chance by large "
         f"factors (see claim 6)."),
        MOST_RULE, [_stable_cell(table, t) for t in FRACTION_TASKS], kind="spread",
        overall=overall_most, method="bitfit", baseline="full")
    beats = claim(
        "5c", "BitFit beats full fine-tuning at intermediate data amounts", "Doering et al. 2024",
        (f"At train fractions {' and '.join(f'{f:g}' for f in INTERMEDIATE)} of MRPC, CoLA and STS-B: "
         f"`bitfit` − `full`, paired by seed, {100 * args.confidence:g}% t interval. Per cell: 'holds' "
         f"if the interval lies above 0, 'fails' if it lies at or below 0 (high ≤ 0), else "
         f"'inconclusive' (fft.stats.better_verdict); 'missing' if either side has no finished run."),
        EVERY_RULE, [cell(t, f, superiority=True) for t in FRACTION_TASKS for f in INTERMEDIATE],
        kind="comparison", method="bitfit", baseline="full",
        others=fraction_others(table, INTERMEDIATE, args.confidence))
    return [matches, stable, beats]


def sd_ratio(a: float, b: float) -> float:
    """sd a / sd b; inf when only b is 0, 1 when both are."""
    return a / b if b > 0 else (math.inf if a > 0 else 1.0)


def sd_ratio_check(s: Mapping[str, Mapping[str, Any]], sd_factor: float) -> tuple[str, str]:
    """(verdict, note) of 'the first summary's sd is at least sd_factor x each other's' (claims 6,
    9b): 'missing' if a side has no finished run, 'inconclusive' with fewer than the planned seeds
    on a side; else 'holds' if the smallest ratio is >= sd_factor, 'fails' if it is <= 1."""
    n = len(SEEDS)
    absent = [k for k, v in s.items() if v["n"] == 0]
    if absent:
        return MISSING, "no finished run of " + ", ".join(absent)
    if any(v["n"] < n for v in s.values()):
        return INCONCLUSIVE, f"n < {n} (inconclusive at this n)"
    first, *others = s.values()
    worst = min(sd_ratio(first["sd"], o["sd"]) for o in others)
    return (HOLDS if worst >= sd_factor else FAILS if worst <= 1.0 else INCONCLUSIVE), ""


def f_test_text() -> str:
    """What n seeds per side can show about two variances (claims 6, 9b)."""
    from scipy import stats as scipy_stats

    n = len(SEEDS)
    f_crit = float(scipy_stats.f.ppf(0.975, n - 1, n - 1))
    return (f"n = {n} is weak: two variances from {n} seeds each differ significantly (F test, "
            f"two-sided 5%) only when their ratio exceeds F(0.975; {n - 1}, {n - 1}) = {f_crit:.1f}, "
            f"i.e. an sd ratio above {math.sqrt(f_crit):.2f}.")


def _adapters_cell(core, task: str, sd_factor: float) -> dict[str, Any]:
    s = {k: summary(seed_scores(find_row(core, task, k))) for k in ("adapters", "full", "bitfit")}
    cell = {"task": task, "adapters": s["adapters"], "full": s["full"], "bitfit": s["bitfit"],
            "ratio_full": None, "ratio_bitfit": None}
    cell["verdict"], cell["note"] = sd_ratio_check(s, sd_factor)
    if all(v["n"] >= len(SEEDS) for v in s.values()):  # Ratios only where the verdict reads them.
        cell["ratio_full"] = sd_ratio(s["adapters"]["sd"], s["full"]["sd"])
        cell["ratio_bitfit"] = sd_ratio(s["adapters"]["sd"], s["bitfit"]["sd"])
    return cell


def adapters_claim(core, args) -> dict[str, Any]:
    n = len(SEEDS)
    return claim(
        "6", "Adapters vary a lot across seeds", "Doering et al. 2024",
        (f"In the core grid, the sd over seeds of the adapters' main dev metric against those of full "
         f"fine-tuning and BitFit: r = sd_adapters / max(sd_full, sd_bitfit). Per task, with {n} "
         f"finished seeds of each: 'holds' if r ≥ {args.sd_factor:g} (adapters' sd at least "
         f"{args.sd_factor:g}x both others), 'fails' if r ≤ 1 (not above both), else 'inconclusive'; "
         f"fewer seeds: 'inconclusive'; none: 'missing'. {f_test_text()}"),
        MOST_RULE, [_adapters_cell(core, t, args.sd_factor) for t in CORE_TASKS], kind="adapters_sd",
        overall=overall_most)


def pooling_section(table) -> dict[str, Any]:
    rows = []
    tasks = list(dict.fromkeys(r["task"] for r in table["rows"])) if table else list(CORE_TASKS)
    for method in POOLING_METHODS:
        for task in tasks:
            cls = summary(seed_scores(find_row(table, task, f"{method}-cls")))
            mean = summary(seed_scores(find_row(table, task, f"{method}-mean")))
            if cls["n"] and mean["n"]:
                diff = mean["mean"] - cls["mean"]
                winner = "mean" if diff > 0 else "cls" if diff < 0 else "tie"
            else:
                diff, winner = None, MISSING
            rows.append({"method": method, "task": task, "cls": cls, "mean": mean, "diff": diff,
                         "winner": winner})
    wins = {m: {w: sum(1 for r in rows if r["method"] == m and r["winner"] == w)
                for w in ("cls", "mean", "tie", MISSING)} for m in POOLING_METHODS}
    return {"present": table is not None, "rows": rows, "wins": wins}
