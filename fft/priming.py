"""Two-phase runs: a priming phase (another method's ordinary run), then the method's own run.

A method that registers a priming factory (``fft.methods.base.Priming``; learners do) gets:

  phase 1  ``<workdir>/priming/``: a complete run of ``priming.config`` (e.g. full fine-tuning) over
           ``fraction`` of the run: of its epochs, of ``num_train_steps``, or of
           ``time_budget_s``. It checkpoints, resumes and evaluates like any run.
  boundary ``priming.finish(primed, step0, key, workdir)`` turns phase 1's final parameters into
           phase 2's config (learners: the nodes that moved most, written once, atomically, to
           ``<workdir>/learner_nodes.json``).
  phase 2  ``<workdir>/``: the method's run over the rest: ``(1 - fraction)`` of the epochs, the
           steps phase 1 did not take, or the budget phase 1 did not spend. Its trained leaves
           start from phase 1's values (``config.init_trainable_from``), its frozen leaves are the
           step-0 weights, so the task it stores is still only what it trains. Its data continue
           where phase 1's stopped (``config.data.skip_steps``): no batch is seen twice in a row.

Each phase is a plain run on disk, so a run killed in either phase, or between them, resumes to
the same final bits as one that never stopped. Phase 2 builds only its own method: it never
computes phase 1's wide gradients. Its final_metrics.json adds ``priming`` (phase 1's steps,
seconds and evaluation) and ``train_seconds_total``.
"""

from __future__ import annotations

import copy
import math
import pathlib
from collections.abc import Callable
from typing import Any

import ml_collections

from fft import budget, errors, methods

PHASE_DIR = "priming"


class PrimingError(errors.FftError, ValueError):
    """A priming phase that leaves nothing for the method's own run."""


def phase_one_config(config: ml_collections.ConfigDict, plan: methods.Priming) -> ml_collections.ConfigDict:
    """Phase 1's config: the priming method over `plan.fraction` of the run's length."""
    first = copy.deepcopy(plan.config)
    f = plan.fraction
    if config.get("time_budget_s") is not None:
        first.time_budget_s = f * config.time_budget_s
    elif config.num_train_steps > 0:
        first.num_train_steps = max(1, round(f * config.num_train_steps))
        if first.num_train_steps >= config.num_train_steps:
            raise PrimingError(
                f"config.{config.method}.priming={f:g} of num_train_steps={config.num_train_steps} "
                "leaves no step for the method's own run"
            )
    else:
        first.num_epochs = f * config.num_epochs
    first.export_delta = False
    return first


def phase_two_config(second: ml_collections.ConfigDict, config: ml_collections.ConfigDict,
                     plan: methods.Priming, first_final: dict[str, Any], workdir: pathlib.Path
                     ) -> ml_collections.ConfigDict:
    """Phase 2's config: what is left of the run, starting from phase 1's trained values."""
    second = copy.deepcopy(second)
    if config.get("time_budget_s") is not None:
        left = config.time_budget_s - first_final["train_seconds"]
        if left <= 0:
            raise PrimingError(
                f"config.time_budget_s={config.time_budget_s:g}: priming spent "
                f"{first_final['train_seconds']:.3g} s of it; nothing is left for the method's own run"
            )
        second.time_budget_s = left
    elif config.num_train_steps > 0:
        second.num_train_steps = config.num_train_steps - first_final["steps"]
    else:
        second.num_epochs = (1.0 - plan.fraction) * config.num_epochs
    second.data.skip_steps = int(first_final["steps"])
    second.init_trainable_from = str(workdir / PHASE_DIR)
    return second


def run(config: ml_collections.ConfigDict, workdir: pathlib.Path,
        train_one: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """Trains `config` in `workdir` with `train_one(config, workdir, extra=None)`, through its
    priming phase first when its method has one (see the module docstring)."""
    from fft import checkpoint, train  # fft.train imports this module.

    plan = methods.priming(methods.upgrade_config(config))  # Configs from before methods: none.
    if plan is None:
        return train_one(config, workdir)
    budget.check_config(config)
    first_dir = workdir / PHASE_DIR
    first_final = train_one(phase_one_config(config, plan), first_dir)
    first_config = train.load_run_config(first_dir)
    state, _ = checkpoint.load_state_dict(first_dir)
    step0, primed = train.task_params(first_config, state["params"])
    second = plan.finish(primed, step0, train.method_key(config), workdir)
    second = phase_two_config(second, config, plan, first_final, workdir)
    extra = {
        "priming": {
            "workdir": str(first_dir), "method": first_config.method, "fraction": plan.fraction,
            "steps": first_final["steps"], "train_seconds": first_final["train_seconds"],
            "eval": first_final["eval"],
        },
    }
    final = train_one(second, workdir, extra=extra)
    return final


def total_seconds(final: dict[str, Any]) -> float:
    """Training seconds of both phases of a run's final metrics (one phase: its own)."""
    primed = final.get("priming") or {}
    return final["train_seconds"] + primed.get("train_seconds", 0.0) if not math.isnan(final["train_seconds"]) else math.nan
