"""Speed of fft's train step and eval forward against transformers + PyTorch, side by side.

  python benchmarks/train_bench.py --mode=step            # per-step at seq 64/128, batch 32
  python benchmarks/train_bench.py --mode=epoch --task=cola  # one real epoch, end to end
                                                           # (packed rows and length buckets)
  python benchmarks/train_bench.py --mode=all             # both (writes results/bench_train.json)

Both sides use the packaged all-MiniLM-L6-v2, fp32, AdamW, dropout on, on the same machine in the
same run. The PyTorch side is what a user would write: `BertForSequenceClassification`, and for
the epoch, batches padded to their longest sequence (as DataCollatorWithPadding does). If torch
is not installed (`pip install torch==2.13.0` here), the PyTorch side is skipped with a message.
"""

from __future__ import annotations

import argparse
import functools
import os
import pathlib
import sys
import tempfile
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common as bench
from configs import common
from configs import glue as glue_config
from fft import malloc_tuning, models, optim, steps
from fft import train as train_lib
from fft.models import loading


def _random_batch(batch: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(1000, 30000, (batch, seq)).astype(np.int32),
        "attention_mask": np.ones((batch, seq), np.int32),
        "token_type_ids": np.zeros((batch, seq), np.int32),
        "labels": rng.integers(0, 2, batch).astype(np.int32),
        "weights": np.ones(batch, np.float32),
    }


def minilm_train_step(model_dir, batch: int, seq: int):
    """MiniLM with a fresh 2-label head, AdamW, and a random batch: what every step benchmark times.

    Returns (run_step, state, model, data): `run_step()` runs one jitted train step (state donated,
    dropout on, the PRNG kind training uses) and blocks; `state[0]` is the current TrainState."""
    pretrained = loading.load_pretrained(model_dir)
    model = models.create_model(pretrained.model_type, pretrained.model_config, 2, jnp.float32)
    params = jax.device_put(loading.init_params(model, jax.random.key(0), pretrained.params))
    tx = optim.adamw(common.optim_config(), total_steps=1000)
    state = [steps.TrainState(jnp.zeros((), jnp.int32), params, tx.init(params))]
    train = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, is_regression=False), donate_argnums=(0,))
    data = jax.device_put(_random_batch(batch, seq))
    rng = train_lib.dropout_key(glue_config.get_config())

    def run_step():
        state[0], metrics = train(state[0], {}, data, rng)
        jax.block_until_ready(metrics)

    return run_step, state, model, data


def jax_step_fns(model_dir, batch: int, seq: int) -> dict[str, Callable[[], None]]:
    """fft's jitted train step and eval forward on one random batch, each blocking."""
    train_once, state, model, data = minilm_train_step(model_dir, batch, seq)
    evaluate = jax.jit(functools.partial(steps.eval_step, model=model, is_regression=False))

    def eval_once():
        jax.block_until_ready(evaluate(state[0].params, {}, data))

    return {"fft_train": train_once, "fft_eval": eval_once}


def torch_step_fns(model_dir, batch: int, seq: int) -> dict[str, Callable[[], None]]:
    """transformers' BertForSequenceClassification train step (AdamW) and eval forward."""
    import torch
    import transformers

    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification.from_pretrained(str(model_dir), num_labels=2)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    data = {k: torch.from_numpy(v).long() for k, v in _random_batch(batch, seq).items() if k != "weights"}

    def train_once():
        model.train()
        out = model(**data)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def eval_once():
        model.eval()
        with torch.no_grad():
            model(**{k: v for k, v in data.items() if k != "labels"})

    return {"torch_train": train_once, "torch_eval": eval_once}


