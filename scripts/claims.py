"""Each claim of the three papers behind fft (/work/shared/PAPERS.md) as a criterion that can be
tested on the packaged all-MiniLM-L6-v2, its evidence from the grid tables, and a verdict.

  python scripts/claims.py [--grids results/grids] [--out results/claims] [--margin 2.0]
                           [--no-distances]

Reads <grids>/core.json (configs/grids/core.py), <grids>/data_fraction.json
(configs/grids/data_fraction.py) and <grids>/pooling.json (configs/grids/pooling.py) where they
exist; measures how far the core grid's full fine-tuning runs moved from their step-0 weights
(fft.analyze.run_params + fft.distances.grouped, cached by workdir in <out>_distances.json);
writes <out>.md and <out>.json.

Verdicts per cell (a task, or a task and data fraction): 'holds', 'fails', 'inconclusive' (the
data do not decide it, e.g. an interval that straddles the margin, or too few seeds), 'missing'
(no finished run on one side, or no table). A missing cell is never filled in: the claim's overall
verdict says so. Scores are the task's main metric in %, from the per-seed values of the tables'
`eval` entries; method and baseline are paired by seed (fft.stats.paired_difference).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fft import stats

HOLDS, FAILS, INCONCLUSIVE, MISSING = stats.HOLDS, stats.FAILS, stats.INCONCLUSIVE, "missing"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, MISSING)

# The planned cells (kept in step with the grid files, so that a task that never ran still shows).
CORE_TASKS = ("cola", "stsb", "rte", "mrpc", "sst2")  # configs/grids/core.py
CORE_SETTINGS = ("full", "bitfit", "top3", "critical2", "supermask", "lora", "adapters", "head")
FRACTION_TASKS = ("mrpc", "cola", "stsb")  # configs/grids/data_fraction.py
FRACTIONS = (0.1, 0.3, 0.5, 1.0)
INTERMEDIATE = (0.3, 0.5)
STABLE_AT = 0.3
SEEDS = (0, 1, 2)  # both grids
POOLING_METHODS = ("head", "bitfit", "supermask")  # configs/grids/pooling.py
LAYER = re.compile(r"layer_\d+")

DEFAULTS = {"margin": 2.0, "close_rel_l1": 0.05, "close_angle": 5.0, "layer_ratio": 2.0,
            "sd_factor": 2.0, "confidence": 0.95}


# ---------------------------------------------------------------------------------------------
# Tables and scores.


def repo_relative(path: pathlib.Path) -> str:
    path = pathlib.Path(path).absolute()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def load_table(path: pathlib.Path) -> dict[str, Any] | None:
    """A grid's results table (fft.sweep.tables), or None when it does not exist yet."""
    return json.loads(path.read_text()) if path.is_file() else None


def find_row(table: Mapping[str, Any] | None, task: str, setting: str,
             fraction: float | None = None) -> dict[str, Any] | None:
    """The table's row for (task, setting[, fraction]); None when absent. Several rows (several
    learning rates) are an error: the claims compare one chosen setting per method."""
    if table is None:
        return None
    rows = [r for r in table["rows"] if r["task"] == task and r["setting"] == setting
            and (fraction is None or math.isclose(float(r["fraction"]), fraction))]
    if len(rows) > 1:
        raise ValueError(f"grid {table.get('grid')!r}: {len(rows)} rows for {task}/{setting}"
                         f"{'' if fraction is None else f'/frac{fraction:g}'} (lrs "
                         f"{[r['lr'] for r in rows]}); expected one chosen setting")
    return rows[0] if rows else None


def seed_scores(row: Mapping[str, Any] | None) -> dict[int, float]:
    """{seed: main metric in %} of the row's finished runs (runs without the metric left out)."""
    if not row:
        return {}
    values = (((row.get("eval") or {}).get(row["split"]) or {}).get(row["metric"]) or {}).get("values") or []
    return {int(s): 100.0 * float(v) for s, v in zip(row.get("seeds") or [], values) if v is not None}


def summary(by_seed: Mapping[int, float]) -> dict[str, Any]:
    mean, sd = stats.mean_sd(by_seed.values())
    return {"n": len(by_seed), "mean": mean, "sd": sd, "seeds": sorted(by_seed),
            "values": [by_seed[s] for s in sorted(by_seed)]}


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
    elif cell["verdict"] == INCONCLUSIVE and d["n"] < planned:
        cell["note"] = f"inconclusive at n={d['n']} of {planned}"
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
    "testing several cells. Majority rule (the two claims about seed-to-seed spread, 5b and 6, where "
    "3-seed sds are noisy): 'holds' / 'fails' if more than half of the planned cells hold / fail; "
    "'missing' if no cell has data; otherwise 'inconclusive'.")


