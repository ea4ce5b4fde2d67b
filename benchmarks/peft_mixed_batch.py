"""PEFT's side of benchmarks/multitask_bench.py: T LoRA adapters on one BERT, mixed-batch inference.

  /work/venv-peft/bin/python benchmarks/peft_mixed_batch.py --model_dir=DIR --ids=ids.npy

Runs under a Python with torch, transformers and peft (not the project venv; it imports nothing
from fft). Builds `transformers.BertForSequenceClassification` (2 labels) from `--model_dir`,
wraps it with `peft.get_peft_model` (LoRA r=8, alpha=8 on query and value, task_type SEQ_CLS, so
each adapter also has its own copy of the classifier) and adds `--tasks` adapters, each with
B ~ N(0, 0.02) and a random classifier so they differ. In eval mode, under `torch.no_grad`, on
`--threads` threads, it times one forward of the batch (`--ids`: [batch, seq] int ids, attention
mask all ones, token types zero) with `adapter_names=[...]`, one name per example (PEFT's
mixed-batch inference), for three task mixes: every example task 0 (`one`), tasks 0/1 alternating
(`two`), tasks round-robin (`all`); then, as PEFT's best case, one adapter merged into the base
model (`merge_and_unload`) running the whole batch without LoRA layers (`merged_one`). Each time is
the median of `--repeats` calls after `--warmup` untimed calls, the mixes alternating call by call.
Prints one JSON line: {"ex_s": {mix: examples/s}, "seconds": {...}, versions, ...}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import peft
import torch
import transformers


def mixes(batch: int, tasks: int) -> dict[str, list[int]]:
    """Task id per example of each mix (the same mixes as multitask_bench.py)."""
    return {
        "one": [0] * batch,
        "two": [i % 2 for i in range(batch)],
        "all": [i % tasks for i in range(batch)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--ids", required=True, help=".npy file of input ids [batch, seq]")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ids = torch.from_numpy(np.load(args.ids).astype(np.int64))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
              "token_type_ids": torch.zeros_like(ids)}
    batch = ids.shape[0]

    base = transformers.BertForSequenceClassification.from_pretrained(args.model_dir, num_labels=2)
    config = peft.LoraConfig(r=args.rank, lora_alpha=args.rank, target_modules=["query", "value"],
                             task_type="SEQ_CLS")
    names = [f"t{t}" for t in range(args.tasks)]
    model = peft.get_peft_model(base, config, adapter_name=names[0])
    for name in names[1:]:
        model.add_adapter(name, config)
    randomized = 0
    with torch.no_grad():
        for path, p in model.named_parameters():
            lora_b = any(path.endswith(f"lora_B.{n}.weight") for n in names)
            head = any(f"modules_to_save.{n}." in path for n in names)  # The task's classifier.
            if lora_b or head:
                p.normal_(0.0, 0.02)
                randomized += 1
    model.eval()

    calls = {}
    for mix, task_ids in mixes(batch, args.tasks).items():
        adapter_names = [names[t] for t in task_ids]
        calls[mix] = lambda a=adapter_names: model(**inputs, adapter_names=a).logits
    times: dict[str, list[float]] = {m: [] for m in calls}
    with torch.no_grad():
        for fn in calls.values():
            for _ in range(args.warmup):
                fn()
        for _ in range(args.repeats):
            for mix, fn in calls.items():
                start = time.perf_counter()
                fn()
                times[mix].append(time.perf_counter() - start)
        merged = model.merge_and_unload(adapter_names=[names[0]])
        merged.eval()
        times["merged_one"] = []
        for i in range(args.warmup + args.repeats):
            start = time.perf_counter()
            merged(**inputs)
            if i >= args.warmup:
                times["merged_one"].append(time.perf_counter() - start)
    seconds = {m: float(statistics.median(t)) for m, t in times.items()}
    print(json.dumps({
        "ex_s": {m: batch / s for m, s in seconds.items()},
        "seconds": seconds,
        "batch": batch, "seq": int(ids.shape[1]), "tasks": args.tasks, "rank": args.rank,
        "threads": torch.get_num_threads(), "repeats": args.repeats, "warmup": args.warmup,
        "randomized_tensors": randomized,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__,
    }))


if __name__ == "__main__":
    main()