def bench_steps(model_dir, seqs, batch: int, n: int, warmup: int, have_torch: bool) -> list[dict]:
    """Per-step times at each length; fft and PyTorch steps are timed in turn (interleaved), so
    both sides see the same machine."""
    rows = []
    for seq in seqs:
        fns = jax_step_fns(model_dir, batch, seq)
        if have_torch:
            fns.update(torch_step_fns(model_dir, batch, seq))
        t = bench.interleaved_medians(fns, n, warmup)
        row = {"seq": seq, "batch": batch,
               "fft_train_ex_s": batch / t["fft_train"], "fft_eval_ex_s": batch / t["fft_eval"]}
        if have_torch:
            row.update(torch_train_ex_s=batch / t["torch_train"], torch_eval_ex_s=batch / t["torch_eval"])
            row["train_ratio"] = row["fft_train_ex_s"] / row["torch_train_ex_s"]
            row["eval_ratio"] = row["fft_eval_ex_s"] / row["torch_eval_ex_s"]
        print(_fmt_row(row), flush=True)
        rows.append(row)
    return rows


def epoch_config(task: str, batch: int, max_length: int, packed: bool):
    config = glue_config.get_config(f"task={task}")
    config.num_epochs = 1.0
    config.batch_size = batch
    config.data.max_length = max_length
    config.data.packing = packed
    config.checkpoint.every_steps = 10**9
    config.log_every_steps = 50
    return config


def fft_epoch(task: str, batch: int, max_length: int, packed: bool = True) -> dict:
    """One epoch through `train.train_and_evaluate`, as `python -m fft.main` runs it; `packed`
    picks packed rows (the default) or length buckets for the training batches."""
    from fft import train

    config = epoch_config(task, batch, max_length, packed)
    with tempfile.TemporaryDirectory() as workdir:
        final = train.train_and_evaluate(config, workdir)
    return {"seconds": final["train_seconds"], "examples": final["train_examples"],
            "ex_s": final["train_examples_per_sec"], "dev": final["eval"]}


def fft_padded_tokens(model_dir, task: str, batch: int, max_length: int, packed: bool = True) -> dict:
    """Token positions one training epoch computes on, and the batch shapes (so compilations) it
    has: packed rows or length buckets, as `fft.train` builds them on one device."""
    from fft import train
    from fft.data import packing, tokenize

    config = epoch_config(task, batch, max_length, packed)
    data = train.load_data(config, tokenize.load_tokenizer(model_dir))
    data = train.with_packing(config, data, 1.0, row_multiple=1)
    batches = list(train.epoch_batches(data, config, 0))
    slots, real = packing.token_slots(batches)
    result = {"example_tokens": real, "padded_tokens": slots,
              "batch_shapes": len({b["input_ids"].shape for b in batches})}
    if data.pack is not None:
        result["pack"] = {"length": data.pack.length, "slots": data.pack.slots, "rows": list(data.pack.rows)}
    else:
        result["buckets"] = list(data.buckets)
    return result


def torch_epoch(model_dir, task: str, batch: int, max_length: int) -> dict:
    """One epoch as a transformers user writes it: dynamic padding, AdamW, linear warmup/decay."""
    import torch
    import transformers

    from fft.data import glue, tokenize

    spec = glue.get_task(task)
    examples = glue.load_examples(spec, "train", data_dir=str(common.SHIPPED_GLUE_DIR))
    tokenizer = tokenize.load_tokenizer(model_dir)
    texts = [e.text_a for e in examples]
    pairs = [e.text_b for e in examples] if examples[0].text_b is not None else None
    enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    labels = [e.label for e in examples]
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification.from_pretrained(str(model_dir), num_labels=spec.num_labels)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
    num_steps = (len(labels) + batch - 1) // batch
    sched = transformers.get_linear_schedule_with_warmup(opt, int(0.1 * num_steps), num_steps)
    order = np.random.default_rng(0).permutation(len(labels))
    model.train()
    padded_tokens = 0
    t0 = time.perf_counter()
    for i in range(num_steps):
        idx = order[i * batch : (i + 1) * batch]
        features = [{k: enc[k][j] for k in enc} for j in idx]
        padded = tokenizer.pad(features, return_tensors="pt")
        padded_tokens += padded["input_ids"].numel()
        dtype = torch.float if spec.label_names is None else torch.long
        out = model(**padded, labels=torch.tensor([labels[j] for j in idx], dtype=dtype))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if i % 50 == 0:
            print(f"  torch step {i}/{num_steps} {time.perf_counter() - t0:.0f}s", flush=True)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "examples": len(labels), "ex_s": len(labels) / seconds,
            "padded_tokens": padded_tokens}


