"""The whole claims document: every claim in order, the layer rankings side by side, the pooling
comparison and the protocol's facts, from the grid tables and the options of scripts/claims.py."""

from __future__ import annotations

import math
import pathlib
from collections.abc import Mapping
from typing import Any

from fft.report.baseline import baseline_section
from fft.report.budgets import adapters_spread_claim, bitfit_budget_claim
from fft.report.distances import DistanceStore, distance_claims
from fft.report.learners import (
    ablation_section,
    learners_match_claim,
    learners_params_claim,
    learners_speed_claim,
)
from fft.report.rankings import rankings_section
from fft.report.tables import (
    SEEDS,
    compute_used,
    load_table,
    repo_relative,
    selection_info,
    t_quantile,
    with_full_data_cells,
)
from fft.report.verdicts import (
    adapters_claim,
    core_comparison,
    data_fraction_claims,
    pooling_section,
)

GRIDS = ("core", "data_fraction", "time_budget", "learners_ablation", "pooling")
SELECTION_GRIDS = ("supermask_init", "lr_selection")  # Counted in the compute used, not read otherwise.
RADIYA = "Radiya-Dixit & Wang 2020"


def core_claims(core, args) -> dict[str, list[dict[str, Any]]]:
    """The core grid's comparisons with full fine-tuning, by where they go in the report."""
    return {"layers": [
        core_comparison("3a", "Fine-tuning only the top 3 layers suffices", RADIYA,
                        "top3", "Only the top 3 encoder layers and the head trained", core, args),
        core_comparison("3b", "Fine-tuning only the 2 most critical layers suffices", RADIYA, "critical2",
                        "Only the 2 encoder layers that moved most in the grid's seed-0 full run, and the "
                        "head, trained", core, args),
        core_comparison("3c", "Fine-tuning only the 2 layers the gradient ranking picks suffices",
                        f"{RADIYA} (layer choice: fft/layer_ranking.py)", "critical2-grad",
                        "Only the 2 encoder layers ranked first by the gradient ranking computed before "
                        "training (results/rankings/<task>_gradient.json), and the head, trained", core, args),
        core_comparison("4", "A supermask without weight updates matches full fine-tuning", RADIYA,
                        "supermask", "Binary masks over the frozen pretrained weights (and the head) trained",
                        core, args),
    ], "methods": [
        core_comparison("7", "LoRA matches full fine-tuning", "no seed paper; LoRA README for reference",
                        "lora", "LoRA at the selected rank", core, args),
        core_comparison("7b", "BitFit matches full fine-tuning (core grid, 5 tasks)",
                        "Doering et al. 2024; BitFit paper", "bitfit", "Biases and the head trained",
                        core, args),
        core_comparison("7c", "Adapters match full fine-tuning", "context for Doering et al. 2024",
                        "adapters", "Bottleneck adapters and the head trained", core, args),
    ]}


def _distances_text(store: DistanceStore, no_distances: bool) -> str:
    if no_distances:
        return (f"not loaded from the runs (`--no-distances`); {len(store.cache)} cached in "
                f"`{repo_relative(store.path)}`")
    return (f"from the runs' checkpoints (fft.analyze.run_params vs step 0), cached in "
            f"`{repo_relative(store.path)}`")


def protocol(args, command: str, paths, tables, store: DistanceStore) -> dict[str, Any]:
    out = pathlib.Path(args.out)
    selection_path = pathlib.Path(args.selection)
    splits = sorted({r["split"] for t in (tables["core"], tables["data_fraction"]) if t
                     for r in t["rows"]}) or ["dev"]
    return {
        "command": command,
        "json": repo_relative(with_ext(out, "json")),
        "tables": {n: {"path": repo_relative(p), "present": tables[n] is not None} for n, p in paths.items()},
        "t3": t_quantile(args.confidence, len(SEEDS) - 1),
        "seeds": list(SEEDS), "splits": "/".join(splits), "margin": args.margin,
        "confidence": args.confidence,
        "bounds": {k: getattr(args, k) for k in ("close_rel_l1", "close_angle", "layer_ratio", "sd_factor")},
        "selection_path": repo_relative(selection_path),
        "selection_md": repo_relative(selection_path.with_suffix(".md")),
        "selection": selection_info(selection_path),
        "compute": compute_used({**{n: load_table(pathlib.Path(args.grids) / f"{n}.json") for n in SELECTION_GRIDS},
                                 **tables}),
        "runs_root": repo_relative(pathlib.Path(args.root)) or ".",
        "distances": _distances_text(store, args.no_distances),
        "distance_errors": store.errors,
        "distances_not_loaded": store.skipped,
        "distances_computed": store.computed,
    }


def build(args, command: str) -> dict[str, Any]:
    """The document: {'protocol', 'baseline', 'claims', 'rankings', 'learners_ablation', 'pooling'};
    `command` regenerates it."""
    grids, out = pathlib.Path(args.grids), pathlib.Path(args.out)
    paths = {name: grids / f"{name}.json" for name in GRIDS}
    tables = {name: load_table(path) for name, path in paths.items()}
    tables["data_fraction"] = with_full_data_cells(tables["data_fraction"], tables["core"])
    core = tables["core"]
    store = DistanceStore(out.with_name(out.name + "_distances.json"), compute=not args.no_distances)

    by_place = core_claims(core, args)
    claims = distance_claims(core, store, pathlib.Path(args.fallback_distances), args)
    claims += by_place["layers"] + data_fraction_claims(tables["data_fraction"], args)
    claims += [adapters_claim(core, args)] + by_place["methods"]
    claims += [learners_match_claim(core, args), learners_params_claim(core), learners_speed_claim(core, args),
               bitfit_budget_claim(tables["time_budget"], args),
               adapters_spread_claim(tables["data_fraction"], tables["time_budget"], args)]
    rankings = {"after": "3c", **rankings_section(core, store, pathlib.Path(args.rankings), claims, args)}
    return {"protocol": protocol(args, command, paths, tables, store), "baseline": baseline_section(core),
            "claims": claims,
            "rankings": rankings, "learners_ablation": ablation_section(core, tables["learners_ablation"], args),
            "pooling": pooling_section(tables["pooling"])}


def with_ext(out: pathlib.Path, ext: str) -> pathlib.Path:
    return out.with_name(f"{out.name}.{ext}")


def jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj

