"""Issue 15, item 6(a): is the FFN output projection's large mask loss learning, or the score init?

  python -m fft.sweep configs/grids/supermask_init.py      # or: fft sweep supermask_init
  python scripts/supermask_init.py                         # -> results/supermask_init.{md,json}

Every supermask run of the magnitude init (scores `|W| / max|W|`, fft/supermask.py) ended with
the FFN output projection (`layer_i/output/dense/kernel`) 3-4x sparser than any other tensor, in
every task; uniform-init runs did not (results/supermask.json). That projection holds outlier
weights (max/median |W| up to 285), so its max-normalised scores start packed against the
threshold. The 'rank' init keeps the magnitude order but spreads every tensor's scores the same
way (at init scale 1, and at 0.1, where the attention tensors' scores sit as densely around the
threshold as under the magnitude init). Same setting as the pooling grid's supermask-mean (initial sparsity 5%, init scale 1, score
lr 1e-3, head lr 1e-3, mean pooling, 3 epochs), one seed, both inits, on CoLA and STS-B (the
two tasks where supermask-mean was far from chance).
"""

import ml_collections

from configs.grids.lr_selection import POOLING


def get_config():
    grid = ml_collections.ConfigDict()
    grid.name = "supermask_init"
    grid.base = "model=minilm"
    grid.tasks = ["cola", "stsb"]
    grid.methods = [
        {"method": "supermask", "label": "supermask", "options": {"init": ["magnitude", "rank"], "init_scale": [1.0],
                                            "initial_sparsity": [0.05], "score_lr": [1e-3]}},
        # Rank at scale 1 puts 12x fewer scores near the threshold than magnitude does in the
        # attention tensors (their max/median |W| is ~10): scale 0.1 matches those densities.
        {"method": "supermask", "label": "supermask-initrank-scale0.1",
         "options": {"init": "rank", "init_scale": 0.1, "initial_sparsity": 0.05, "score_lr": 1e-3}},
    ]
    grid.lrs = [1e-3]
    grid.order = ["seed", "task", "method", "lr", "fraction"]
    grid.seeds = [0]
    grid.overrides = {"checkpoint": {"every_steps": 200}, "model": {"pooling": POOLING}}
    return grid
