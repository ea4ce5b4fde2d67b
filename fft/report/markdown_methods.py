"""Markdown for the claims about learners, time budgets and spread (issue 16: claims 8a-9b), the
other methods beside claims 5a/5c and 9a, and the learners' priming and node-choice section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fft.report.text import (
    diff_text,
    key_columns,
    num,
    params_text,
    per_seed_text,
    score_text,
    seconds_text,
    verdict_text,
)

OTHER_METHODS = ("adapters", "lora", "learners")
BUDGET_METHODS = ("full", "bitfit", "adapters", "lora", "learners")


def learners_params_lines(c: Mapping[str, Any]) -> list[str]:
    """Claim 8a's trained parameters per task and method (information)."""
    lines = ["", ("Trained parameters per task (the rows' trainable_params, task head included; "
                  "information):"), "",
             "| task | full | bitfit | adapters | lora | learners | learners / full |",
             "|---|---|---|---|---|---|---|"]
    for p in c["params"]:
        share = "—" if not (p["learners"] and p["full"]) else f"{100 * p['learners'] / p['full']:.2f}%"
        lines.append(f"| {p['task']} | " + " | ".join(params_text(p[m]) for m in
                                                       ("full", "bitfit", "adapters", "lora", "learners"))
                     + f" | {share} |")
    return lines


def params_table(c: Mapping[str, Any]) -> list[str]:
    """Claim 8b."""
    lines = ["| task | learners | adapters | lora | adapters / learners | lora / learners | verdict |",
             "|---|---|---|---|---|---|---|"]
    for cell in c["cells"]:
        p = cell["params"]
        ratios = ["—" if cell["ratios"][m] is None else f"{cell['ratios'][m]:.1f}x"
                  for m in ("adapters", "lora")]
        lines.append(f"| {cell['task']} | {params_text(p['learners'])} | {params_text(p['adapters'])} | "
                     f"{params_text(p['lora'])} | {' | '.join(ratios)} | {verdict_text(cell)} |")
    return lines


def _speed_row(cell: Mapping[str, Any], info: bool) -> str:
    verdict = verdict_text(cell)
    return (f"| {cell['task']} | {num(cell['target'])} | {seconds_text(cell['full'])} | "
            f"{seconds_text(cell['learners'])} | {per_seed_text(cell['learners'])} | {num(cell['ratio'])} | "
            + (f"information: {verdict}" if info else verdict) + " |")


def speed_table(c: Mapping[str, Any]) -> list[str]:
    """Claim 8c: CoLA, then the other core tasks as information."""
    lines = [("| task | target: full's final dev (%) | full: s to target | learners: s to target | "
              "learners per seed (s) | learners / full | verdict |"), "|---|---|---|---|---|---|---|"]
    lines += [_speed_row(cell, False) for cell in c["cells"]]
    lines += [_speed_row(cell, True) for cell in c.get("others", [])]
    return lines + ["", ("Seconds: training seconds on this machine to the first evaluation at or above "
                         "the target (evaluated every 60 s, CoLA's full and learners runs every 15 s: upper bounds at "
                         "that interval), mean ± sd over the "
                         "seeds that reach it; learners' include their priming phase.")]


def sd_ratio_table(c: Mapping[str, Any]) -> list[str]:
    """Claim 9b."""
    keys = key_columns(c["cells"])
    lines = ["| grid | task" + "".join(f" | {n}" for n, _ in keys)
             + " | full: mean ± sd | adapters: mean ± sd | sd ratio adapters/full | verdict |",
             "|---" * (6 + len(keys)) + "|"]
    for cell in c["cells"]:
        key = "".join(f" | {fmt(cell)}" for _, fmt in keys)
        lines.append(f"| {cell['grid']} | {cell['task']}{key} | {score_text(cell['full'])} | "
                     f"{score_text(cell['adapters'])} | {num(cell['ratio_full'])} | {verdict_text(cell)} |")
    return lines


def others_lines(c: Mapping[str, Any]) -> list[str]:
    """Adapters, LoRA and learners at claim 5a's / 5c's cells (information)."""
    lines = ["", ("Adapters, LoRA and learners at the same cells (information, not in the verdict): "
                  "mean ± sd over seeds and the difference to `full` paired by seed [95% CI]."), "",
             "| task | fraction | full | " + " | ".join(f"{m} | {m} − full" for m in OTHER_METHODS) + " |",
             "|---" * (3 + 2 * len(OTHER_METHODS)) + "|"]
    for o in c["others"]:
        m = o["methods"]
        parts = [f"{score_text(m[k]['score'])} | {diff_text(m[k]['vs_full'])}" for k in OTHER_METHODS]
        lines.append(f"| {o['task']} | {o['fraction']:g} | {score_text(m['full']['score'])} | "
                     + " | ".join(parts) + " |")
    return lines


