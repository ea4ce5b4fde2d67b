"""Vucetic et al.'s learners (issue 16), from the core grid's `learners` row: they match full
fine-tuning (claim 8a), train 7x fewer parameters than adapters and LoRA (8b) and reach full
fine-tuning's final dev score on CoLA at least 20% sooner (8c); and the learners_ablation grid's
priming and node-choice variants beside the method as chosen (information, no verdict).

Seconds to a score come from each run's curve.json (fft.report.figures_data.time_to_target; a
primed run's priming phase counts): the first evaluation at or above the target, so upper bounds
at the run's evaluation interval (its `eval_every_s`: 15 s for full fine-tuning and
learners on CoLA in the core grid, 60 s otherwise), measured on this machine. A run whose workdir or curve is gone
counts as without a curve; nothing is filled in."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

from fft import stats
from fft.report import figures_data
from fft.report.tables import (
    ABLATION_SETTINGS,
    ABLATION_TASKS,
    CORE_TASKS,
    LEARNERS_REFERENCE,
    PARAM_FACTOR,
    SPEED_RATIO,
    SPEED_TASK,
    find_row,
    seed_scores,
    summary,
)
from fft.report.verdicts import (
    EVERY_RULE,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    MISSING,
    claim,
    core_comparison,
)

SOURCE = "Vucetic et al. 2022"
PARAM_METHODS = ("full", "bitfit", "adapters", "lora", "learners")
BASELINES = ("adapters", "lora")  # 8b: the methods learners are compared with


def trainable_params(core, task: str, setting: str) -> int | None:
    """The row's trained parameters as its runs count them (task head included); None without a
    finished run."""
    row = find_row(core, task, setting)
    return None if not row or not row.get("n") else row.get("trainable_params")


def learners_match_claim(core, args) -> dict[str, Any]:
    """8a: learners − full in the core grid, equivalence within the margin, every task; with
    every method's trained parameters per task beside it."""
    c = core_comparison("8a", "Learners match full fine-tuning", SOURCE, "learners",
                        "Learners (a slice of FFN nodes per layer, chosen after priming with full "
                        "fine-tuning for 20% of the run) and the head trained", core, args)
    c["params"] = [{"task": t, **{m: trainable_params(core, t, m) for m in PARAM_METHODS}}
                   for t in CORE_TASKS]
    return c


def _params_cell(core, task: str) -> dict[str, Any]:
    p = {m: trainable_params(core, task, m) for m in ("learners", *BASELINES)}
    ratios = {m: p[m] / p["learners"] if p[m] is not None and p["learners"] else None for m in BASELINES}
    cell = {"task": task, "params": p, "ratios": ratios, "note": ""}
    absent = [m for m, v in p.items() if v is None]
    if absent:
        cell.update(verdict=MISSING, note="no finished run of " + ", ".join(absent))
    else:
        cell["verdict"] = HOLDS if all(p["learners"] * PARAM_FACTOR <= p[m] for m in BASELINES) else FAILS
    return cell


def learners_params_claim(core) -> dict[str, Any]:
    """8b: learners' trained parameters × 7 ≤ those of adapters and of LoRA, per core task."""
    return claim(
        "8b", "Learners train fewer parameters than the methods they are compared with", SOURCE,
        (f"Vucetic et al.: {PARAM_FACTOR:g}x fewer trained parameters than state-of-the-art methods. "
         f"In the core grid, at the settings chosen on validation data, the trained parameters of a "
         f"run (trainable_params in its final metrics, the task head included; for learners those of "
         f"the learner phase, what is stored: the priming phase trains every parameter for 20% of the "
         f"run): per task, 'holds' if learners × {PARAM_FACTOR:g} ≤ adapters and learners × "
         f"{PARAM_FACTOR:g} ≤ LoRA, else 'fails' (counts do not vary by seed, so nothing is "
         f"inconclusive); 'missing' if a row has no finished run. Ratios shown: adapters / learners, "
         f"LoRA / learners."),
        EVERY_RULE, [_params_cell(core, t) for t in CORE_TASKS], kind="params")


def full_target(core, task: str) -> float | None:
    """Full fine-tuning's final dev score on the task (mean over its finished seeds, %)."""
    return summary(seed_scores(find_row(core, task, "full")))["mean"]


def seconds_to(table, task: str, setting: str, target: float | None,
               root: pathlib.Path) -> dict[str, Any] | None:
    """figures_data.time_to_target of the row, None without a table, target or finished run."""
    if table is None or target is None or not seed_scores(find_row(table, task, setting)):
        return None
    return figures_data.time_to_target(table, task, setting, target, root=root)


