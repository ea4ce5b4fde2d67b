"""Issue 15, part (d), and issue 16 (a): Doering et al.'s data-fraction comparison, BitFit against
full fine-tuning at 10, 30, 50 and 100% of the train split of MRPC, CoLA and STS-B, 3 seeds, on
dev; then adapters (their method), LoRA and learners on the same points.

  python -m fft.sweep configs/grids/data_fraction.py    # needs results/selection.json

Learning rates are those chosen on validation data for the whole train split (results/selection.json).
The subset of a fraction is drawn with the run's seed, so methods are paired by seed on the same
examples. The 100% cells are not run here: they are the core grid's runs of the same setting
(configs/grids/core.py: same methods, learning rates, seeds, epochs and pooling; it also evaluates
every 60 s, or 15 s, which does not change training), and the reports take them from there. Order: method
by method (full and BitFit, the issue-15 rows, first), within a method
seed 0 of every cell first, the smallest fractions first within a seed.
"""

import ml_collections

from configs.grids import selected
from configs.grids.lr_selection import POOLING


def get_config():
    grid = ml_collections.ConfigDict()
    grid.name = "data_fraction"
    grid.base = "model=minilm"
    grid.tasks = ["mrpc", "cola", "stsb"]
    grid.methods = [selected.entry(m) for m in ("full", "bitfit", "adapters", "lora", "learners")]
    grid.order = ["method", "seed", "fraction", "task", "lr"]
    grid.seeds = [0, 1, 2]
    grid.fractions = [0.1, 0.3, 0.5]  # 1.0: the core grid's runs.
    grid.overrides = {"checkpoint": {"every_steps": 200}, "model": {"pooling": POOLING}}
    return grid
