"""Wall-clock time budgets (`config.time_budget_s`) and evaluations at fixed training-time
intervals (`config.eval_every_s`).

Training time is the wall-clock time of the training loop without evaluation and checkpointing
(`fft.train.train_loop` already pauses its clock for those); compiling the first steps counts.

**How a budget becomes a schedule.** The learning-rate schedule stays a function of the step, over
a step count fixed before the first step: `num_steps = floor(budget / step_seconds)`, where
`step_seconds` is measured on this run's own compiled train step, on the first batches of its data,
by a throwaway calibration (its updates are discarded), or given as `config.time_budget_step_s`.
A schedule defined on the fraction of the budget elapsed would make the learning rate of a step
depend on how busy the machine was at that moment, so the same config and seed would train
different models; with a step count the run is a plain step-count run once planned, bit for bit
reproducible from its recorded plan (`time_budget.json`: replay it with
`--config.time_budget_step_s=<its step_seconds>`, or with `num_train_steps` and no budget), and
two methods under one budget differ only in how many steps they fit. The budget also stops the
run: if training time reaches it before `num_steps` (a slower machine than calibrated), the run
stops there, checkpoints, evaluates and records `stopped_by_budget`. A resumed run keeps its plan
and its remaining budget (training seconds so far come from `train_time.json`).

Several processes: the step time process 0 measured is the one all use, and every time-based
decision (stop, evaluate) is process 0's, broadcast to the others, so all stop at one step.

**Timed evaluation.** With `eval_every_s`, the run also evaluates whenever its training time
crosses the next multiple of the interval. The loop dispatches steps asynchronously, so while a
budget or timed evaluation is on it waits for each step's predecessor before reading the clock
(one step stays in flight): decisions are then at most one step late, and a budget overshoots by
at most one step; each evaluation (timed, per-epoch or final) appends
`{step, train_seconds, eval}` to `curve.json` (entries past a resumed checkpoint are dropped), the
data of the metric-versus-training-time figures (scripts/figures.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np

from fft import errors, writers

PLAN_FILE = "time_budget.json"
CURVE_FILE = "curve.json"
CALIBRATION_WARMUP = 2  # Steps that compile (one per batch shape, packing has one or two).
CALIBRATION_STEPS = 8  # Timed steps; their median is the step time.


class BudgetError(errors.FftError, ValueError):
    """A time budget that cannot be met (too short for one step) or a field that conflicts with it."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """A budgeted run's step count and how it was reached (written to `<workdir>/time_budget.json`)."""

    budget_s: float
    step_seconds: float
    num_steps: int
    source: str  # 'measured' (calibrated on this machine) or 'given' (config.time_budget_step_s).
    calibration_steps: int = 0
    stopped_at_step: int | None = None  # Set when the budget ran out before num_steps.

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_config(config) -> None:
    """Raises BudgetError naming the field: budget or interval <= 0, budget with num_train_steps."""
    budget = config.get("time_budget_s")
    for field in ("time_budget_s", "time_budget_step_s", "eval_every_s"):
        value = config.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value <= 0):
            raise BudgetError(f"config.{field}={value!r}: must be a number of seconds > 0 "
                              "(leave it unset for none)")
    if budget is not None and config.get("num_train_steps", 0) > 0:
        raise BudgetError(
            f"config.time_budget_s={budget!r} and config.num_train_steps={config.num_train_steps!r}: "
            "a budget decides the step count itself; set one of them",
        )
    if config.get("time_budget_step_s") is not None and budget is None:
        raise BudgetError(f"config.time_budget_step_s={config.time_budget_step_s!r}: needs "
                          "config.time_budget_s")


def steps_within(budget_s: float, step_seconds: float) -> int:
    """The whole steps that fit in the budget; BudgetError if not even one does."""
    steps = math.floor(budget_s / step_seconds)
    if steps < 1:
        raise BudgetError(
            f"config.time_budget_s={budget_s:g}: too short to finish one step (a step takes "
            f"{step_seconds:.3g} s here)",
            hint=f"give at least {math.ceil(step_seconds)} s",
        )
    return steps


