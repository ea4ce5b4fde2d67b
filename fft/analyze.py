"""Reports how far a fine-tuned model moved from its pretrained weights, per layer.

Writes, into ``--out_dir``:
  distances.csv   one row per group (embeddings, layer_0 ..., pooler, head) and the total;
  distances.json  groups, sub-layer groups (attention / ffn halves), every leaf, the total, the
                  ranking of layers by relative L1 distance and the most-moved layers;
  layers.png      the paper-style figure: relative L1 distance and angle per group.

Usage:
  python -m fft.analyze --run=runs/full_ft/cola --out_dir=results/distances/cola  # vs its step 0
  python -m fft.analyze --pretrained=runs/a --finetuned=runs/b --out_dir=/tmp/ab  # two runs
  python -m fft.analyze --pretrained=pre.npz --finetuned=ft.safetensors --out_dir=/tmp/dist
  python -m fft.analyze --demo --out_dir=/tmp/dist   # synthetic BERT-shaped pair, no files read

Inputs are a run's workdir (its latest checkpoint, merged with the weights it kept frozen) or flat
files of '/'-keyed arrays (.npz or .safetensors). With ``--run``, the reference is the run's own
step-0 parameters: the pretrained encoder plus the head initialised from the run's seed.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import pathlib
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from fft import distances, errors

PathLike = str | os.PathLike
_TABLE_COLUMNS = ("l1", "l2", "linf", "rel_l1", "rel_l2", "cosine", "angle_deg", "frac_changed")
_NOT_PLOTTED = (distances.TOTAL, "head", "other")


class InputError(errors.FftError, FileNotFoundError, ValueError):
    """A file or run given to the analysis is missing or of an unknown kind."""


def load_params(path: PathLike) -> dict[str, Any]:
    """Loads a parameter tree as a flat ``{'/'-joined path: array}`` dict.

    Args:
      path: a run's workdir (config.json + checkpoints/; gives the latest checkpoint's full
        parameters), or a ``.npz`` / ``.safetensors`` file keyed by '/'-joined parameter paths.

    Returns:
      The flat dict; :mod:`fft.distances` accepts it like the nested flax tree.

    Raises:
      FileNotFoundError: a missing path, or a directory that is not a run's workdir.
      ValueError: for any other file type.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir():
        return run_params(path)[1]
    if path.suffix == ".npz":
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    if path.suffix == ".safetensors":
        from safetensors.flax import load_file  # keeps bf16 leaves as bf16

        return dict(load_file(str(path)))
    raise InputError(f"{path}: expected a .npz or .safetensors file or a checkpoint directory")


def run_params(workdir: PathLike) -> tuple[dict[str, Any], dict[str, Any], int]:
    """A run's step-0 and latest-checkpoint parameters, both complete and flat.

    The step-0 tree is rebuilt from the run's config.json (pretrained weights + head from the
    seed); leaves the run did not train are taken from it.

    Returns:
      (initial, final, step of the checkpoint).
    """
    from fft import checkpoint, train  # Heavy imports (models, data) only when a run is read.

    workdir = pathlib.Path(workdir)
    if not (workdir / "config.json").is_file():
        raise InputError(f"{workdir}: no config.json; expected a run's workdir")
    config = train.load_run_config(workdir)
    state, step = checkpoint.load_state_dict(workdir)
    initial, final = train.task_params(config, state["params"])
    return distances.flatten(initial), distances.flatten(final), step


