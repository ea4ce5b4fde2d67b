"""How far the core grid's full fine-tuning runs moved from their step-0 weights (claims 1 and 2):
measured from the runs' checkpoints (fft.analyze.run_params + fft.distances.grouped), cached by
workdir, with the earlier single runs of results/distances/ as a fallback shown beside them."""

from __future__ import annotations

import json
import math
import pathlib
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from fft.report.tables import CORE_TASKS, find_row, repo_relative, resolve, summary
from fft.report.verdicts import EVERY_RULE, FAILS, HOLDS, INCONCLUSIVE, MISSING, claim

LAYER = re.compile(r"layer_\d+")


def compute_run_distances(workdir: pathlib.Path) -> dict[str, Any]:
    """{'step', 'groups': {group: {measure: float}}} of a run's latest checkpoint against its
    step-0 weights (pretrained encoder + seeded head), groups as fft.distances.DEFAULT_LAYER_GROUPS."""
    from fft import analyze, distances  # JAX and the models: only when a run is read.

    initial, final, step = analyze.run_params(workdir)
    table = distances.grouped(initial, final, distances.DEFAULT_LAYER_GROUPS)
    return {"step": int(step), "groups": distances.to_jsonable(table)}


def _final_mtime(workdir: str) -> float | None:
    final = resolve(workdir) / "final_metrics.json"
    return final.stat().st_mtime if final.is_file() else None


class DistanceStore:
    """Distances by workdir: from the cache file when it is current (the run's final_metrics.json
    unchanged, or the run no longer on disk), else computed (unless `compute` is False) and cached.
    A workdir that could not be read or was skipped is tried once."""

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
        if workdir in self.errors or workdir in self.skipped:
            return None
        if not self.compute:
            self.skipped.append(workdir)
            return None
        print(f"claims: distances of {workdir} ...", file=sys.stderr, flush=True)
        try:
            # Looked up in this module at call time, so tests can stub it.
            entry = compute_run_distances(resolve(workdir))
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


def moved_ranking(groups: Mapping[str, Any]) -> list[str]:
    """The encoder layers, most-moved (rel_l1) first, NaN last, ties in model order: the order
    fft.distances.rank_layers gives the `critical` method (fft.partition.ranked_layers)."""
    layers = sorted((g for g in groups if LAYER.fullmatch(g)), key=lambda g: int(g.removeprefix("layer_")))
    values = {g: _measure(groups, g, "rel_l1") for g in layers}
    return sorted(layers, key=lambda g: (math.isnan(values[g]), 0.0 if math.isnan(values[g]) else -values[g]))


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
