"""Supermask fine-tuning of the packaged MiniLM (binary masks over frozen weights, no weight
updates): the 25 runs of the retired scripts/supermask_sweep.py as a grid.

  python -m fft.sweep configs/grids/supermask.py

Masks cover the attention and feed-forward kernels of all 6 encoder layers (threshold mode). An
entry's label reads s<initial sparsity>-<score init>-score<score lr>[-pooler][-ep<epochs>]:
score init 'uniform' (within 0.05 of the threshold, init_scale 0.05) or 'magnitude' (ranked by
|W|, init_scale 1); '-pooler' trains BERT's pooler with the classifier (head_keys), otherwise the
classifier alone trains. The head's AdamW learning rate is the lr axis (1e-4 for the first four
runs, 1e-3 after). 3 epochs; SST-2 1 epoch on a fixed 20% subset. Entries run in the script's
order (order: method before task).
"""

import ml_collections

TASKS = ["cola", "sst2", "stsb", "rte"]


def _short(x: float) -> str:
    """1e-3 -> '1e-3', 0.005 -> '5e-3'."""
    mantissa, exponent = f"{x:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def run(tasks, sparsity, score_lr, head_lr, pooler=False, magnitude=False, epochs=0.0):
    """One entry: the script's Run(task, sparsity, score_lr, head_lr, head, init, epochs)."""
    label = f"s{sparsity:g}-{'magnitude' if magnitude else 'uniform'}-score{_short(score_lr)}"
    options = {"initial_sparsity": [sparsity], "score_lr": [score_lr]}
    if pooler:
        label += "-pooler"
        options["head_keys"] = ["pooler;classifier"]
    if magnitude:
        options["init"] = ["magnitude"]
        options["init_scale"] = [1.0]
    entry = {"method": "supermask", "label": label, "tasks": tasks, "options": options, "lrs": [head_lr]}
    if epochs:
        entry["label"] = f"{label}-ep{epochs:g}"
        entry["overrides"] = {"num_epochs": epochs}
    return entry


def get_config():
    grid = ml_collections.ConfigDict()
    grid.name = "supermask"
    grid.base = "model=minilm"
    grid.tasks = TASKS
    grid.methods = [
        # Classifier at lr 1e-4 (full fine-tuning's scale): CoLA, STS-B and RTE stayed at chance.
        run(TASKS, 0.05, 1e-3, 1e-4),
        run(["cola"], 0.05, 5e-3, 1e-3),
        run(["stsb"], 0.05, 1e-3, 1e-3),
        # The pooler trained with the classifier (DistilBERT's layout).
        run(["cola", "stsb", "rte"], 0.05, 1e-3, 1e-3, pooler=True),
        # Scores ranked by |W|: STS-B learns, SST-2 improves; then 10% and 1% initial sparsity.
        run(TASKS, 0.05, 1e-3, 1e-3, pooler=True, magnitude=True),
        run(TASKS, 0.10, 1e-3, 1e-3, pooler=True, magnitude=True),
        run(TASKS, 0.01, 1e-3, 1e-3, pooler=True, magnitude=True),
        run(["stsb"], 0.05, 1e-3, 1e-3, magnitude=True),
        # Score lr 1e-2 for the two tasks that stayed at chance; more epochs for RTE.
        run(["rte", "cola"], 0.05, 1e-2, 1e-3, pooler=True, magnitude=True),
        run(["rte"], 0.10, 1e-3, 1e-3, pooler=True, magnitude=True, epochs=8.0),
    ]
    grid.order = ["seed", "method", "task", "lr", "fraction"]
    grid.seeds = [0]
    grid.overrides = {"checkpoint": {"every_steps": 200}, "model": {"pooling": "cls"}}  # As the retired script ran.
    grid.task_overrides = {"sst2": {"num_epochs": 1.0, "data": {"train_fraction": 0.2}}}
    return grid