def bert_shapes(
    num_layers: int = 12,
    hidden: int = 768,
    intermediate: int = 3072,
    vocab: int = 30522,
    max_positions: int = 512,
    num_labels: int = 2,
) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of a BERT sequence classifier, named as in docs/CONTRACT.md."""
    h = hidden
    shapes = {
        "embeddings/word_embeddings/embedding": (vocab, h),
        "embeddings/position_embeddings/embedding": (max_positions, h),
        "embeddings/token_type_embeddings/embedding": (2, h),
        "embeddings/layer_norm/scale": (h,),
        "embeddings/layer_norm/bias": (h,),
    }
    dense = {"kernel": (h, h), "bias": (h,)}
    norm = {"scale": (h,), "bias": (h,)}
    for i in range(num_layers):
        layer = {
            **{
                f"attention/{n}/{k}": s for n in ("query", "key", "value") for k, s in dense.items()
            },
            **{f"attention/output/dense/{k}": s for k, s in dense.items()},
            **{f"attention/output/layer_norm/{k}": s for k, s in norm.items()},
            "intermediate/dense/kernel": (h, intermediate),
            "intermediate/dense/bias": (intermediate,),
            "output/dense/kernel": (intermediate, h),
            "output/dense/bias": (h,),
            **{f"output/layer_norm/{k}": s for k, s in norm.items()},
        }
        shapes.update({f"encoder/layer_{i}/{k}": s for k, s in layer.items()})
    shapes.update({f"pooler/dense/{k}": s for k, s in dense.items()})
    shapes.update({"classifier/kernel": (h, num_labels), "classifier/bias": (num_labels,)})
    return shapes


def synthetic_pair(
    shapes: Mapping[str, tuple[int, ...]], seed: int = 0, scale: float = 1e-3
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A random 'pretrained' tree and a 'fine-tuned' copy whose noise grows with layer depth.

    Weights are N(0, 0.02) (layer-norm scales 1 + that); the fine-tuning noise is N(0, 0.02 * s)
    with s = ``scale`` for embeddings, ``scale * (i + 2)`` for ``layer_i``, ``scale * (L + 2)``
    for the pooler and ``scale * 100 * L`` for the head. For demos and tests only.
    """
    rng = np.random.default_rng(seed)
    layer = {p: int(m.group(1)) for p in shapes if (m := re.match(r"encoder/layer_(\d+)/", p))}
    num_layers = 1 + max(layer.values(), default=-1)
    top = {"embeddings": 1, "pooler": num_layers + 2}
    pre, ft = {}, {}
    for path, shape in shapes.items():
        w = rng.normal(0.0, 0.02, shape).astype(np.float32)
        if path.endswith("layer_norm/scale"):
            w += 1.0
        depth = layer[path] + 2 if path in layer else top.get(path.split("/")[0], 100 * num_layers)
        pre[path] = w
        ft[path] = w + rng.normal(0.0, 0.02 * scale * depth, shape).astype(np.float32)
    return pre, ft


