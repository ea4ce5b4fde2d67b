"""What a grid costs here: the wall time its finished runs took, and an estimate for the runs still
to go from the finished runs of every grid under the same root (`fft sweep GRID --cost`).

A run's wall time is its `wall_seconds` (loading, compiling, training, evaluating, writing), plus
its priming phase's where it has one. The estimate models a run as overhead + rate x work:
  work      training examples x epochs it will see (the task's train split x fraction, less the
            validation share; epochs from its config), or its time budget in seconds;
  rate      training seconds per example-epoch of the finished runs with the same task and method
            (median); else the method's rate on other tasks scaled by the task's full fine-tuning
            rate; else the task's full fine-tuning rate; else the median of all;
  overhead  wall - training seconds of finished runs of the same task (median).
It is a planning figure for this machine, measured from runs that shared it with whatever else ran.
"""

from __future__ import annotations

import json
import pathlib
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from fft.sweep.grid import FINAL, POINT_FILE
from fft.sweep.points import Point, is_finished

_CALIBRATION_S = 15.0  # A budgeted run's throwaway calibration steps, beside its budget.


def _read(path: pathlib.Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run_wall_seconds(workdir: pathlib.Path) -> float | None:
    """Wall seconds of a finished run, its priming phase included; None if it has not finished."""
    final = _read(workdir / FINAL)
    if not final or final.get("wall_seconds") is None:
        return None
    priming = _read(workdir / "priming" / FINAL) or {}
    return float(final["wall_seconds"]) + float(priming.get("wall_seconds") or 0.0)


def reference(workdir: pathlib.Path) -> dict[str, Any] | None:
    """What a finished run says about cost: {task, method, wall, train, work, full_examples}."""
    final, config = _read(workdir / FINAL), _read(workdir / "config.json")
    if not final or not config or final.get("wall_seconds") is None or not final.get("train_examples"):
        return None
    primed = _read(workdir / "priming" / FINAL) or {}  # Read once: its wall time and steps.
    wall = float(final["wall_seconds"]) + float(primed.get("wall_seconds") or 0.0)
    train = float(final.get("train_seconds_total") or final.get("train_seconds") or 0.0)
    data = config.get("data", {})
    share = float(data.get("train_fraction", 1.0)) * (1.0 - float(data.get("validation_fraction") or 0.0))
    priming = primed.get("steps") or 0
    epochs = float(final.get("epochs") or 0.0) + (priming / max(final.get("steps") or 1, 1)) * float(
        final.get("epochs") or 0.0)
    return {"task": final.get("task") or config.get("task"), "method": final.get("method") or config.get("method"),
            "wall": wall, "train": train, "work": final["train_examples"] * epochs,
            "full_examples": final["train_examples"] / share if share > 0 else None}


def references(root: pathlib.Path) -> list[dict[str, Any]]:
    """Every finished run under `root` (<root>/<grid>/.../<workdir> with a sweep_point.json)."""
    found = []
    for point_file in sorted(root.glob(f"**/{POINT_FILE}")):
        ref = reference(point_file.parent)
        if ref is not None:
            found.append(ref)
    return found


def _median(values: Iterable[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


class Model:
    """overhead + rate x work, fitted on `refs` (see the module doc)."""

    def __init__(self, refs: Sequence[dict[str, Any]]):
        self.refs = [r for r in refs if r["work"] > 0 and r["train"] > 0]
        self._rate = {}
        for r in self.refs:
            self._rate.setdefault((r["task"], r["method"]), []).append(r["train"] / r["work"])

    def rate(self, task: str, method: str) -> float | None:
        def med(t, m):
            return _median(v for (tt, mm), vs in self._rate.items() for v in vs
                           if (t is None or tt == t) and (m is None or mm == m))

        own = med(task, method)
        if own is not None:
            return own
        method_any, full_any, full_task = med(None, method), med(None, "full"), med(task, "full")
        if method_any is not None and full_any and full_task is not None:
            return method_any * full_task / full_any
        return full_task if full_task is not None else med(None, None)

    def overhead(self, task: str) -> float:
        own = _median(r["wall"] - r["train"] for r in self.refs if r["task"] == task)
        return own if own is not None else (_median(r["wall"] - r["train"] for r in self.refs) or 30.0)

    def full_examples(self, task: str) -> float | None:
        return _median(r["full_examples"] for r in self.refs if r["task"] == task)

    def estimate(self, point: Point, epochs: float) -> float | None:
        """Wall seconds `point` should take here; None without any reference for its task."""
        budget = point.fields.get("time_budget_s")
        if budget:
            return self.overhead(point.task) + _CALIBRATION_S + float(budget)
        full, rate = self.full_examples(point.task), self.rate(point.task, point.method)
        if full is None or rate is None:
            return None
        share = point.fraction * (1.0 - float(point.fields.get("data.validation_fraction") or 0.0))
        return self.overhead(point.task) + rate * full * share * epochs


def point_epochs(point: Point) -> float:
    """The epochs `point` trains: its num_epochs field, else its config's default."""
    if "num_epochs" in point.fields:
        return float(point.fields["num_epochs"])
    from configs import glue as glue_config

    return float(glue_config.get_config(point.config_arg).num_epochs)


def grid_cost(points: Sequence[Point], grid_dir: pathlib.Path, model: Model) -> dict[str, Any]:
    """{'done': [(setting, wall)], 'todo': [(setting, estimate or None)]} for the grid's points."""
    done, todo, epochs = [], [], {}
    for point in points:
        workdir = grid_dir / point.rel
        if is_finished(workdir):
            done.append((point.setting, run_wall_seconds(workdir) or 0.0))
        else:
            key = point.config_arg + repr(point.fields.get("num_epochs"))
            if key not in epochs:
                epochs[key] = point_epochs(point)
            todo.append((point.setting, model.estimate(point, epochs[key])))
    return {"done": done, "todo": todo}


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def cost_lines(name: str, cost: dict[str, Any], num_refs: int) -> list[str]:
    done, todo = cost["done"], cost["todo"]
    known = [s for _, s in todo if s is not None]
    unknown = sum(s is None for _, s in todo)
    head = (f"sweep {name}: {len(done) + len(todo)} runs; {len(done)} finished in {_hours(sum(w for _, w in done))} "
            f"of wall time; {len(todo)} to run, about {_hours(sum(known))}"
            + (f" (+{unknown} with no reference run of their task)" if unknown else "")
            + f" (from {num_refs} finished runs)")
    lines = [head]
    settings = dict.fromkeys(s for s, _ in done + todo)
    for setting in settings:
        d = [w for s, w in done if s == setting]
        t = [e for s, e in todo if s == setting]
        est = sum(e for e in t if e is not None)
        lines.append(f"  {setting:40s} finished {len(d):3d} ({_hours(sum(d))})   to run {len(t):3d} "
                     f"(~{_hours(est)}{', some unknown' if any(e is None for e in t) else ''})")
    return lines
