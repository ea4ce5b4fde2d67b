"""Rank a run's encoder layers by how useful they are to fine-tune, before training (fft.layer_ranking).

  python scripts/rank_layers.py --config=configs/glue.py:task=cola,model=minilm \
      --config.model.pooling=mean --out=results/rankings/cola_gradient.json [--batches=16]

Loads the model and data as `fft train` would for that config (any --config.FIELD=VALUE override,
e.g. --config.data.train_fraction=0.2), fits the head alone on frozen features, measures the
gradients of the first --batches training batches, and writes the ranking JSON that the
`critical` method reads (--config=configs/glue.py:task=cola,method=critical
--config.critical.distances_file=results/rankings/cola_gradient.json). Prints the ranking. The
default --out is results/rankings/<task>_gradient.json. A few minutes on 2 CPU cores for MiniLM.
"""

from __future__ import annotations

import os
import pathlib
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from absl import app, flags
from ml_collections import config_flags

from fft import layer_ranking

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/glue.py[:args]", lock_config=True)
_OUT = flags.DEFINE_string("out", None, "Where to write the ranking JSON (default "
                           "results/rankings/<task>_gradient.json).")
_DEFAULTS = layer_ranking.Settings()
_BATCHES = flags.DEFINE_integer("batches", _DEFAULTS.batches, "Training batches to measure.")
_WARMUP_STEPS = flags.DEFINE_integer("warmup_steps", _DEFAULTS.warmup_steps,
                                     "Full-batch Adam steps fitting the head alone first (0: none).")
_WARMUP_LR = flags.DEFINE_float("warmup_lr", _DEFAULTS.warmup_lr, "Their learning rate.")
_WARMUP_EXAMPLES = flags.DEFINE_integer("warmup_examples", _DEFAULTS.warmup_examples,
                                        "At most this many examples to fit the head on.")


def table(report: dict) -> str:
    """The ranking as text: one row per layer, with the alternative statistics' ranks."""
    alt = {s: {g: i + 1 for i, g in enumerate(order)} for s, order in report["alternatives"].items()}
    head = f"{'rank':>4}  {'layer':<8} {'score':>10} {'grad_norm':>10} {'signal':>10} {'consist':>8}"
    head += "".join(f" {'#' + s:>14}" for s in alt)
    lines = [head]
    for row in report["ranking"]:
        g = row["group"]
        line = (f"{row['rank']:>4}  {g:<8} {row['score']:>10.4g} {row['grad_norm']:>10.4g} "
                f"{row['signal_norm']:>10.4g} {row['consistency']:>8.3f}")
        lines.append(line + "".join(f" {alt[s][g]:>14}" for s in alt))
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    config = _CONFIG.value
    if config is None:
        raise app.UsageError("--config is required")
    settings = layer_ranking.Settings(
        batches=_BATCHES.value, warmup_steps=_WARMUP_STEPS.value, warmup_lr=_WARMUP_LR.value,
        warmup_examples=_WARMUP_EXAMPLES.value,
    )
    out = pathlib.Path(_OUT.value or REPO / "results" / "rankings" / f"{config.task}_gradient.json")
    result = layer_ranking.rank(config, settings)
    report = layer_ranking.write(result, out)
    warm = report["head_warmup"]
    print(f"{report['task']}: {report['model']}; {report['train_examples']} train examples, "
          f"{settings.batches} batches of {report['batch_size']} measured "
          f"(mean loss {report['measured_mean_loss']:.4f})")
    if settings.warmup_steps:
        print(f"head warm-up: kept step {warm['best_step']} of {warm['max_steps']} on "
              f"{warm['fit_examples']} examples; held-out loss {warm['held_before']:.4f} -> "
              f"{warm['held_after']:.4f} ({warm['held_examples']} examples), fit loss "
              f"{warm['fit_before']:.4f} -> {warm['fit_after']:.4f}")
    print(f"statistic: {report['statistic']}")
    print(table(report))
    print(f"ranking: {[r['group'] for r in report['ranking']]} ({report['seconds']:.0f}s); wrote {out}")


if __name__ == "__main__":
    app.run(main)