def evidence_lines(c: Mapping[str, Any]) -> list[str]:
    """Every method's score per (task, budget) beside claim 9a (information)."""
    lines = ["", ("Every method per task and budget (information): mean ± sd over seeds; budget in "
                  "seconds from the runs' config.json."), "",
             "| task | budget (epochs) | budget (s) | " + " | ".join(BUDGET_METHODS) + " |",
             "|---" * (3 + len(BUDGET_METHODS)) + "|"]
    for e in c["evidence"]:
        budget_s = "—" if e["budget_s"] is None else f"{e['budget_s']:.1f}"
        scores = " | ".join(score_text(e["methods"][m]["score"]) for m in BUDGET_METHODS)
        lines.append(f"| {e['task']} | {e['epochs_text']} | {budget_s} | {scores} |")
    return lines + machine_lines(c.get("machine"))


def machine_lines(m: Mapping[str, Any] | None) -> list[str]:
    """Claim 9a's budget runs that most likely shared the machine (information)."""
    if not m or not m["recorded"]:
        return []
    flagged = ", ".join(f"`{r['workdir']}` ({r['cpu_share']:.2f})" for r in m["runs"]) or "none"
    return ["", (f"CPU share of the budget runs (CPU seconds per wall second of each run's training "
                 f"loop, evaluations included): median {m['median']:.2f} over {m['recorded']} runs. "
                 f"Runs below {m['factor']:g} of the median, which most likely shared the machine "
                 f"and so trained fewer steps than their budget allows alone: {flagged}.")]


def extra_lines(c: Mapping[str, Any]) -> list[str]:
    """The information a comparison claim carries beside its cells."""
    lines = []
    if c.get("params"):
        lines += learners_params_lines(c)
    if c.get("others") and c["kind"] == "comparison":
        lines += others_lines(c)
    if c.get("evidence"):
        lines += evidence_lines(c)
    return lines


def _ablation_task_lines(t: Mapping[str, Any], reference: str) -> list[str]:
    if t["target"] is None:
        target = "Target: **missing** (no finished full fine-tuning run in the core grid)."
    else:
        full_s = "missing" if t["full_seconds"] is None else f"{t['full_seconds']:.0f} s"
        target = f"Target: full fine-tuning's final dev score, {num(t['target'])}; full reaches it in {full_s}."
    lines = [f"### {t['task']}", "", target, "",
             (f"| setting | grid | priming | nodes | dev score | − {reference} [95% CI] | s to target | "
              "/ full's s |"), "|---|---|---|---|---|---|---|---|"]
    for r in t["settings"]:
        vs = "reference" if r["grid"] == "core" else diff_text(r["vs_reference"])
        lines.append(f"| {r['label']} | {r['grid']} | {r['priming']:g} | {r['select']} | "
                     f"{score_text(r['score'])} | {vs} | {seconds_text(r['time'])} | {num(r['ratio_full'])} |")
    return lines + [""]


def ablation_lines(section: Mapping[str, Any], path: str) -> list[str]:
    lines = ["", "## Learners: priming and node choice", "",
             (f"From `{path}` (configs/grids/learners_ablation.py) and the core grid's `learners` row "
              f"(`{section['reference']}`: primed with full fine-tuning for 20% of the run, then the 10% "
              "of FFN nodes per layer that moved most). Variants: primed, nodes by pretrained weight "
              "magnitude or at random; unprimed (trained from the pretrained weights for the whole run), "
              "magnitude or random. Dev main metric in %; differences paired by seed; seconds to full "
              "fine-tuning's final dev score from the runs' curves (upper bounds at the runs' evaluation "
              "interval, this machine). Information, no verdict.")]
    if not section["present"]:
        lines += ["", f"`{path}` does not exist yet: its settings are **missing**."]
    lines += [""]
    for t in section["tasks"]:
        lines += _ablation_task_lines(t, section["reference"])
    return lines


def claim_table(c: Mapping[str, Any]) -> list[str] | None:
    """The evidence table of claims 8b, 8c, 9b; None for another kind."""
    render = {"params": params_table, "speed": speed_table, "sd_ratio": sd_ratio_table}.get(c["kind"])
    return None if render is None else render(c)

