"""Train-step time and memory of learners (fft.methods.learners) against full fine-tuning.

  python benchmarks/learners_step.py                      # writes results/bench_learners.json
  python benchmarks/learners_step.py --steps 3 --warmup 1 # a quick check

MiniLM's shape (6 layers, hidden 384, 12 heads, FFN 1536; random init: the step's cost does not
depend on the values), seq 128, batch 32, fp32, dropout on. Learners: fraction 0.1 (154 of 1536
nodes per FFN), attention frozen, biases and LayerNorms trained, as the method's defaults; and the
same with biases and LayerNorms frozen (only the learner slices and the head train). All
steps are the training loop's own (`fft.steps.train_step` with the method's model, `assemble` and
optimizer after global-norm clipping), the state donated and the frozen tree a separate argument.
Priming: the training time of a run that primes `--priming` of its steps with full fine-tuning,
against unprimed learners and full, and what the phase boundary costs (picking the nodes,
compiling the learners step). Time: medians over alternating blocks (benchmarks/common.py:interleaved_medians). Memory: XLA's
compiled estimate (arguments + outputs + temporaries - donated aliases, and the temporaries
alone), and where the device reports it (GPU, TPU) its peak bytes in use after each variant's
warmup; learners warm up first, so its peak is its own.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp

from benchmarks import common as bench
from benchmarks.methods_bench import memory
from benchmarks.train_bench import _random_batch
from configs import glue as glue_config
from fft import malloc_tuning, methods, models, partition, steps, train
from fft.methods import learners

MINILM_SHAPE = {"vocab_size": 30522, "hidden_size": 384, "num_layers": 6, "num_heads": 12,
                "intermediate_size": 1536, "max_position_embeddings": 512}


def mib(x: int | None) -> str:
    return "n/a" if x is None else f"{x / 2**20:.1f} MiB"


def device_peak() -> int | None:
    """The device's peak bytes in use so far, or None where it does not report (CPU)."""
    stats = jax.local_devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def build(model, params, variant: str, options: dict, batch: dict, warmup: int) -> tuple[dict, object]:
    """(row, one-step callable) of method `name` with `options`, warmed up."""
    name = variant.split("-")[0]  # The method: 'learners-frozen-biases' is learners with options.
    config = glue_config.get_config(f"task=rte,method={name}")
    config[name].update(options)
    method = methods.create(config, model)
    trainable, frozen = jax.device_get(method.init(params, train.method_key(config)))
    tx, _ = train.make_optimizer(config, method, trainable, 1000)
    trainable, frozen, data = jax.device_put((trainable, frozen, batch))
    state = [steps.TrainState(jnp.zeros((), jnp.int32), trainable, jax.jit(tx.init)(trainable))]
    step = jax.jit(
        functools.partial(steps.train_step, model=method.model, tx=tx, is_regression=False,
                          assemble=method.assemble),
        donate_argnums=(0,),
    )
    rng = jax.random.key(0)
    t0 = time.perf_counter()
    compiled = step.lower(state[0], frozen, data, rng).compile()
    compile_s = time.perf_counter() - t0

    def once():
        state[0], out = compiled(state[0], frozen, data, rng)
        jax.block_until_ready(out)

    for _ in range(warmup):
        once()
    row = {"variant": variant, "method": method.description, "options": options, "compile_s": compile_s,
           "trainable_params": partition.count_params(trainable), **memory(compiled),
           "device_peak_bytes": device_peak()}
    return row, once


def priming_overhead(params, fraction: float, share: float, seconds: dict, compile_s: float) -> dict:
    """What priming costs: a primed run trains `share` of its steps at full fine-tuning's step time
    and the rest at learners'; at the boundary it picks nodes (timed here on a perturbed copy of
    the weights) and compiles the learners step (timed in `build`)."""
    moved = jax.tree.map(lambda w: w + 1e-3 * jnp.sign(w), params)
    t0 = time.perf_counter()
    scores = learners.node_scores(jax.device_get(moved), "movement", reference=jax.device_get(params))
    learners.choose_nodes(scores, fraction)
    select_s = time.perf_counter() - t0
    full, learn = seconds["full"], seconds["learners"]
    mixed = share * full + (1 - share) * learn
    return {"share": share, "step_s_mixed": mixed, "vs_unprimed": mixed / learn, "vs_full": mixed / full,
            "extra_s_per_1000_steps": 1000 * share * (full - learn), "select_s": select_s,
            "learners_compile_s": compile_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--priming", type=float, default=0.2, help="share of a run that primes")
    parser.add_argument("--options", default="{}", help='more learners options as JSON, e.g. {"train_biases": false}')
    parser.add_argument("--out", default="results/bench_learners.json")
    args = parser.parse_args()
    config = models.bert.BertConfig(**MINILM_SHAPE)
    model = models.create_model("bert", config, 2, jnp.float32, pooling="mean")
    ids = jnp.ones((1, 8), jnp.int32)
    params = jax.device_get(jax.jit(lambda k: model.init(k, ids, ids, ids, deterministic=True))(jax.random.key(0)))
    batch = _random_batch(args.batch, args.seq)
    rows, fns = {}, {}
    extra = json.loads(args.options)
    base = {"fraction": args.fraction, "train_attention": False, **extra}
    variants = (("learners", base), ("learners-frozen-biases-norms",
                                     {**base, "train_biases": False, "train_layer_norms": False}), ("full", {}))
    for name, options in variants:
        rows[name], fns[name] = build(model, params["params"], name, options, batch, args.warmup)
        print(f"compiled {name}: peak {mib(rows[name]['peak_bytes'])}, "
              f"temp {mib(rows[name].get('temp_bytes'))}", flush=True)
    seconds = bench.interleaved_medians(fns, args.steps, warmup=0)
    for name, row in rows.items():
        row["step_s"] = seconds[name]
        row["ex_s"] = args.batch / seconds[name]
    ratios = {"time_ratio": seconds["learners"] / seconds["full"],
              "time_ratio_frozen_biases_norms": seconds["learners-frozen-biases-norms"] / seconds["full"]}
    for key in ("peak_bytes", "temp_bytes", "device_peak_bytes"):
        if rows["full"].get(key) and rows["learners"].get(key) is not None:
            ratios[key.replace("_bytes", "_ratio")] = rows["learners"][key] / rows["full"][key]
    for name, row in rows.items():
        print(f"{name:>28}  trainable {row['trainable_params']:>10,}  step {row['step_s'] * 1e3:7.1f} ms  "
              f"peak {mib(row['peak_bytes'])}  temp {mib(row.get('temp_bytes'))}  "
              f"device peak {mib(row['device_peak_bytes'])}", flush=True)
    print("learners / full: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()), flush=True)
    primed = priming_overhead(params["params"], args.fraction, args.priming, seconds, rows["learners"]["compile_s"])
    print(f"priming {args.priming:g} of the run: training time x{primed['vs_unprimed']:.2f} of unprimed "
          f"learners, x{primed['vs_full']:.2f} of full; at the boundary {primed['select_s']:.2f} s to pick "
          f"nodes + {primed['learners_compile_s']:.1f} s to compile the learners step", flush=True)
    result = {"seq": args.seq, "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
              "model": MINILM_SHAPE, **bench.machine_info(), "rows": list(rows.values()), **ratios,
              "priming": primed}
    bench.write_json(result, args.out)


if __name__ == "__main__":
    malloc_tuning.reexec_with_malloc_tuning()
    main()