def measure_step_seconds(step: Callable[[Any], None], batches: Iterable[Any],
                         warmup: int = CALIBRATION_WARMUP, timed: int = CALIBRATION_STEPS) -> tuple[float, int]:
    """(median seconds per step, steps run): `step(batch)` must block until its work is done.
    The first `warmup` batches compile and are not timed; a timed step runs from the end of the
    one before to its own end, so making the batch counts as in the training loop. Fewer batches
    than asked are used as they come (at least one timed)."""
    times: list[float] = []
    ran = 0
    last = None
    for batch in batches:
        if ran >= warmup + timed:
            break
        step(batch)
        ran += 1
        now = time.perf_counter()
        if ran > warmup:
            times.append(now - last)
        last = now
    if not times:
        raise BudgetError(f"time budget calibration: needs more than {warmup} training batches, got {ran}")
    return statistics.median(times), ran


def agree(value: float) -> float:
    """Process 0's value, on every process (a float)."""
    if jax.process_count() == 1:
        return float(value)
    from jax.experimental import multihost_utils

    with jax.transfer_guard("allow"):  # An explicit, tiny transfer inside the guarded loop.
        return float(multihost_utils.broadcast_one_to_all(np.asarray(value, np.float32)))


def save_plan(workdir: pathlib.Path, plan: Plan) -> None:
    if jax.process_index() == 0:
        _write_json(workdir / PLAN_FILE, plan.to_json())


def load_plan(workdir: pathlib.Path) -> Plan | None:
    path = workdir / PLAN_FILE
    if not path.is_file():
        return None
    try:
        return Plan(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as e:
        raise BudgetError(f"{path}: unreadable time-budget plan ({e})",
                          hint="it is written before the first step; delete the workdir to start over") from None


class Clock:
    """Training seconds against the budget and the evaluation interval; decisions are process 0's.

    `due(train_seconds)` -> (stop, evaluate): stop once the budget is spent; evaluate when the
    training time crossed the next multiple of `eval_every_s` since the last timed evaluation."""

    def __init__(self, budget_s: float | None, eval_every_s: float | None, train_seconds: float):
        self.budget_s = budget_s
        self.eval_every_s = eval_every_s
        self.next_eval = None
        if eval_every_s:
            self.next_eval = (math.floor(train_seconds / eval_every_s) + 1) * eval_every_s

    @property
    def active(self) -> bool:
        return self.budget_s is not None or self.next_eval is not None

    def due(self, train_seconds: float) -> tuple[bool, bool]:
        stop = self.budget_s is not None and train_seconds >= self.budget_s
        evaluate = self.next_eval is not None and train_seconds >= self.next_eval
        if jax.process_count() > 1:
            flags = int(agree(float(stop) + 2.0 * float(evaluate)))
            stop, evaluate = bool(flags & 1), bool(flags & 2)
        if evaluate:
            while self.next_eval <= train_seconds:
                self.next_eval += self.eval_every_s
        return stop, evaluate


def remaining(plan: Plan | None, train_seconds: float) -> float | None:
    return None if plan is None else plan.budget_s - train_seconds


def append_curve(workdir: pathlib.Path, step: int, train_seconds: float, results: dict[str, Any],
                 timed: bool) -> None:
    """Adds one evaluation to `<workdir>/curve.json` (process 0, atomic)."""
    if jax.process_index() != 0:
        return
    path = workdir / CURVE_FILE
    points = _read_points(path)
    points = [p for p in points if p["step"] != step]
    evals = writers.finite_or_none({split: {k: float(v) for k, v in values.items()} for split, values in results.items()})
    points.append({"step": step, "train_seconds": train_seconds, "timed": timed, "eval": evals})
    _write_json(path, {"points": sorted(points, key=lambda p: p["step"])})


def trim_curve(workdir: pathlib.Path, step: int) -> None:
    """Drops curve points after `step` (a resumed run redoes those steps)."""
    path = workdir / CURVE_FILE
    if jax.process_index() != 0 or not path.is_file():
        return
    points = _read_points(path)
    kept = [p for p in points if p["step"] <= step]
    if len(kept) != len(points):
        _write_json(path, {"points": kept})


def read_curve(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
    """The evaluation points of a run, by step (empty if it has none)."""
    return _read_points(pathlib.Path(workdir) / CURVE_FILE)


def _read_points(path: pathlib.Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    try:
        return list(json.loads(path.read_text())["points"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise errors.RunError(f"{path}: unreadable evaluation curve ({e})") from None


def _write_json(path: pathlib.Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, allow_nan=False))
    tmp.replace(path)
