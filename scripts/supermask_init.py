"""Which tensors a supermask prunes, and how much of that the score init decides (issue 15, 6a).

  python scripts/supermask_init.py            # -> results/supermask_init.{md,json}
  python scripts/supermask_init.py --grids supermask_init pooling core

Two tables:
  1. Per tensor kind of the packaged model (query, key, value, attention output, FFN in, FFN out;
     mean over the 6 layers): the spread of the pretrained weights (max/median |W|) and, for each
     score init at init scale 1 and 5% initial sparsity, the median distance of the initial scores
     from the threshold, also in Adam steps at score lr 1e-3 (an Adam step moves a score by about
     the learning rate). Computed from `fft.supermask.init_scores` itself.
  2. Every finished supermask run of the given grids (results/grids/<grid>.json and the workdirs
     it lists, which need runs/): task, init, dev score, final sparsity per tensor kind, and the
     ratio of the FFN output projection's sparsity to the mean of the other kinds.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import statistics
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KINDS = {  # Path suffix inside a layer -> short name, in table order.
    "attention/query/kernel": "query",
    "attention/key/kernel": "key",
    "attention/value/kernel": "value",
    "attention/output/dense/kernel": "attn out",
    "intermediate/dense/kernel": "FFN in",
    "output/dense/kernel": "FFN out",
}
_LAYER = re.compile(r"^encoder/layer_(\d+)/(.+)$")
SCORE_LR = 1e-3
INIT_SCALE = 1.0
INITIAL_SPARSITY = 0.05


def kind_of(path: str) -> str | None:
    m = _LAYER.match(path)
    return KINDS.get(m.group(2)) if m else None


def by_kind(values: dict[str, float]) -> dict[str, float]:
    """Mean over layers of per-tensor values, keyed by kind name."""
    groups: dict[str, list[float]] = {}
    for path, v in values.items():
        kind = kind_of(path)
        if kind is not None:
            groups.setdefault(kind, []).append(float(v))
    return {k: statistics.fmean(groups[k]) for k in KINDS.values() if k in groups}


def init_statistics() -> dict:
    """Table 1 from the packaged model's weights and fft.supermask's own init."""
    from fft import supermask as sm
    from fft import tree_paths
    from fft.models import loading

    pretrained = loading.load_pretrained(loading.resolve_model_dir("minilm")).params
    flat = {p: np.asarray(w) for p, w in tree_paths.flatten(pretrained).items() if kind_of(p)}
    spread = by_kind({p: np.abs(w).max() / np.median(np.abs(w)) for p, w in flat.items()})
    inits = {}
    for init in ("uniform", "magnitude", "rank"):
        config = sm.MaskConfig(init=init, init_scale=INIT_SCALE, initial_sparsity=INITIAL_SPARSITY)
        scores = tree_paths.flatten(sm.init_scores(None, tree_paths.unflatten(flat), config))
        median = by_kind({p: float(np.median(np.abs(np.asarray(s) - config.threshold))) for p, s in scores.items()})
        inits[init] = {k: {"median_distance": d, "adam_steps": d / SCORE_LR} for k, d in median.items()}
    return {"max_over_median_abs_w": spread, "inits": inits,
            "settings": {"init_scale": INIT_SCALE, "initial_sparsity": INITIAL_SPARSITY, "score_lr": SCORE_LR}}


def run_rows(grids: list[str], results_dir: pathlib.Path) -> list[dict]:
    rows = []
    for grid in grids:
        path = results_dir / f"{grid}.json"
        if not path.is_file():
            print(f"supermask_init: {path} not found; skipping grid {grid}", file=sys.stderr)
            continue
        table = json.loads(path.read_text())
        for row in table["rows"]:
            if row["method"] != "supermask":
                continue
            for seed, workdir in zip(row["seeds"], row["workdirs"]):
                final = ROOT / workdir / "final_metrics.json"
                if not final.is_file():
                    continue
                metrics = json.loads(final.read_text())
                sparsity = (metrics.get("export") or {}).get("sparsity") or {}
                config = json.loads((ROOT / workdir / "config.json").read_text())
                kinds = by_kind(sparsity)
                others = [v for k, v in kinds.items() if k != "FFN out"]
                value = row["eval"][row["split"]][row["metric"]]["values"][row["seeds"].index(seed)]
                rows.append({
                    "grid": grid, "task": row["task"], "setting": row["setting"], "seed": seed,
                    "init": config["supermask"]["init"], "pooling": config["model"].get("pooling", "cls"),
                    "metric": row["metric"], "split": row["split"], "score": 100.0 * value,
                    "sparsity_total": sparsity.get("total"), "sparsity": kinds,
                    "ffn_out_ratio": kinds["FFN out"] / statistics.fmean(others) if others and "FFN out" in kinds else None,
                    "workdir": workdir,
                })
    return rows


def markdown(stats: dict, rows: list[dict], command: str) -> str:
    kinds = list(KINDS.values())
    s = stats["settings"]
    out = ["# Supermask score init and which tensors lose mask entries", "",
           f"Regenerate: `{command}` (table 2 reads the grids' run folders under runs/).", "",
           "## 1. Where the initial scores sit (packaged all-MiniLM-L6-v2, mean over 6 layers)", "",
           (f"Median |score - threshold| at init scale {s['init_scale']:g} and {s['initial_sparsity']:.0%} "
            f"initial sparsity, and the same in Adam steps at score lr {s['score_lr']:g} (an Adam step "
            "moves a score by about the learning rate, so this is roughly how many consistent steps "
            "flip the median entry)."), "",
           "| | " + " | ".join(kinds) + " |", "|---|" + "---|" * len(kinds),
           "| max/median \\|W\\| | " + " | ".join(f"{stats['max_over_median_abs_w'][k]:.1f}" for k in kinds) + " |"]
    for init, values in stats["inits"].items():
        out.append(f"| {init}: median distance (steps) | " + " | ".join(
            f"{values[k]['median_distance']:.4f} ({values[k]['adam_steps']:.0f})" for k in kinds) + " |")
    out += ["", "## 2. Final sparsity per tensor kind (mean over layers) in finished runs", "",
            "| grid | task | setting | init | pooling | seed | score | total | " + " | ".join(kinds)
            + " | FFN out / others |", "|---|" * 1 + "---|" * (9 + len(kinds))]
    for r in sorted(rows, key=lambda r: (r["task"], r["init"], r["grid"], r["setting"], r["seed"])):
        ratio = "—" if r["ffn_out_ratio"] is None else f"{r['ffn_out_ratio']:.2f}"
        total = "—" if r["sparsity_total"] is None else f"{r['sparsity_total']:.3f}"
        out.append(f"| {r['grid']} | {r['task']} | {r['setting']} | {r['init']} | {r['pooling']} | {r['seed']} | "
                   f"{r['score']:.2f} | {total} | " + " | ".join(
                       f"{r['sparsity'].get(k, float('nan')):.3f}" for k in kinds) + f" | {ratio} |")
    if not rows:
        out.append("| (no finished supermask run in these grids) |" + " |" * (8 + len(kinds)))
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grids", nargs="+", default=["supermask_init", "pooling"])
    parser.add_argument("--results", default=str(ROOT / "results" / "grids"), help="the grids' tables")
    parser.add_argument("--out", default=str(ROOT / "results" / "supermask_init"), help="writes OUT.md, OUT.json")
    args = parser.parse_args(argv)
    stats = init_statistics()
    rows = run_rows(args.grids, pathlib.Path(args.results))
    command = "python scripts/supermask_init.py" + (
        "" if args.grids == parser.get_default("grids") else " --grids " + " ".join(args.grids))
    out = pathlib.Path(args.out)
    out.with_suffix(".md").write_text(markdown(stats, rows, command))
    out.with_suffix(".json").write_text(json.dumps({"init": stats, "runs": rows}, indent=1))
    print(f"wrote {out.with_suffix('.md')} ({len(rows)} runs) and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