def claim(cid: str, title: str, source: str, criterion: str, rule: str, cells: list[dict[str, Any]],
          kind: str, overall: Callable[[Sequence[str]], str] = overall_every, **extra) -> dict[str, Any]:
    verdicts = [c["verdict"] for c in cells]
    return {"id": cid, "title": title, "source": source, "criterion": criterion, "rule": rule,
            "kind": kind, "verdict": overall(verdicts), "counts": counts(verdicts), "cells": cells,
            **extra}


# ---------------------------------------------------------------------------------------------
# Parameter distances of the full fine-tuning runs.


def compute_run_distances(workdir: pathlib.Path) -> dict[str, Any]:
    """{'step', 'groups': {group: {measure: float}}} of a run's latest checkpoint against its
    step-0 weights (pretrained encoder + seeded head), groups as fft.distances.DEFAULT_LAYER_GROUPS."""
    from fft import analyze, distances  # JAX and the models: only when a run is read.

    initial, final, step = analyze.run_params(workdir)
    table = distances.grouped(initial, final, distances.DEFAULT_LAYER_GROUPS)
    return {"step": int(step), "groups": distances.to_jsonable(table)}


def _resolve(workdir: str) -> pathlib.Path:
    path = pathlib.Path(workdir)
    return path if path.is_absolute() else REPO / path


def _final_mtime(workdir: str) -> float | None:
    final = _resolve(workdir) / "final_metrics.json"
    return final.stat().st_mtime if final.is_file() else None


class DistanceStore:
    """Distances by workdir: from the cache file when it is current (the run's final_metrics.json
    unchanged, or the run no longer on disk), else computed (unless `compute` is False) and cached."""

    def __init__(self, path: pathlib.Path, compute: bool):
        self.path, self.compute = path, compute
        self.cache: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
        self.errors: dict[str, str] = {}
        self.skipped: list[str] = []
        self.computed = 0

    def get(self, workdir: str) -> dict[str, Any] | None:
        mtime = _final_mtime(workdir)
        entry = self.cache.get(workdir)
        if entry is not None and (mtime is None or entry.get("final_mtime") == mtime):
            return entry
        if not self.compute:
            self.skipped.append(workdir)
            return None
        print(f"claims: distances of {workdir} ...", file=sys.stderr, flush=True)
        try:
            entry = compute_run_distances(_resolve(workdir))
        except Exception as e:  # noqa: BLE001 - a broken run is reported, not fatal to the report.
            self.errors[workdir] = f"{type(e).__name__}: {e}"
            print(f"claims: {workdir}: {self.errors[workdir]}", file=sys.stderr)
            return None
        entry["final_mtime"] = mtime
        self.cache[workdir] = entry
        self.computed += 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.cache, indent=1, sort_keys=True) + "\n")
        return entry


def _measure(groups: Mapping[str, Any], group: str, measure: str) -> float:
    value = (groups.get(group) or {}).get(measure)
    return math.nan if value is None else float(value)


def layer_spread(groups: Mapping[str, Any]) -> tuple[float, str | None]:
    """(max / min of rel_l1 over the encoder layers, the most-moved layer)."""
    layers = {g: _measure(groups, g, "rel_l1") for g in groups if LAYER.fullmatch(g)}
    layers = {g: v for g, v in layers.items() if math.isfinite(v)}
    if not layers:
        return math.nan, None
    low, high = min(layers.values()), max(layers.values())
    ratio = high / low if low > 0 else (math.inf if high > 0 else math.nan)
    return ratio, max(layers, key=layers.get)


def closeness_cell(task: str, by_seed: Mapping[int, Mapping[str, Any]], max_l1: float,
                   max_angle: float, note: str = "") -> dict[str, Any]:
    rel = {s: _measure(g, "total", "rel_l1") for s, g in by_seed.items()}
    angle = {s: math.degrees(_measure(g, "total", "angle")) for s, g in by_seed.items()}
    passes = [rel[s] < max_l1 and angle[s] < max_angle for s in by_seed]
    if not passes:
        verdict = MISSING
    else:
        verdict = HOLDS if all(passes) else FAILS if not any(passes) else INCONCLUSIVE
    return {"task": task, "n": len(by_seed), "seeds": sorted(by_seed), "rel_l1": summary(rel),
            "angle_deg": summary(angle), "max_rel_l1": max(rel.values(), default=None),
            "max_angle_deg": max(angle.values(), default=None), "verdict": verdict,
            "note": note or ("" if by_seed else "no full fine-tuning run measured")}


