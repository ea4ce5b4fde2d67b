"""Which pooling the packaged MiniLM classifies from: [CLS] through the pooler ('cls', BERT's
classification layout) or the mean of the real tokens ('mean', how all-MiniLM-L6-v2 was trained as
a sentence-transformer). Issue 15, part (a): the methods that keep the encoder frozen or nearly so,
where the pooled vector matters most, with both poolings, one seed.

  python -m fft.sweep configs/grids/pooling.py        # or: fft sweep pooling

Methods (the lr axis is the AdamW learning rate of the trained weights / the head):
  head-<p>       the classifier alone (lr 1e-3); the frozen encoder is cached (feature_cache).
  bitfit-<p>     biases + classifier (lr 1e-3, as in results/partitions.md).
  supermask-<p>  masks over the attention and FFN kernels of all layers, scores ranked by |W|
                 (initial sparsity 5%, score lr 1e-3), head lr 1e-3; with 'cls' the pooler trains
                 with the classifier (the best supermask setting of results/supermask.md), with
                 'mean' there is no pooler.
Reported on dev (no selection happens here: every setting is fixed in advance). 3 epochs; SST-2
1 epoch on a 20% subset. Order: method before task, cheapest method first.
"""

import ml_collections

TASKS = ["cola", "stsb", "rte", "mrpc", "sst2"]


def entry(method: str, pooling: str, **extra) -> dict:
    overrides = {"model": {"pooling": pooling}}
    overrides.update(extra.pop("overrides", {}))
    return {"method": method, "label": f"{method}-{pooling}", "overrides": overrides, **extra}


def supermask(pooling: str) -> dict:
    options = {"init": ["magnitude"], "init_scale": [1.0], "initial_sparsity": [0.05], "score_lr": [1e-3]}
    if pooling == "cls":
        options["head_keys"] = ["pooler;classifier"]
    return entry("supermask", pooling, options=options)


def get_config():
    grid = ml_collections.ConfigDict()
    grid.name = "pooling"
    grid.base = "model=minilm"
    grid.tasks = TASKS
    grid.methods = [
        entry("head", "cls", overrides={"feature_cache": True}),
        entry("head", "mean", overrides={"feature_cache": True}),
        entry("bitfit", "cls"),
        entry("bitfit", "mean"),
        supermask("cls"),
        supermask("mean"),
    ]
    grid.lrs = [1e-3]
    grid.order = ["seed", "method", "task", "lr", "fraction"]
    grid.seeds = [0]
    grid.overrides = {"checkpoint": {"every_steps": 200}}
    grid.task_overrides = {"sst2": {"num_epochs": 1.0, "data": {"train_fraction": 0.2}}}
    return grid
