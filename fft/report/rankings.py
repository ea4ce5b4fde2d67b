"""The layer rankings side by side (issue 15, item 6(b)): per core task, which encoder layers
`critical2` (the distance ranking: the 2 layers that moved most in the grid's seed-0 full run),
`critical2-grad` (the gradient ranking of fft/layer_ranking.py, computed before training) and
`top3` (the top layers) train, their scores against full fine-tuning (claims 3a-3c), and the
paired difference gradient − distance.

The layers a ranking picks come from what the runs were given: the row's `distances_file` (or,
before the runs, the file or run the grid would give them), ranked as fft.partition.ranked_layers
ranks it; the layers the finished runs trained come from their task_delta.safetensors. Nothing is
filled in: a ranking that cannot be read and a cell without runs show as missing."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from fft import stats
from fft.report.distances import LAYER, DistanceStore, moved_ranking
from fft.report.tables import (
    CORE_TASKS,
    NUM_LAYERS,
    find_row,
    repo_relative,
    resolve,
    seed_scores,
    seed_workdirs,
    summary,
)
from fft.report.verdicts import MISSING

# (key, setting in the core grid, its claim, what ranks the layers).
RANKINGS = (
    ("distance", "critical2", "3b", "distance: moved most in the seed-0 full run"),
    ("gradient", "critical2-grad", "3c", "gradient, before training"),
    ("top", "top3", "3a", "top layers"),
)
CRITICAL_K = 2  # configs/grids/core.py: critical2 and critical2-grad train k=2 layers
TOP_SELECT = "top3"  # configs/grids/lr_selection.py
GRADIENT_FILE = "{task}_gradient.json"  # scripts/rank_layers.py, in --rankings
DELTA_FILE = "task_delta.safetensors"  # fft.methods.partitioned.DELTA_FILE
GRADIENT_HIGHER, DISTANCE_HIGHER, NO_DIFFERENCE = "gradient higher", "distance higher", "no difference shown"
READINGS = (GRADIENT_HIGHER, DISTANCE_HIGHER, NO_DIFFERENCE, MISSING)


def _option(row: Mapping[str, Any] | None, key: str, task: str) -> Any:
    value = ((row or {}).get("options") or {}).get(key)
    return value.replace("{task}", task) if isinstance(value, str) else value


def ranking_names(data: Any) -> list[str]:
    """Group names, first-ranked first, from the ranking JSON layouts fft.partition.ranked_layers
    reads (a 'ranking' list as is; a 'groups' table or a bare table by rel_l1)."""
    if isinstance(data, Mapping) and isinstance(data.get("ranking"), list):
        data = data["ranking"]
    elif isinstance(data, Mapping) and isinstance(data.get("groups"), Mapping):
        data = data["groups"]
    if isinstance(data, list):
        return [str(r["group"]) for r in data if isinstance(r, Mapping) and "group" in r]
    if isinstance(data, Mapping) and all(isinstance(v, Mapping) for v in data.values()):
        return moved_ranking(data)
    return []


def _layers(names: Sequence[str], k: int) -> list[int]:
    return [int(g.removeprefix("layer_")) for g in names if LAYER.fullmatch(g)][:k]


def _ranked(source: str, store: DistanceStore | None, k: int) -> tuple[list[int] | None, str]:
    """(the first k layers of the ranking `source` names, a note): a JSON file, or a run's workdir
    whose distances come from the store (cached, or computed unless --no-distances)."""
    path = resolve(source)
    if path.is_file():
        try:
            layers = _layers(ranking_names(json.loads(path.read_text())), k)
        except (OSError, ValueError) as e:
            return None, f"unreadable ranking: {type(e).__name__}"
        return (layers, "") if layers else (None, "the file ranks no encoder layer")
    if source.endswith(".json"):
        return None, "no ranking file"
    entry = store.get(source) if store is not None else None
    if entry is None:
        why = (store.errors.get(source) if store is not None else None) or "distances not loaded"
        return None, f"run's distances: {why}"
    return _layers(moved_ranking(entry["groups"]), k), ""


def _pick(row, task: str, default_source: str | None, store, note: str) -> dict[str, Any]:
    """What a critical-k row's ranking picks: its own distances_file, else the planned one."""
    k = int(_option(row, "k", task) or CRITICAL_K)
    source = _option(row, "distances_file", task) or default_source
    if not source:
        return {"layers": None, "k": k, "source": None, "planned": row is None, "note": note}
    layers, why = _ranked(source, store, k)
    return {"layers": layers, "k": k, "source": repo_relative(resolve(source)), "planned": row is None,
            "note": why}


def distance_pick(core, task: str, store: DistanceStore | None) -> dict[str, Any]:
    """critical2's layers: the 2 that moved most in the full run its distances_file names (before
    the critical2 runs: the grid's seed-0 full run of the task)."""
    seed0 = seed_workdirs(find_row(core, task, "full")).get(0)
    return _pick(find_row(core, task, "critical2"), task, seed0, store, "no seed-0 full run to rank by")


