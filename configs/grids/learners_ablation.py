"""Issue 16: learners' priming and node choice, on CoLA and STS-B, 3 seeds, reported on dev.

  python -m fft.sweep configs/grids/learners_ablation.py   # needs results/selection.json

The method as chosen (priming with full fine-tuning for 20% of the run, then the 10% of FFN nodes
per layer that moved most) is the core grid's `learners` row (configs/grids/core.py). Here, at
the same learning rate and fraction: primed but nodes chosen by pretrained weight magnitude or at
random, and without priming (magnitude or random nodes, trained from the pretrained weights for
the whole run). Each run evaluates on the core grid's clock (curve.json): every 15 s of training
on CoLA, 60 s on STS-B, so time-to-score compares too. Order: seed 0 of every cell first.
"""

import ml_collections

from configs.grids import selected
from configs.grids.core import FINE_EVERY_S
from configs.grids.lr_selection import POOLING


def variant(label: str, priming: float, select: str) -> dict:
    entry = selected.entry("learners", label=label)
    entry["options"].update({"priming": [priming], "select": [select]})
    return entry


def get_config():
    grid = ml_collections.ConfigDict()
    grid.name = "learners_ablation"
    grid.base = "model=minilm"
    grid.tasks = ["cola", "stsb"]
    grid.methods = [
        variant("primed-magnitude", 0.2, "magnitude"),
        variant("primed-random", 0.2, "random"),
        variant("unprimed-magnitude", 0.0, "magnitude"),
        variant("unprimed-random", 0.0, "random"),
    ]
    grid.order = ["seed", "method", "task", "lr", "fraction"]
    grid.seeds = [0, 1, 2]
    grid.overrides = {"checkpoint": {"every_steps": 200}, "model": {"pooling": POOLING}, "eval_every_s": 60.0}
    grid.task_overrides = {"cola": {"eval_every_s": FINE_EVERY_S}}
    return grid
