"""Which parameters need to train? Partitions of the packaged MiniLM on 4 GLUE tasks, and a
data-fraction sweep: the runs of the retired scripts/partition_sweep.py as a grid.

  python -m fft.sweep configs/grids/partition.py [--jobs 1]

Methods (batch 32, max length 128, 3 epochs; SST-2: 1 epoch on a fixed 20% subset):
  full        every weight, lr 5e-5 (scripts/glue_full_ft.py's runs for CoLA, STS-B, RTE)
  bitfit      biases + head, lr 1e-3 (BitFit's range; 5e-5 barely moves biases)
  head        classifier only, lr 1e-3, frozen-prefix feature cache
  top1..top3  top k encoder layers (+ pooler) + head, lr 1e-4, feature cache
  critical2   the 2 layers that moved most in the task's full run (results/distances/<task>),
              lr 1e-4; feature cache where the lower of them is above layer 0 (STS-B: 5, 3; RTE:
              5, 4), none where it is layer 0 (CoLA: 0, 1; SST-2: 0, 3)
  top1_nocache  SST-2 only: top1 without the cache (dropout then also runs in the frozen part)
Data fraction (Doering et al.): full and bitfit on 10/30/50% of CoLA and STS-B (100%: the rows
above). SST-2's 20% (task_overrides) replaces the fraction axis, so its paths read frac0.2.

Differences from the script's runs: today's defaults apply (packed training batches), and the
train fraction's subset is drawn from config.seed as before (seed 0).
"""

import ml_collections

CACHE = {"feature_cache": True}
FRACTION_TASKS = ["cola", "stsb"]


def get_config():
    grid = ml_collections.ConfigDict()
    grid.name = "partition"
    grid.base = "model=minilm"
    grid.tasks = ["cola", "stsb", "rte", "sst2"]  # SST-2 last: the longest, and critical2 reads
    # the distances of its (long) full run.
    distances = "results/distances/{task}/distances.json"
    grid.methods = [
        {"method": "full"},
        {"method": "bitfit"},
        {"method": "head", "overrides": CACHE},
        {"method": "layers", "label": "top1", "options": {"select": ["top1"]}, "overrides": CACHE},
        {"method": "layers", "label": "top2", "options": {"select": ["top2"]}, "overrides": CACHE},
        {"method": "layers", "label": "top3", "options": {"select": ["top3"]}, "overrides": CACHE},
        {"method": "critical", "label": "critical2", "tasks": ["stsb", "rte"],
         "options": {"k": [2], "distances_file": [distances]}, "overrides": CACHE},
        {"method": "critical", "label": "critical2", "tasks": ["cola", "sst2"],
         "options": {"k": [2], "distances_file": [distances]}},
        {"method": "layers", "label": "top1_nocache", "tasks": ["sst2"], "options": {"select": ["top1"]}},
        {"method": "full", "tasks": FRACTION_TASKS, "fractions": [0.1, 0.3, 0.5]},
        {"method": "bitfit", "tasks": FRACTION_TASKS, "fractions": [0.1, 0.3, 0.5]},
    ]
    grid.lrs = {"full": [5e-5], "bitfit": [1e-3], "head": [1e-3], "layers": [1e-4], "critical": [1e-4]}
    grid.seeds = [0]
    grid.fractions = [1.0]
    grid.overrides = {"checkpoint": {"every_steps": 200}, "model": {"pooling": "cls"}}  # As the retired script ran.
    grid.task_overrides = {"sst2": {"num_epochs": 1.0, "data": {"train_fraction": 0.2}}}
    return grid