def _kruskal_p(by_seed: Mapping[int, Mapping[str, Any]]) -> float | None:
    """Kruskal–Wallis p over the encoder layers, the seeds as replicates (information only)."""
    if len(by_seed) < 2:
        return None
    layers = sorted({g for groups in by_seed.values() for g in groups if LAYER.fullmatch(g)})
    samples = [[_measure(groups, g, "rel_l1") for groups in by_seed.values()] for g in layers]
    if len(samples) < 2:
        return None
    from scipy import stats as scipy_stats

    try:
        return float(scipy_stats.kruskal(*samples).pvalue)
    except ValueError:  # every value equal
        return None


def layer_cell(task: str, by_seed: Mapping[int, Mapping[str, Any]], min_ratio: float,
               note: str = "") -> dict[str, Any]:
    spread = {s: layer_spread(g) for s, g in by_seed.items()}
    ratios = {s: r for s, (r, _) in spread.items()}
    above = [r > min_ratio for r in ratios.values()]
    if not above:
        verdict = MISSING
    elif len(above) < 2:
        verdict, note = INCONCLUSIVE, note or "1 seed: consistency across seeds needs 2 or more"
    else:
        verdict = HOLDS if all(above) else FAILS if not any(above) else INCONCLUSIVE
    return {"task": task, "n": len(by_seed), "seeds": sorted(by_seed), "ratio": summary(ratios),
            "ratios": [ratios[s] for s in sorted(ratios)],
            "most_moved": [spread[s][1] for s in sorted(spread)], "kruskal_p": _kruskal_p(by_seed),
            "verdict": verdict, "note": note or ("" if by_seed else "no full fine-tuning run measured")}


