"""Issue 15, part (b): choose each method's hyperparameters on held-out data, never on dev.

  python -m fft.sweep configs/grids/lr_selection.py      # or: fft sweep lr_selection
  python scripts/select_hparams.py                       # -> results/selection.{json,md}

Every run trains on 90% of the train split of RTE and of STS-B and is scored on the other 10%
(`data.validation_fraction=0.1`: stratified, the same split for every method and seed; dev is not
evaluated at all). `scripts/select_hparams.py` picks, per method, the setting with the best mean of
the two tasks' main validation metric (RTE accuracy, STS-B mean of Pearson and Spearman); the
core grid (configs/grids/core.py) then trains that setting on the whole train split of every task
and reports dev. Three learning rates per method around the literature's value (the linear
head alone, a probe on frozen features, gets larger ones); supermasks also cross the initial
sparsity and score learning rate (rank init at scale 0.1: results/supermask_init.md, where the
magnitude init made the FFN output projections lose 3-4x more entries than any other tensor), LoRA
the rank (alpha stays 8); learners (10% of FFN nodes) prime with full fine-tuning for 20% of the
run and keep the nodes that moved most. `critical:2` takes the rate chosen for
`top3` (both fine-tune whole top layers; critical:k needs a finished full run to rank layers).
One seed (0), 3 epochs, the pooling chosen in results/grids/pooling.md.
"""

import ml_collections

POOLING = "mean"  # results/grids/pooling.md (part (a)): see README "Pooling".
TASKS = ["rte", "stsb"]


def get_config():
    grid = ml_collections.ConfigDict()
    grid.name = "lr_selection"
    grid.base = "model=minilm"
    grid.tasks = TASKS
    grid.methods = [
        # Rates past the first three were added where the best was the highest tried
        # (scripts/select_hparams.py flags that); the earlier rates' runs are unchanged.
        {"method": "head", "lrs": [1e-3, 1e-2, 3e-2, 1e-1, 3e-1], "overrides": {"feature_cache": True}},
        {"method": "full", "lrs": [2e-5, 5e-5, 1e-4, 2e-4]},
        {"method": "bitfit", "lrs": [3e-4, 1e-3, 3e-3]},
        {"method": "layers", "label": "top3", "options": {"select": ["top3"]}, "lrs": [3e-5, 1e-4, 3e-4, 1e-3]},
        {"method": "lora", "options": {"rank": [4, 8, 16]}, "lrs": [2e-4, 5e-4, 1e-3, 3e-3, 1e-2]},
        {"method": "adapters", "lrs": [1e-4, 3e-4, 1e-3]},
        {"method": "supermask", "options": {"init": ["rank"], "init_scale": [0.1],
                                            "initial_sparsity": [0.05, 0.1],
                                            "score_lr": [3e-4, 1e-3, 3e-3]},
         "lrs": [1e-3]},
        {"method": "learners", "options": {"priming": [0.2], "select": ["movement"]},
         "lrs": [1e-4, 3e-4, 1e-3]},
    ]
    grid.order = ["seed", "method", "lr", "task", "fraction"]
    grid.seeds = [0]
    grid.overrides = {"checkpoint": {"every_steps": 200}, "model": {"pooling": POOLING},
                      "data": {"validation_fraction": 0.1}}
    return grid
