"""A smoke-test grid: the tiny random-init model, 2 tasks x 2 methods x 2 seeds (8 short runs).

  python -m fft.sweep configs/grids/tiny.py --jobs 2     # about a minute on 2 CPU cores
  python -m fft.sweep tiny --dry-run                     # the 8 commands

The comments below give the grid format field by field; fft/sweep/__init__.py's docstring has all of it.
"""

import ml_collections


def get_config():
    grid = ml_collections.ConfigDict()
    grid.name = "tiny"  # Workdirs: <root>/tiny/<task>/<label>/lr<lr>/frac<fraction>/seed<seed>.
    grid.base = "tiny"  # Appended to configs/glue.py:task=...,method=... (e.g. "model=minilm").
    grid.tasks = ["rte", "stsb"]  # Classification and regression.
    # Each entry: a method, its options crossed ({option: [values]}); optional label, overrides,
    # tasks, lrs, fractions of its own. Paths name the options: lora-rank4.
    grid.methods = [
        {"method": "full"},
        {"method": "lora", "options": {"rank": [4]}},
    ]
    grid.lrs = {"full": [1e-3], "lora": [5e-3]}  # Per entry label or method; or one list for all.
    # Axes order, outermost first: seed 0 of every cell runs before any seed 1.
    grid.order = ["seed", "task", "method", "lr", "fraction"]
    grid.seeds = [0, 1]
    grid.fractions = [1.0]  # config.data.train_fraction.
    # Every run: a validation split carved from train (the dev set is never scored), short runs.
    grid.overrides = {
        "num_train_steps": 4,
        "eval_every_steps": 0,
        "checkpoint": {"every_steps": 2},
        "data": {"validation_fraction": 0.1},
    }
    # Per task: {task: {field: value}}.
    grid.task_overrides = {"stsb": {"data": {"max_eval_examples": 32}}}
    return grid