def _speed_verdict(full: Mapping[str, Any], learners: Mapping[str, Any],
                   ratio: float | None) -> tuple[str, str]:
    if not full["n"] or not learners["n"]:
        return MISSING, "no curve.json for " + ("full's" if not full["n"] else "the learners'") + " runs"
    if full["mean_s"] is None:
        return MISSING, "full's curves never reach its final mean"
    if full["n"] < 2 or learners["n"] < 2:
        return INCONCLUSIVE, "fewer than 2 curves on a side (inconclusive at this n)"
    n, unreached = learners["n"], learners["n"] - learners["reached"]
    if unreached > n / 2:
        return FAILS, f"learners never reach the target on {unreached} of {n} seeds"
    if ratio is None:
        return INCONCLUSIVE, "no ratio (full reaches the target at 0 s)"
    if ratio > SPEED_RATIO:
        return FAILS, ""
    if unreached:
        return INCONCLUSIVE, f"learners never reach the target on {unreached} of {n} seeds"
    return HOLDS, ""


def speed_cell(core, task: str, root: pathlib.Path) -> dict[str, Any]:
    """Seconds for full and for learners to reach full's final dev mean on the task, their ratio
    and the 8c verdict."""
    target = full_target(core, task)
    full = seconds_to(core, task, "full", target, root)
    learners = seconds_to(core, task, "learners", target, root)
    cell = {"task": task, "target": target, "full": full, "learners": learners, "ratio": None}
    if full is None or learners is None:
        cell.update(verdict=MISSING, note="no finished run of " + ("full (no target)" if full is None
                                                                     else "learners"))
        return cell
    if learners["mean_s"] is not None and full["mean_s"]:
        cell["ratio"] = learners["mean_s"] / full["mean_s"]
    cell["verdict"], cell["note"] = _speed_verdict(full, learners, cell["ratio"])
    return cell


def learners_speed_claim(core, args) -> dict[str, Any]:
    """8c: on CoLA, learners' mean seconds to full's final dev score ≤ 0.8 × full's; the other
    core tasks' numbers as information."""
    root = pathlib.Path(args.root)
    return claim(
        "8c", "Learners reach full fine-tuning's final dev score on CoLA at least 20% faster", SOURCE,
        (f"Core grid, CoLA: target = full fine-tuning's final dev score (mean over its seeds). Each "
         f"run's seconds to the target = the training seconds of its first evaluation at or above it "
         f"(curve.json, evaluated every 15 s of training for full and learners on CoLA; a primed run's "
         f"priming phase counts), so upper bounds at the evaluation interval, measured on this machine. Mean over the seeds that reach it "
         f"(full's seeds below its own mean never do). 'holds' if every learners seed reaches it and "
         f"mean_learners ≤ {SPEED_RATIO:g} × mean_full; 'fails' if the ratio > {SPEED_RATIO:g} or "
         f"learners never reach the target on a majority of seeds; 'inconclusive' otherwise (some "
         f"seeds do not reach it, or fewer than 2 curves on a side); 'missing' without finished runs "
         f"or curves. The other core tasks: the same numbers, as information."),
        "Overall verdict: the CoLA cell's (the other tasks are not counted).",
        [speed_cell(core, SPEED_TASK, root)], kind="speed",
        others=[speed_cell(core, t, root) for t in CORE_TASKS if t != SPEED_TASK])


def _ablation_row(table, task: str, setting: str, how: tuple[float, str], reference: Mapping[int, float],
                  target: float | None, full_s: float | None, args, grid: str) -> dict[str, Any]:
    scores = seed_scores(find_row(table, task, setting))
    vs = (stats.paired_difference(scores, reference, args.confidence)
          if grid != "core" and scores and reference else None)
    time = seconds_to(table, task, setting, target, pathlib.Path(args.root))
    ratio = None if not time or time["mean_s"] is None or not full_s else time["mean_s"] / full_s
    return {"setting": setting, "grid": grid, "priming": how[0], "select": how[1],
            "score": summary(scores), "vs_reference": vs, "time": time, "ratio_full": ratio}


def ablation_section(core, ablation, args) -> dict[str, Any]:
    """Per task of the learners_ablation grid: each variant's score, its difference to the method
    as chosen (core's `learners`, paired by seed) and its seconds to full's final score."""
    tasks = []
    for task in ABLATION_TASKS:
        target = full_target(core, task)
        full = seconds_to(core, task, "full", target, pathlib.Path(args.root))
        full_s = full["mean_s"] if full else None
        reference = seed_scores(find_row(core, task, "learners"))
        label, *how = LEARNERS_REFERENCE
        rows = [{**_ablation_row(core, task, "learners", tuple(how), {}, target, full_s, args, "core"),
                 "label": label}]
        rows += [{**_ablation_row(ablation, task, s, how, reference, target, full_s, args,
                                  "learners_ablation"), "label": s} for s, how in ABLATION_SETTINGS.items()]
        tasks.append({"task": task, "target": target, "full_seconds": full_s, "settings": rows})
    return {"after": "8c", "present": ablation is not None, "core_present": core is not None,
            "reference": LEARNERS_REFERENCE[0], "tasks": tasks}