def full_run_distances(core: Mapping[str, Any] | None, store: DistanceStore | None
                       ) -> dict[str, dict[int, dict[str, Any]]]:
    """{task: {seed: groups}} for the core grid's finished full fine-tuning runs."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for task in CORE_TASKS:
        row = find_row(core, task, "full")
        out[task] = {}
        if row is None or store is None:
            continue
        for seed, workdir in zip(row.get("seeds") or [], row.get("workdirs") or []):
            entry = store.get(workdir)
            if entry is not None:
                out[task][int(seed)] = entry["groups"]
    return out


def fallback_distances(folder: pathlib.Path, tasks: Iterable[str]) -> dict[str, dict[str, Any]]:
    """{task: groups} from the earlier single full fine-tuning runs (scripts/distances_report.py)."""
    out = {}
    for task in tasks:
        path = folder / task / "distances.json"
        if path.is_file():
            out[task] = json.loads(path.read_text())["groups"]
    return out


# ---------------------------------------------------------------------------------------------
# The claims.


def distance_claims(core, store, fallback_dir: pathlib.Path, args) -> list[dict[str, Any]]:
    runs = full_run_distances(core, store)
    without = [t for t in CORE_TASKS if not runs[t]]
    fallback = fallback_distances(fallback_dir, without)
    fb_note = (f"the earlier single full fine-tuning run behind "
               f"{repo_relative(fallback_dir)}/<task>/distances.json (its own settings, not the core "
               f"grid's); shown for tasks the core grid has not measured, never counted in the verdict")

    c1 = claim(
        "1", "Fine-tuned models are close to the pretrained one in parameter space",
        "Radiya-Dixit & Wang 2020",
        (f"For every full fine-tuning run of the core grid, the distance of the final weights θ to the "
         f"run's step-0 weights θ0 (pretrained encoder + seeded head) over all parameters (the head "
         f"included; it is < 0.01% of them) is small: relative L1 distance "
         f"rel_l1(total) = Σ|θ − θ0| / Σ|θ0| < {args.close_rel_l1:g} and angle(θ, θ0) < "
         f"{args.close_angle:g}°. Per task: 'holds' if every measured seed meets both bounds, 'fails' "
         f"if no seed does, 'inconclusive' if some do, 'missing' if no run was measured."),
        EVERY_RULE,
        [closeness_cell(t, runs[t], args.close_rel_l1, args.close_angle) for t in CORE_TASKS],
        kind="closeness",
        fallback=[closeness_cell(t, {0: g}, args.close_rel_l1, args.close_angle, note="fallback, 1 run")
                  for t, g in fallback.items()],
        fallback_note=fb_note)
    c2 = claim(
        "2", "Closeness differs from layer to layer", "Radiya-Dixit & Wang 2020",
        (f"For every full fine-tuning run of the core grid, the ratio max/min of the relative L1 "
         f"distance over the 6 encoder layers (layer_0 … layer_5; embeddings, pooler and head left "
         f"out) exceeds {args.layer_ratio:g}. Per task: 'holds' if it does on every measured seed "
         f"(2 or more seeds), 'fails' if on none, 'inconclusive' if on some or with 1 seed, 'missing' "
         f"if no run was measured. Shown for information, no verdict: the most-moved layer per seed "
         f"and a Kruskal–Wallis p-value over the layers with the seeds as replicates."),
        EVERY_RULE,
        [layer_cell(t, runs[t], args.layer_ratio) for t in CORE_TASKS],
        kind="layers",
        fallback=[layer_cell(t, {0: g}, args.layer_ratio, note="fallback, 1 run")
                  for t, g in fallback.items()],
        fallback_note=fb_note)
    return [c1, c2]


def _equivalence_text(method: str, what: str, args, grid: str = "core", unit: str = "task") -> str:
    return (f"{what}: `{method}` − `full` in the {grid} grid, the task's main metric on dev in % "
            f"points, paired by seed, with its {100 * args.confidence:g}% Student t interval. "
            f"Per {unit}: 'holds' if the interval lies within ±{args.margin:g} points, 'fails' if it "
            f"lies entirely outside (better or worse by more than the margin), else 'inconclusive' "
            f"(fft.stats.verdict); 'missing' if either side has no finished run.")


def core_comparison(cid, title, source, method, what, core, args) -> dict[str, Any]:
    cells = [comparison(t, find_row(core, t, method), find_row(core, t, "full"), args.margin,
                        args.confidence) for t in CORE_TASKS]
    return claim(cid, title, source, _equivalence_text(method, what, args), EVERY_RULE, cells,
                 kind="comparison", method=method, baseline="full")


def data_fraction_claims(table, args) -> list[dict[str, Any]]:
    def cell(task, fraction, superiority=False):
        c = comparison(task, find_row(table, task, "bitfit", fraction), find_row(table, task, "full", fraction),
                       args.margin, args.confidence, fraction=fraction, superiority=superiority)
        return c

    matches = claim(
        "5a", "BitFit matches full fine-tuning at every data amount", "Doering et al. 2024",
        _equivalence_text("bitfit", f"At each train fraction {', '.join(f'{f:g}' for f in FRACTIONS)} "
                          f"of MRPC, CoLA and STS-B", args, grid="data_fraction",
                          unit="cell (task and fraction)"),
        EVERY_RULE, [cell(t, f) for t in FRACTION_TASKS for f in FRACTIONS],
        kind="comparison", method="bitfit", baseline="full")

    stable_cells = []
    for task in FRACTION_TASKS:
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
        stable_cells.append({"task": task, "fraction": STABLE_AT, "method": sb, "baseline": sf,
                             "verdict": verdict, "note": note})
    stable = claim(
        "5b", "BitFit is stable with 30% of the data", "Doering et al. 2024",
        (f"At train fraction {STABLE_AT:g} (data_fraction grid), the sd over seeds of BitFit's main dev "
         f"metric is at most that of full fine-tuning (sd_bitfit ≤ sd_full). Per task: 'holds' / "
         f"'fails' by that comparison with {len(SEEDS)} finished seeds on each side, 'inconclusive' "
         f"with fewer, 'missing' with none. Weak: sds from 3 seeds each differ by chance by large "
         f"factors (see claim 6)."),
        MOST_RULE, stable_cells, kind="spread", overall=overall_most, method="bitfit", baseline="full")

    beats = claim(
        "5c", "BitFit beats full fine-tuning at intermediate data amounts", "Doering et al. 2024",
        (f"At train fractions {' and '.join(f'{f:g}' for f in INTERMEDIATE)} of MRPC, CoLA and STS-B: "
         f"`bitfit` − `full`, paired by seed, {100 * args.confidence:g}% t interval. Per cell: 'holds' "
         f"if the interval lies above 0, 'fails' if it lies at or below 0 (high ≤ 0), else "
         f"'inconclusive' (fft.stats.better_verdict); 'missing' if either side has no finished run."),
        EVERY_RULE, [cell(t, f, superiority=True) for t in FRACTION_TASKS for f in INTERMEDIATE],
        kind="comparison", method="bitfit", baseline="full")
    return [matches, stable, beats]


def adapters_claim(core, args) -> dict[str, Any]:
    from scipy import stats as scipy_stats

    n = len(SEEDS)
    f_crit = float(scipy_stats.f.ppf(0.975, n - 1, n - 1))
    cells = []
    for task in CORE_TASKS:
        s = {k: summary(seed_scores(find_row(core, task, k))) for k in ("adapters", "full", "bitfit")}
        cell = {"task": task, "adapters": s["adapters"], "full": s["full"], "bitfit": s["bitfit"],
                "ratio_full": None, "ratio_bitfit": None, "note": ""}
        absent = [k for k, v in s.items() if v["n"] == 0]
        if absent:
            cell.update(verdict=MISSING, note="no finished run of " + ", ".join(absent))
        elif any(v["n"] < n for v in s.values()):
            cell.update(verdict=INCONCLUSIVE, note=f"n < {n} (inconclusive at this n)")
        else:
            sa, sf, sb = s["adapters"]["sd"], s["full"]["sd"], s["bitfit"]["sd"]
            ratio = lambda a, b: a / b if b > 0 else (math.inf if a > 0 else 1.0)
            cell["ratio_full"], cell["ratio_bitfit"] = ratio(sa, sf), ratio(sa, sb)
            worst = min(cell["ratio_full"], cell["ratio_bitfit"])
            cell["verdict"] = HOLDS if worst >= args.sd_factor else FAILS if worst <= 1.0 else INCONCLUSIVE
        cells.append(cell)
    return claim(
        "6", "Adapters vary a lot across seeds", "Doering et al. 2024",
        (f"In the core grid, the sd over seeds of the adapters' main dev metric against those of full "
         f"fine-tuning and BitFit: r = sd_adapters / max(sd_full, sd_bitfit). Per task, with {n} "
         f"finished seeds of each: 'holds' if r ≥ {args.sd_factor:g} (adapters' sd at least "
         f"{args.sd_factor:g}x both others), 'fails' if r ≤ 1 (not above both), else 'inconclusive'; "
         f"fewer seeds: 'inconclusive'; none: 'missing'. n = {n} is weak: two variances from {n} "
         f"seeds each differ significantly (F test, two-sided 5%) only when their ratio exceeds "
         f"F(0.975; {n - 1}, {n - 1}) = {f_crit:.1f}, i.e. an sd ratio above {math.sqrt(f_crit):.2f}."),
        MOST_RULE, cells, kind="adapters_sd", overall=overall_most)


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


# ---------------------------------------------------------------------------------------------
# Protocol: seeds, selection, compute.


def compute_used(tables: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """Finished runs and their training seconds (the tables' mean per cell x its finished runs)."""
    per_grid = {}
    for name, table in tables.items():
        if table is None:
            continue
        runs = sum(int(r["n"]) for r in table["rows"])
        planned = sum(int(r["planned"]) for r in table["rows"])
        seconds = sum(float(r["train_seconds"]) * int(r["n"]) for r in table["rows"]
                      if r.get("train_seconds") is not None and r["n"])
        per_grid[name] = {"runs": runs, "planned": planned, "train_seconds": seconds}
    return {"grids": per_grid, "runs": sum(g["runs"] for g in per_grid.values()),
            "train_seconds": sum(g["train_seconds"] for g in per_grid.values())}


def _t_quantile(confidence: float, df: int) -> float:
    from scipy import stats as scipy_stats

    return float(scipy_stats.t.ppf((1 + confidence) / 2, df))


def selection_info(path: pathlib.Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    methods = json.loads(path.read_text()).get("methods", {})
    return {m: {k: c.get(k) for k in ("setting", "lr", "options", "score")} for m, c in methods.items()}


# ---------------------------------------------------------------------------------------------
# Markdown.


def _num(x: float | None, digits: int = 2, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "∞"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _sig(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return _num(x)
    return f"{x:.{digits}g}"


def score_text(s: Mapping[str, Any], digits: int = 2, fmt: Callable | None = None) -> str:
    if not s["n"]:
        return "missing"
    f = fmt or (lambda v: _num(v, digits))
    return f(s["mean"]) + ("" if s["sd"] is None else f" ± {f(s['sd'])}") + f" (n={s['n']})"


def diff_text(d: Mapping[str, Any] | None) -> str:
    if d is None or not d["n"]:
        return "—"
    if d["low"] is None:
        return f"{_num(d['mean'], sign=True)} (no interval)"
    return f"{_num(d['mean'], sign=True)} [{_num(d['low'], sign=True)}, {_num(d['high'], sign=True)}]"


def _verdict_text(cell: Mapping[str, Any]) -> str:
    v = f"**{cell['verdict']}**"
    return v + (f" ({cell['note']})" if cell.get("note") else "")


def _frac(cell: Mapping[str, Any]) -> str:
    return "" if cell.get("fraction") is None else f" | {cell['fraction']:g}"


def comparison_table(c: Mapping[str, Any]) -> list[str]:
    has_frac = any(cell.get("fraction") is not None for cell in c["cells"])
    head = "| task" + (" | fraction" if has_frac else "") + f" | pairs | {c['baseline']} | {c['method']} | "
    head += f"{c['method']} − {c['baseline']} [95% CI] | verdict |"
    lines = [head, "|---" * (6 + has_frac) + "|"]
    for cell in c["cells"]:
        pairs = cell["diff"]["n"] if cell["diff"] else 0
        lines.append(f"| {cell['task']}{_frac(cell)} | {pairs} | {score_text(cell['baseline'])} | "
                     f"{score_text(cell['method'])} | {diff_text(cell['diff'])} | {_verdict_text(cell)} |")
    return lines


def closeness_table(cells: Sequence[Mapping[str, Any]], args) -> list[str]:
    lines = ["| task | n | rel_l1(total) | max rel_l1 | angle (°) | max angle (°) | verdict |",
             "|---|---|---|---|---|---|---|"]
    sig = lambda v: _sig(v, 3)
    for cell in cells:
        lines.append(f"| {cell['task']} | {cell['n']} | {score_text(cell['rel_l1'], fmt=sig)} | "
                     f"{sig(cell['max_rel_l1'])} | {score_text(cell['angle_deg'], fmt=sig)} | "
                     f"{sig(cell['max_angle_deg'])} | {_verdict_text(cell)} |")
    return lines


def layer_table(cells: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = [("| task | n | max/min layer rel_l1 | per seed | most-moved layer per seed | "
             "Kruskal–Wallis p (info) | verdict |"), "|---|---|---|---|---|---|---|"]
    for cell in cells:
        per_seed = ", ".join(_num(r, 3) for r in cell["ratios"]) or "—"
        moved = ", ".join(m or "—" for m in cell["most_moved"]) or "—"
        lines.append(f"| {cell['task']} | {cell['n']} | {score_text(cell['ratio'], 3)} | {per_seed} | "
                     f"{moved} | {_sig(cell['kruskal_p'], 2)} | {_verdict_text(cell)} |")
    return lines


def spread_table(c: Mapping[str, Any]) -> list[str]:
    lines = ["| task | fraction | full: mean ± sd | bitfit: mean ± sd | sd bitfit ≤ sd full? | verdict |",
             "|---|---|---|---|---|---|"]
    for cell in c["cells"]:
        b, f = cell["method"], cell["baseline"]
        compare = "—" if b["sd"] is None or f["sd"] is None else f"{b['sd']:.2f} vs {f['sd']:.2f}"
        lines.append(f"| {cell['task']} | {cell['fraction']:g} | {score_text(f)} | {score_text(b)} | "
                     f"{compare} | {_verdict_text(cell)} |")
    return lines


def adapters_table(c: Mapping[str, Any]) -> list[str]:
    lines = [("| task | full: mean ± sd | bitfit: mean ± sd | adapters: mean ± sd | "
             "sd ratio adapters/full | sd ratio adapters/bitfit | verdict |"), "|---|---|---|---|---|---|---|"]
    for cell in c["cells"]:
        lines.append(f"| {cell['task']} | {score_text(cell['full'])} | {score_text(cell['bitfit'])} | "
                     f"{score_text(cell['adapters'])} | {_num(cell['ratio_full'])} | "
                     f"{_num(cell['ratio_bitfit'])} | {_verdict_text(cell)} |")
    return lines


def pooling_lines(p: Mapping[str, Any], path: str) -> list[str]:
    lines = ["## Pooling: [CLS] through the pooler vs the mean of the tokens", ""]
    if not p["present"]:
        return lines + [f"`{path}` does not exist yet: **missing**.", ""]
    lines += [(f"From `{path}` (configs/grids/pooling.py): head, BitFit and supermask with each pooling, "
               "one seed, fixed settings (no selection), dev main metric in %. One seed: no verdict, "
               "only which pooling scored higher."), "",
              "| method | task | cls | mean | mean − cls | higher |", "|---|---|---|---|---|---|"]
    for r in p["rows"]:
        lines.append(f"| {r['method']} | {r['task']} | {score_text(r['cls'])} | {score_text(r['mean'])} | "
                     f"{_num(r['diff'], sign=True)} | {r['winner']} |")
    lines += ["", "| method | cls higher | mean higher | tie | missing |", "|---|---|---|---|---|"]
    for m, w in p["wins"].items():
        lines.append(f"| {m} | {w['cls']} | {w['mean']} | {w['tie']} | {w[MISSING]} |")
    return lines + [""]


def _selection_text(selection: Mapping[str, Any]) -> str:
    parts = []
    for method, c in selection.items():
        if c.get("setting") is None:
            parts.append(f"{method} not chosen")
        else:
            score = "" if c.get("score") is None else f", validation {c['score']:.2f}"
            parts.append(f"{c['setting']} lr {c['lr']:g}{score}")
    return "; ".join(parts) or "no methods"


def _counts_text(k: Mapping[str, int]) -> str:
    return ", ".join(f"{v} {name}" for name, v in k.items() if v) or "no cells"


def markdown(doc: Mapping[str, Any], args) -> str:
    p = doc["protocol"]
    comp = p["compute"]
    lines = [
        "# The papers' claims, tested on all-MiniLM-L6-v2",
        "",
        (f"Regenerate: `{p['command']}`. Claims from /work/shared/PAPERS.md; per-cell numbers also in "
        f"`{p['json']}`."),
        "",
        "## Protocol",
        "",
        ("- Model: the packaged all-MiniLM-L6-v2 (6 layers, 384 wide), GLUE tasks; runs from the grids "
        "`core` (configs/grids/core.py) and `data_fraction` (configs/grids/data_fraction.py)."),
        "- Tables: " + "; ".join(f"`{name}`: {'`' + t['path'] + '`' if t['present'] else '**missing** (`' + t['path'] + '` does not exist yet)'}"
                                   for name, t in p["tables"].items()) + ".",
        (f"- Seeds: {', '.join(map(str, SEEDS))} per cell as planned; finished runs are paired by seed "
        f"(method − full fine-tuning, same seed and, in data_fraction, the same data subset)."),
        "- Hyperparameters: chosen on held-out validation data (90/10 split of train; dev never read): "
        + (f"`{p['selection_md']}` (`{p['selection_path']}`): {_selection_text(p['selection'])}."
           if p["selection"] else f"`{p['selection_path']}` is not present yet (selection not run)."),
        (f"- Scores: the task's main metric on {p['splits']} in % (MRPC, STS-B: `combined`); "
        f"differences in % points with {100 * args.confidence:g}% Student t intervals over the paired "
        f"seeds (n = 3: mean ± {p['t3']:.2f} × sd/√3, i.e. ± {p['t3'] / math.sqrt(3):.2f} sd). SST-2 "
        f"runs train 1 epoch on a 20% subset (core grid)."),
        (f"- Equivalence margin: **±{args.margin:g} points** (`--margin`). A method 'matches' full "
        f"fine-tuning when the whole interval of the difference lies within it (two one-sided tests "
        f"at level 0.025 each)."),
        (f"- Distance bounds: rel_l1 < {args.close_rel_l1:g}, angle < {args.close_angle:g}° "
        f"(`--close-rel-l1`, `--close-angle`); layer spread: max/min > {args.layer_ratio:g} "
        f"(`--layer-ratio`); adapters' sd factor {args.sd_factor:g} (`--sd-factor`). Distances: "
        f"{p['distances']}."),
        f"- Compute behind this report: {comp['runs']} finished runs, {comp['train_seconds']:.0f} s of "
        f"training in all (" + ("; ".join(f"{g}: {v['runs']}/{v['planned']} runs, {v['train_seconds']:.0f} s"
                                           for g, v in comp["grids"].items()) or "no table") +
        "; evaluation and compilation not counted).",
        ("- Verdicts: 'holds', 'fails', 'inconclusive' (the data do not decide), 'missing' (no "
        "finished run on a side, or no table). Missing data is never filled in."),
        f"- {RULES_TEXT}",
        "",
        "## Summary",
        "",
        "| claim | paper | verdict | cells |",
        "|---|---|---|---|",
    ]
    for c in doc["claims"]:
        lines.append(f"| {c['id']}. {c['title']} | {c['source']} | **{c['verdict']}** | {_counts_text(c['counts'])} |")
    for c in doc["claims"]:
        lines += ["", f"## {c['id']}. {c['title']} — {c['source']}", "",
                  f"Criterion: {c['criterion']} {c['rule']}", ""]
        if c["kind"] == "comparison":
            lines += comparison_table(c)
        elif c["kind"] == "closeness":
            lines += closeness_table(c["cells"], args)
        elif c["kind"] == "layers":
            lines += layer_table(c["cells"])
        elif c["kind"] == "spread":
            lines += spread_table(c)
        elif c["kind"] == "adapters_sd":
            lines += adapters_table(c)
        lines += ["", f"**Overall: {c['verdict']}** ({_counts_text(c['counts'])})."]
        if c.get("fallback"):
            lines += ["", f"Fallback, {c['fallback_note']}:", ""]
            table = closeness_table(c["fallback"], args) if c["kind"] == "closeness" else layer_table(c["fallback"])
            lines += table
    lines += [""] + pooling_lines(doc["pooling"], doc["protocol"]["tables"]["pooling"]["path"])
    notes = doc["protocol"].get("distance_errors") or {}
    if notes:
        lines += ["## Runs whose distances could not be read", ""]
        lines += [f"- `{w}`: {e}" for w, e in notes.items()] + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------
# Entry point.


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
    args = parser.parse_args(argv)
    if not args.margin >= 0:
        parser.error("--margin must be >= 0")
    return args


def _command(args) -> str:
    parts = ["python scripts/claims.py"]
    defaults = parse_args([])
    for flag in ("grids", "out", "margin", "close_rel_l1", "close_angle", "layer_ratio", "sd_factor",
                 "confidence", "selection", "fallback_distances"):
        value = getattr(args, flag)
        if value != getattr(defaults, flag):
            shown = repo_relative(pathlib.Path(value)) if isinstance(value, str) else f"{value:g}"
            parts.append(f"--{flag.replace('_', '-')} {shown}")
    if args.no_distances:
        parts.append("--no-distances")
    return " ".join(parts)


def build(args) -> dict[str, Any]:
    grids = pathlib.Path(args.grids)
    out = pathlib.Path(args.out)
    paths = {name: grids / f"{name}.json" for name in ("core", "data_fraction", "pooling")}
    tables = {name: load_table(path) for name, path in paths.items()}
    core, fractions = tables["core"], tables["data_fraction"]
    store = DistanceStore(out.with_name(out.name + "_distances.json"), compute=not args.no_distances)

    claims = distance_claims(core, store, pathlib.Path(args.fallback_distances), args)
    claims += [
        core_comparison("3a", "Fine-tuning only the top 3 layers suffices", "Radiya-Dixit & Wang 2020",
                        "top3", "Only the top 3 encoder layers and the head trained", core, args),
        core_comparison("3b", "Fine-tuning only the 2 most critical layers suffices",
                        "Radiya-Dixit & Wang 2020", "critical2",
                        "Only the 2 encoder layers that moved most in the grid's seed-0 full run, and the "
                        "head, trained", core, args),
        core_comparison("4", "A supermask without weight updates matches full fine-tuning",
                        "Radiya-Dixit & Wang 2020", "supermask",
                        "Binary masks over the frozen pretrained weights (and the head) trained", core, args),
    ]
    claims += data_fraction_claims(fractions, args)
    claims.append(adapters_claim(core, args))
    claims += [
        core_comparison("7", "LoRA matches full fine-tuning", "no seed paper; LoRA README for reference",
                        "lora", "LoRA at the selected rank", core, args),
        core_comparison("7b", "BitFit matches full fine-tuning (core grid, 5 tasks)",
                        "Doering et al. 2024; BitFit paper", "bitfit", "Biases and the head trained",
                        core, args),
        core_comparison("7c", "Adapters match full fine-tuning", "context for Doering et al. 2024",
                        "adapters", "Bottleneck adapters and the head trained", core, args),
    ]
    selection_path = pathlib.Path(args.selection)
    splits = sorted({r["split"] for t in (core, fractions) if t for r in t["rows"]}) or ["dev"]
    if args.no_distances:
        dist_text = (f"not loaded from the runs (`--no-distances`); {len(store.cache)} cached in "
                     f"`{repo_relative(store.path)}`")
    else:
        dist_text = (f"from the runs' checkpoints (fft.analyze.run_params vs step 0), cached in "
                     f"`{repo_relative(store.path)}`")
    protocol = {
        "command": _command(args),
        "json": repo_relative(_with_ext(out, "json")),
        "tables": {n: {"path": repo_relative(p), "present": tables[n] is not None} for n, p in paths.items()},
        "t3": _t_quantile(args.confidence, len(SEEDS) - 1),
        "seeds": list(SEEDS), "splits": "/".join(splits), "margin": args.margin,
        "confidence": args.confidence,
        "bounds": {k: getattr(args, k) for k in ("close_rel_l1", "close_angle", "layer_ratio", "sd_factor")},
        "selection_path": repo_relative(selection_path),
        "selection_md": repo_relative(selection_path.with_suffix(".md")),
        "selection": selection_info(selection_path),
        "compute": compute_used(tables),
        "distances": dist_text,
        "distance_errors": store.errors,
        "distances_not_loaded": store.skipped,
        "distances_computed": store.computed,
    }
    return {"protocol": protocol, "claims": claims, "pooling": pooling_section(tables["pooling"])}


def _with_ext(out: pathlib.Path, ext: str) -> pathlib.Path:
    return out.with_name(f"{out.name}.{ext}")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    doc = build(args)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    _with_ext(out, "md").write_text(markdown(doc, args))
    _with_ext(out, "json").write_text(json.dumps(_jsonable(doc), indent=1, allow_nan=False) + "\n")
    for c in doc["claims"]:
        print(f"{c['id']:>3}  {c['verdict']:<12}  {c['title']}  ({_counts_text(c['counts'])})")
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
