"""The claims document (fft.report.build) as Markdown: the protocol, the summary, one section per
claim with its evidence table, the layer rankings side by side, the learners ablation (tables of
claims 8a-9b and that section: fft.report.markdown_methods), and the pooling comparison."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from fft.report.baseline import baseline_lines
from fft.report.markdown_methods import ablation_lines, claim_table, extra_lines
from fft.report.tables import SEEDS
from fft.report.text import diff_text, key_columns, score_text
from fft.report.text import num as _num
from fft.report.text import sig as _sig
from fft.report.text import verdict_text as _verdict_text
from fft.report.verdicts import MISSING, RULES_TEXT


def comparison_table(c: Mapping[str, Any]) -> list[str]:
    keys = key_columns(c["cells"])
    head = "| task" + "".join(f" | {name}" for name, _ in keys) + f" | pairs | {c['baseline']} | {c['method']} | "
    head += f"{c['method']} − {c['baseline']} [95% CI] | verdict |"
    lines = [head, "|---" * (6 + len(keys)) + "|"]
    for cell in c["cells"]:
        pairs = cell["diff"]["n"] if cell["diff"] else 0
        key = "".join(f" | {fmt(cell)}" for _, fmt in keys)
        lines.append(f"| {cell['task']}{key} | {pairs} | {score_text(cell['baseline'])} | "
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


def counts_text(k: Mapping[str, int]) -> str:
    return ", ".join(f"{v} {name}" for name, v in k.items() if v) or "no cells"


def _tables_text(tables: Mapping[str, Mapping[str, Any]]) -> str:
    return "; ".join(f"`{name}`: " + (f"`{t['path']}`" if t["present"] else
                                       f"**missing** (`{t['path']}` does not exist yet)")
                     for name, t in tables.items())


def _hours(seconds: float | None) -> str:
    return "wall time not recorded" if seconds is None else f"{seconds / 3600:.2f} h of wall time"


def _compute_text(comp: Mapping[str, Any]) -> str:
    grids = "; ".join(f"{g}: {v['runs']}/{v['planned']} runs, {_hours(v.get('wall_seconds'))}, "
                      f"{v['train_seconds']:.0f} s of training" for g, v in comp["grids"].items()) or "no table"
    return (f"- Compute behind this report, on this machine (2 CPU cores, one run at a time): {comp['runs']} "
            f"finished runs, {_hours(comp.get('wall_seconds'))} ({comp['train_seconds']:.0f} s of training, "
            f"without evaluation and compilation) in all; per grid: {grids}. Wall time counts loading, "
            f"compiling, evaluating and priming; the selection grids are counted here too.")


def protocol_lines(p: Mapping[str, Any], args) -> list[str]:
    return [
        "## Protocol",
        "",
        ("- Model: the packaged all-MiniLM-L6-v2 (6 layers, 384 wide), GLUE tasks; runs from the grids "
         "`core` (configs/grids/core.py), `data_fraction` (configs/grids/data_fraction.py), "
         "`time_budget` (configs/grids/time_budget.py) and `learners_ablation` "
         "(configs/grids/learners_ablation.py)."),
        f"- Tables: {_tables_text(p['tables'])}.",
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
        ("- Time to a score (claim 8c, the learners section): each run's curve.json (workdirs "
         + ("relative to the repository root" if p["runs_root"] == "." else f"under `{p['runs_root']}`")
         + "), evaluated every 60 s of training (the core grid's full and learners runs on CoLA every "
         "15 s): training seconds on this machine, upper bounds at that interval; a run without its curve counts as missing."),
        _compute_text(p["compute"]),
        ("- Verdicts: 'holds', 'fails', 'inconclusive' (the data do not decide), 'missing' (no "
         "finished run on a side, or no table). Missing data is never filled in."),
        f"- {RULES_TEXT}",
    ]


def claim_lines(c: Mapping[str, Any], args) -> list[str]:
    lines = ["", f"## {c['id']}. {c['title']} — {c['source']}", "",
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
    else:
        lines += claim_table(c) or []
    lines += extra_lines(c)
    lines += ["", f"**Overall: {c['verdict']}** ({counts_text(c['counts'])})."]
    if c.get("fallback"):
        lines += ["", f"Fallback, {c['fallback_note']}:", ""]
        table = closeness_table(c["fallback"], args) if c["kind"] == "closeness" else layer_table(c["fallback"])
        lines += table
    return lines


def _layers_text(layers: Sequence[int] | None) -> str:
    return "missing" if layers is None else ", ".join(map(str, layers))


def _pick_text(r: Mapping[str, Any]) -> str:
    text = _layers_text(r["layers"])
    return text + (f" ({r['note']})" if r.get("note") else "")


def _source_text(r: Mapping[str, Any]) -> str:
    if not r.get("source"):
        return "—"
    return f"`{r['source']}`" + (" (planned)" if r["planned"] else "")


def _trained_text(trained: Mapping[Any, Sequence[int]]) -> str:
    """'4, 5 (seeds 0, 1, 2)' per distinct set of layers the runs' deltas hold; '—' for none."""
    groups: dict[str, list[str]] = {}
    for seed in sorted(trained, key=int):
        groups.setdefault(_layers_text(trained[seed]), []).append(str(seed))
    return "; ".join(f"{layers} (seed{'s' if len(s) > 1 else ''} {', '.join(s)})"
                     for layers, s in groups.items()) or "—"