def gradient_pick(core, task: str, rankings_dir: pathlib.Path) -> dict[str, Any]:
    """critical2-grad's layers: the first 2 of its gradient ranking file."""
    planned = str(rankings_dir / GRADIENT_FILE.format(task=task))
    return _pick(find_row(core, task, "critical2-grad"), task, planned, None, "")


def parse_select(select: str, num_layers: int = NUM_LAYERS) -> list[int] | None:
    """The layers of a `layers` method's select ('top3', '4,5', '3-5'), as fft.partition parses it."""
    if select.startswith("top") and select[3:].isdigit():
        k = int(select[3:])
        return list(range(num_layers - k, num_layers)) if 1 <= k <= num_layers else None
    found: set[int] = set()
    for part in select.split(","):
        low, _, high = part.strip().partition("-")
        if not low.isdigit() or not (high.strip() or low).isdigit():
            return None
        found.update(range(int(low), int(high.strip() or low) + 1))
    return sorted(found) if found and max(found) < num_layers else None


def top_pick(core, task: str) -> dict[str, Any]:
    row = find_row(core, task, "top3")
    select = _option(row, "select", task) or TOP_SELECT
    layers = parse_select(str(select))
    return {"layers": layers, "k": len(layers or []), "source": f"layers:{select}", "planned": row is None,
            "note": "" if layers else f"cannot read select {select!r}"}


def trained_layers(workdir: str) -> list[int] | None:
    """The encoder layers a finished run trained: those its task_delta.safetensors stores."""
    path = resolve(workdir) / DELTA_FILE
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            names = list(f.keys())
    except Exception:  # noqa: BLE001 - an unreadable delta is shown as unknown.
        return None
    found = {int(p[6:]) for n in names for p in n.split("/") if LAYER.fullmatch(p)}
    return sorted(found)


def trained_by_seed(row) -> dict[int, list[int]]:
    out = {s: trained_layers(w) for s, w in seed_workdirs(row).items()}
    return {s: v for s, v in out.items() if v is not None}


def gradient_vs_distance(grad_row, dist_row, confidence: float) -> dict[str, Any]:
    """critical2-grad − critical2, paired by seed, its t interval and which scored higher."""
    g, d = seed_scores(grad_row), seed_scores(dist_row)
    if not g or not d:
        side = "either" if not (g or d) else "critical2-grad" if not g else "critical2"
        return {"diff": None, "reading": MISSING, "note": f"no finished run of {side}"}
    diff = stats.paired_difference(g, d, confidence)
    if diff["n"] == 0:
        return {"diff": diff, "reading": MISSING, "note": "no seed finished on both sides"}
    if diff["low"] is None:
        return {"diff": diff, "reading": NO_DIFFERENCE, "note": "1 pair: no interval"}
    reading = (GRADIENT_HIGHER if diff["low"] > 0 else DISTANCE_HIGHER if diff["high"] < 0
               else NO_DIFFERENCE)
    return {"diff": diff, "reading": reading, "note": ""}


def _task_entry(core, task, store, rankings_dir, claims_by_id, confidence) -> dict[str, Any]:
    picks = {"distance": distance_pick(core, task, store), "gradient": gradient_pick(core, task, rankings_dir),
             "top": top_pick(core, task)}
    entry: dict[str, Any] = {"task": task, "full": summary(seed_scores(find_row(core, task, "full"))),
                             "rankings": {}}
    for key, setting, cid, label in RANKINGS:
        (cell,) = [c for c in claims_by_id[cid]["cells"] if c["task"] == task]
        entry["rankings"][key] = {
            "setting": setting, "claim": cid, "label": label, **picks[key],
            "trained": trained_by_seed(find_row(core, task, setting)), "score": cell["method"],
            "vs_full": cell["diff"], "verdict": cell["verdict"], "verdict_note": cell["note"]}
    dist, grad = picks["distance"]["layers"], picks["gradient"]["layers"]
    entry["shared_layers"] = None if dist is None or grad is None else sorted(set(dist) & set(grad))
    entry["gradient_vs_distance"] = gradient_vs_distance(
        find_row(core, task, "critical2-grad"), find_row(core, task, "critical2"), confidence)
    return entry


def rankings_section(core, store: DistanceStore | None, rankings_dir: pathlib.Path,
                     claims: Sequence[Mapping[str, Any]], args) -> dict[str, Any]:
    """{'tasks': [per task: the full run's score; per ranking its layers, runs and verdict against
    full; gradient − distance], 'readings': {reading: tasks}} over the planned core tasks."""
    by_id = {c["id"]: c for c in claims}
    tasks = [_task_entry(core, t, store, rankings_dir, by_id, args.confidence) for t in CORE_TASKS]
    readings = [t["gradient_vs_distance"]["reading"] for t in tasks]
    return {"rankings_dir": repo_relative(rankings_dir), "tasks": tasks,
            "readings": {r: readings.count(r) for r in READINGS}}