def _fmt_row(row: dict) -> str:
    return "  ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["step", "epoch", "all"], default="all")
    parser.add_argument("--seqs", default="64,128")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--task", default="cola")
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--out", default="results/bench_train.json")
    args = parser.parse_args()

    try:
        import torch

        have_torch = True
        torch_version = torch.__version__
    except ImportError:
        have_torch, torch_version = False, None
        print("torch is not installed: timing the fft side only (pip install torch==2.13.0).")
    model_dir = loading.resolve_model_dir("minilm")
    result = {"machine": bench.machine_info(torch=torch_version), "model": str(model_dir)}
    if args.mode in ("step", "all"):
        print("== per step (median of", args.steps, "after", args.warmup, "warm-up; fft and torch in alternating blocks) ==")
        result["step"] = bench_steps(model_dir, [int(s) for s in args.seqs.split(",")], args.batch,
                                     args.steps, args.warmup, have_torch)
    if args.mode in ("epoch", "all"):
        print(f"== one epoch of {args.task} train, batch {args.batch}, max length {args.max_length} ==")
        # Cold: compiling every batch shape's program is part of the epoch (an empty compilation
        # cache). Warm: the same run again with the persistent compilation cache that `fft.main`
        # keeps (a rerun, a sweep). Bucketed: length buckets instead of packed rows, cold.
        # PyTorch runs first and last; the speed-ups use the mean of the two, so a drift in machine
        # speed over the ~10 minutes counts against both sides alike.
        epoch = {"task": args.task}
        torch_runs = [torch_epoch(model_dir, args.task, args.batch, args.max_length)] if have_torch else []
        with tempfile.TemporaryDirectory() as cache_dir:
            jax.config.update("jax_compilation_cache_dir", cache_dir)
            epoch["fft"] = fft_epoch(args.task, args.batch, args.max_length)
            epoch["fft"].update(fft_padded_tokens(model_dir, args.task, args.batch, args.max_length))
            print("fft packed, cold:", _fmt_row({k: v for k, v in epoch["fft"].items() if k != "dev"}), flush=True)
            epoch["fft_warm_cache"] = fft_epoch(args.task, args.batch, args.max_length)
            print("fft packed, warm:", _fmt_row({k: v for k, v in epoch["fft_warm_cache"].items() if k != "dev"}), flush=True)
        with tempfile.TemporaryDirectory() as cache_dir:
            jax.config.update("jax_compilation_cache_dir", cache_dir)
            epoch["fft_buckets"] = fft_epoch(args.task, args.batch, args.max_length, packed=False)
            epoch["fft_buckets"].update(fft_padded_tokens(model_dir, args.task, args.batch, args.max_length, packed=False))
            print("fft buckets, cold:", _fmt_row({k: v for k, v in epoch["fft_buckets"].items() if k != "dev"}), flush=True)
        if have_torch:
            torch_runs.append(torch_epoch(model_dir, args.task, args.batch, args.max_length))
            seconds = float(np.mean([r["seconds"] for r in torch_runs]))
            epoch["torch"] = {"seconds": seconds, "examples": torch_runs[0]["examples"],
                              "ex_s": torch_runs[0]["examples"] / seconds,
                              "padded_tokens": torch_runs[0]["padded_tokens"],
                              "runs_seconds": [r["seconds"] for r in torch_runs]}
            for name, run in (("", "fft"), ("_warm_cache", "fft_warm_cache"), ("_buckets", "fft_buckets")):
                epoch["speedup" + name] = epoch["torch"]["seconds"] / epoch[run]["seconds"]
            print("torch (first, last):", [f"{r['seconds']:.1f}s" for r in torch_runs],
                  f"\nepoch speed-up fft/torch: packed cold {epoch['speedup']:.2f}x, warm cache "
                  f"{epoch['speedup_warm_cache']:.2f}x; length buckets cold {epoch['speedup_buckets']:.2f}x")
        result["epoch"] = epoch
    bench.write_json(result, args.out)


if __name__ == "__main__":
    malloc_tuning.reexec_with_malloc_tuning()  # Both sides of every comparison run in this one process.
    main()
