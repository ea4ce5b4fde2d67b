"""Times the grouped parameter-distance report on BERT-sized random trees.

Measures, per model size, the jitted ``fft.distances.make_distance_fn`` table: the first call
(trace + compile + run), tracing/lowering and XLA compilation separately, and the steady-state
run after compilation; plus ``global_l2`` (the cheap train-step number) for comparison.

  python benchmarks/distances_bench.py                      # bert-base and minilm
  python benchmarks/distances_bench.py --sizes=tiny --repeats=3 --out=/tmp/bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import time
from collections.abc import Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax
import jax.numpy as jnp

from benchmarks import common as bench
from fft import analyze, distances, malloc_tuning

SIZES = {
    "bert-base": {"num_layers": 12, "hidden": 768, "intermediate": 3072, "vocab": 30522},
    "minilm": {"num_layers": 6, "hidden": 384, "intermediate": 1536, "vocab": 30522},
    "tiny": {"num_layers": 2, "hidden": 32, "intermediate": 64, "vocab": 128},
}
RULES = {"layer": distances.DEFAULT_LAYER_GROUPS, "sublayer": distances.DEFAULT_SUBLAYER_GROUPS}


def random_pair(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> tuple[dict, dict]:
    """float32 trees made on device: pretrained ~ N(0, 0.02), fine-tuned = pretrained + noise."""
    keys = jax.random.split(jax.random.key(seed), 2 * len(shapes))
    pre, ft = {}, {}
    for (path, shape), k1, k2 in zip(shapes.items(), keys[::2], keys[1::2]):
        pre[path] = 0.02 * jax.random.normal(k1, shape, jnp.float32)
        ft[path] = pre[path] + 2e-5 * jax.random.normal(k2, shape, jnp.float32)
    return jax.block_until_ready((pre, ft))


def blocking(fn, *args) -> Callable[[], object]:
    """`fn(*args)` as a no-argument call that waits for its result, for the timing helpers."""
    return lambda: jax.block_until_ready(fn(*args))


def bench_size(name: str, rules: str, repeats: int) -> dict:
    shapes = analyze.bert_shapes(**SIZES[name])
    pre, ft = random_pair(shapes)
    result = {
        "params_per_tree": sum(x.size for x in pre.values()),
        "leaves": len(pre),
        "groups": len(distances.assign_groups(pre, RULES[rules])),
    }
    fn = distances.make_distance_fn(RULES[rules])
    run = blocking(fn, pre, ft)
    result["first_call_s"] = bench.timings(run, 1)[0]  # trace + compile + run
    start = time.perf_counter()
    lowered = distances.make_distance_fn(RULES[rules]).lower(pre, ft)  # a fresh jit object
    result["trace_lower_s"] = time.perf_counter() - start
    start = time.perf_counter()
    lowered.compile()
    result["compile_s"] = time.perf_counter() - start
    runs = bench.timings(run, repeats)
    result["run_ms_median"] = 1e3 * statistics.median(runs)
    result["run_ms_min"] = 1e3 * min(runs)
    cheap = blocking(jax.jit(distances.global_l2), pre, ft)
    result["global_l2_ms_median"] = 1e3 * bench.median_seconds(cheap, repeats, warmup=1)
    gbytes = 2 * 4 * result["params_per_tree"] / 1e9
    result["read_gb_per_s"] = gbytes / (result["run_ms_median"] / 1e3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="minilm,bert-base", help=f"comma list of {list(SIZES)}")
    parser.add_argument("--rules", default="layer", choices=list(RULES))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="results/bench_distances.json")
    args = parser.parse_args()
    machine = bench.machine_info()
    report = {  # Keys as earlier results have them ("platform" here is the JAX backend).
        "device": str(jax.devices()[0].device_kind),
        "platform": machine["jax_backend"],
        "jax": machine["jax"],
        "cpu_count": machine["cpus"],
        "load_average_before": os.getloadavg(),
        "python": machine["python"],
        "rules": args.rules,
        "repeats": args.repeats,
        "sizes": {},
    }
    for name in args.sizes.split(","):
        result = bench_size(name, args.rules, args.repeats)
        report["sizes"][name] = result
        print(f"{name}: {json.dumps(result)}", flush=True)
    report["load_average_after"] = os.getloadavg()
    bench.write_json(report, args.out)


if __name__ == "__main__":
    malloc_tuning.reexec_with_malloc_tuning()  # Both sides of every comparison run in this one process.
    main()