def distance_table_rows(grouped: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row of Python floats per group: ``{'group', <measures>..., 'angle_deg'}``."""
    rows = []
    for name, vals in grouped.items():
        row = {"group": name, **{m: float(v) for m, v in vals.items()}}
        row["angle_deg"] = math.degrees(row["angle"])
        rows.append(row)
    return rows


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] = _TABLE_COLUMNS) -> str:
    """Aligns ``rows`` into a text table (4 significant digits)."""
    cells = [["group", *columns]]
    cells += [[str(r["group"]), *(f"{r[c]:.4g}" for c in columns)] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
        for row in cells
    ]
    return "\n".join(lines)


def write_csv(rows: Sequence[Mapping[str, Any]], path: PathLike) -> None:
    """Writes rows of dicts as CSV; the columns are the keys of the first row, in order."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["group"])
        writer.writeheader()
        writer.writerows(rows)


def write_json(obj: Any, path: PathLike) -> None:
    """Writes strict JSON (arrays become floats, non-finite numbers null)."""
    with open(path, "w") as f:
        json.dump(distances.to_jsonable(obj), f, indent=2, allow_nan=False)
        f.write("\n")


def plot_layers(
    grouped: Mapping[str, Mapping[str, Any]],
    path: PathLike,
    title: str = "",
    groups: Sequence[str] | None = None,
) -> None:
    """Draws relative L1 distance and angle (degrees) per group, side by side, into a PNG.

    Args:
      grouped: a :func:`fft.distances.grouped` table (model order).
      path: where to write the figure.
      title: figure title.
      groups: groups to draw, in order; default every group except total, head and other (the
        freshly initialised head would dwarf the encoder).
    """
    rows = {r["group"]: r for r in distance_table_rows(grouped)}
    names = list(groups) if groups is not None else [g for g in rows if g not in _NOT_PLOTTED]
    x = np.arange(len(names))
    colors = ["tab:blue" if n.startswith("layer_") else "tab:gray" for n in names]
    panels = (
        ("rel_l1", r"relative L1 distance  $\|\theta_{ft}-\theta_{pre}\|_1 / \|\theta_{pre}\|_1$"),
        ("angle_deg", r"angle$(\theta_{ft}, \theta_{pre})$  (degrees)"),
    )
    fig = Figure(figsize=(max(10.0, 0.55 * len(names) + 4), 4.2))  # Agg canvas, no pyplot state
    axes = fig.subplots(1, 2)
    for ax, (key, label) in zip(axes, panels):
        y = np.array([rows[n][key] for n in names], dtype=float)
        ax.bar(x, np.where(np.isfinite(y), y, 0.0), color=colors, alpha=0.35, width=0.7)
        ax.plot(x, y, "o-", color="tab:blue", markersize=4, linewidth=1)
        ax.set_xticks(x, names, rotation=45, ha="right")
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
    axes[0].set_title("distance from pretrained")
    axes[1].set_title("angle to pretrained")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_report(
    pre: Any, ft: Any, out_dir: PathLike, tol: distances.Tol, top_k: int = 3, title: str = ""
) -> dict[str, Any]:
    """Computes every table, writes the three files into ``out_dir`` and returns the report."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = distances.grouped(pre, ft, distances.DEFAULT_LAYER_GROUPS, tol)
    ranking = distances.rank_layers(groups, "rel_l1", include=r"layer_\d+")
    report = {
        "tol": tol._asdict(),
        "groups": groups,
        "sublayers": distances.grouped(pre, ft, distances.DEFAULT_SUBLAYER_GROUPS, tol),
        "leaves": distances.per_leaf(pre, ft, tol),
        "total": groups[distances.TOTAL],
        "ranking": ranking,
        "critical_layers": distances.critical_layers(ranking, min(top_k, len(ranking))),
    }
    rows = distance_table_rows(groups)
    write_csv(rows, out_dir / "distances.csv")
    write_json(report, out_dir / "distances.json")
    plot_layers(groups, out_dir / "layers.png", title)
    report["table"] = format_table(rows)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Parses flags, loads both trees, writes the report and prints the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="a run's workdir: compare its latest checkpoint with step 0")
    parser.add_argument("--pretrained", help=".npz/.safetensors file or a run's workdir")
    parser.add_argument("--finetuned", help=".npz/.safetensors file or a run's workdir")
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--atol", type=float, default=0.0, help="frac_changed tolerance")
    parser.add_argument("--rtol", type=float, default=0.0, help="frac_changed tolerance")
    parser.add_argument("--top_k", type=int, default=3, help="how many critical layers to list")
    parser.add_argument("--demo", action="store_true", help="use a synthetic BERT-shaped pair")
    args = parser.parse_args(argv)
    if args.demo:
        pre, ft = synthetic_pair(
            bert_shapes(num_layers=12, hidden=64, intermediate=256, vocab=1000)
        )
        title = "synthetic BERT pair (noise grows with depth)"
    elif args.run:
        pre, ft, step = run_params(args.run)
        title = f"{pathlib.Path(args.run).name}: step {step} vs pretrained (step 0)"
    elif args.pretrained and args.finetuned:
        pre, ft = load_params(args.pretrained), load_params(args.finetuned)
        title = f"{pathlib.Path(args.finetuned).name} vs {pathlib.Path(args.pretrained).name}"
    else:
        parser.error("give --run, or --pretrained and --finetuned, or --demo")
    report = write_report(
        pre, ft, args.out_dir, distances.Tol(args.atol, args.rtol), args.top_k, title
    )
    print(report["table"])
    print(f"most-moved layers (rel_l1): {', '.join(report['critical_layers'])}")
    print(f"wrote distances.csv, distances.json, layers.png to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