def _gradient_vs_distance_text(g: Mapping[str, Any]) -> str:
    d = g["diff"]
    text = "" if d is None or not d["n"] else f"{diff_text(d)}, {d['n']} pair{'s' if d['n'] > 1 else ''}: "
    return text + f"**{g['reading']}**" + (f" ({g['note']})" if g["note"] else "")


def ranking_task_lines(t: Mapping[str, Any]) -> list[str]:
    lines = [f"### {t['task']}", "",
             ("| ranking | method | layers picked | from | trained (runs' deltas) | dev score | "
              "− full [95% CI] | vs full |"), "|---|---|---|---|---|---|---|---|",
             f"| full fine-tuning | `full` | all | — | — | {score_text(t['full'])} | — | — |"]
    for r in t["rankings"].values():
        verdict = _verdict_text({"verdict": r["verdict"], "note": r["verdict_note"]})
        lines.append(f"| {r['label']} | `{r['setting']}` | {_pick_text(r)} | {_source_text(r)} | "
                     f"{_trained_text(r['trained'])} | {score_text(r['score'])} | "
                     f"{diff_text(r['vs_full'])} | claim {r['claim']}: {verdict} |")
    shared = t["shared_layers"]
    shared_text = "unknown" if shared is None else (_layers_text(shared) or "none")
    summary = (f"Layers both 2-layer rankings pick: {shared_text}. Gradient − distance "
               f"(`critical2-grad` − `critical2`, paired by seed): "
               f"{_gradient_vs_distance_text(t['gradient_vs_distance'])}.")
    return lines + ["", summary, ""]


def rankings_lines(section: Mapping[str, Any]) -> list[str]:
    readings = ", ".join(f"{n} {r}" for r, n in section["readings"].items() if n)
    lines = ["", "## 3a–3c side by side: which layers each ranking picks", "",
             ("Per core task, the layers (numbered 0, lowest, to 5, top; in ranking order) each "
              "ranking picks and the runs that trained them: `critical2`, the 2 layers that moved "
              "most (rel_l1) in the core grid's seed-0 full fine-tuning run of the task (the distance "
              "ranking); `critical2-grad`, the first 2 of the gradient ranking computed before any "
              f"training (fft/layer_ranking.py, `{section['rankings_dir']}/<task>_gradient.json`); "
              "`top3`, the top 3 layers. 'layers picked' ranks what the method's runs were given "
              "('(planned)': no run of the method yet, so what the grid would give it); 'trained' "
              "lists the encoder layers the finished runs' task_delta.safetensors hold. Scores and differences as in claims 3a–3c. "
              "Gradient − distance reads 'gradient higher' / 'distance higher' when its interval "
              "excludes 0, else 'no difference shown' (information, no verdict)."), "",
             f"Gradient − distance over the {len(section['tasks'])} tasks: {readings}.", ""]
    for t in section["tasks"]:
        lines += ranking_task_lines(t)
    return lines


def markdown(doc: Mapping[str, Any], args) -> str:
    p = doc["protocol"]
    lines = ["# The papers' claims, tested on all-MiniLM-L6-v2", "",
             (f"Regenerate: `{p['command']}`. Claims from /work/shared/PAPERS.md; per-cell numbers also "
              f"in `{p['json']}`."), ""]
    lines += protocol_lines(p, args)
    lines += ["", "## Summary", "", "| claim | paper | verdict | cells |", "|---|---|---|---|"]
    for c in doc["claims"]:
        lines.append(f"| {c['id']}. {c['title']} | {c['source']} | **{c['verdict']}** | {counts_text(c['counts'])} |")
    lines += baseline_lines(doc["baseline"], p["tables"]["core"]["path"])
    for c in doc["claims"]:
        lines += claim_lines(c, args)
        if c["id"] == doc["rankings"]["after"]:
            lines += rankings_lines(doc["rankings"])
        if c["id"] == doc["learners_ablation"]["after"]:
            lines += ablation_lines(doc["learners_ablation"], p["tables"]["learners_ablation"]["path"])
    lines += [""] + pooling_lines(doc["pooling"], doc["protocol"]["tables"]["pooling"]["path"])
    notes = doc["protocol"].get("distance_errors") or {}
    if notes:
        lines += ["## Runs whose distances could not be read", ""]
        lines += [f"- `{w}`: {e}" for w, e in notes.items()] + [""]
    return "\n".join(lines).rstrip("\n") + "\n"
