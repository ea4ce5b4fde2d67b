"""Issue 16 (b): Doering et al.'s wall-clock comparison. Full fine-tuning, BitFit, adapters, LoRA
and learners on MRPC, CoLA and STS-B at 100% of the data under time budgets of 1/3, 2/3, 1 and 2
epochs of full fine-tuning on this machine, reported on dev.

  python -m fft.sweep configs/grids/time_budget.py   # needs results/selection.json and the core
                                                     # grid's full runs (results/grids/core.json)

A task's budgets come from its core-grid full fine-tuning runs (same setting, 3 epochs): one epoch
costs the fastest of those runs' training seconds / 3 (`selected.full_epoch_seconds`), so the
budgets are E times that for E in EPOCHS. Each run plans its step count from its own measured step time (fft/budget.py) and stops at
its budget; learning rates and options are those chosen on validation data; learners prime for
20% of the budget. Budgets measure time, so these runs must have the machine to themselves: the
sweep runs them one at a time (--jobs 1), and nothing else should run beside it. Order: seed 0 of
every cell first, the shortest budgets first.
"""

import ml_collections

from configs.grids import selected
from configs.grids.lr_selection import POOLING

TASKS = ["mrpc", "cola", "stsb"]
METHODS = ["full", "bitfit", "adapters", "lora", "learners"]
EPOCHS = [1 / 3, 2 / 3, 1.0, 2.0]  # Of full fine-tuning, measured in the core grid.


def budget_label(epochs: float) -> str:
    return {1 / 3: "b1_3ep", 2 / 3: "b2_3ep"}.get(epochs, f"b{epochs:g}ep")


def get_config():
    seconds = {task: selected.full_epoch_seconds(task) for task in TASKS}
    entries = []  # One per (budget, task, method), in the order they run within a seed.
    for epochs in EPOCHS:
        for task in TASKS:
            for method in METHODS:
                overrides = {"time_budget_s": round(epochs * seconds[task], 1), "num_train_steps": 0}
                entries.append(selected.entry(method, label=f"{method}-{budget_label(epochs)}", tasks=[task],
                                              overrides=overrides))
    grid = ml_collections.ConfigDict()
    grid.name = "time_budget"
    grid.base = "model=minilm"
    grid.tasks = TASKS
    grid.methods = entries
    grid.order = ["seed", "method", "task", "lr", "fraction"]
    grid.seeds = [0, 1, 2]
    grid.overrides = {"checkpoint": {"every_steps": 200}, "model": {"pooling": POOLING}}
    return grid
