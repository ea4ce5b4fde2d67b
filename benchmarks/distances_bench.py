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
import platform
import statistics
import time

import jax
import jax.numpy as jnp

from fft import analyze, distances

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


def seconds(fn, *args) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def bench_size(name: str, rules: str, repeats: int) -> dict:
    shapes = analyze.bert_shapes(**SIZES[name])
    pre, ft = random_pair(shapes)
    result = {
        "params_per_tree": sum(x.size for x in pre.values()),
        "leaves": len(pre),
        "groups": len(distances.assign_groups(pre, RULES[rules])),
    }
    fn = distances.make_distance_fn(RULES[rules])
    result["first_call_s"] = seconds(fn, pre, ft)  # trace + compile + run
    start = time.perf_counter()
    lowered = distances.make_distance_fn(RULES[rules]).lower(pre, ft)  # a fresh jit object
    result["trace_lower_s"] = time.perf_counter() - start
    start = time.perf_counter()
    lowered.compile()
    result["compile_s"] = time.perf_counter() - start
    runs = [seconds(fn, pre, ft) for _ in range(repeats)]
    result["run_ms_median"] = 1e3 * statistics.median(runs)
    result["run_ms_min"] = 1e3 * min(runs)
    cheap = jax.jit(distances.global_l2)
    seconds(cheap, pre, ft)
    result["global_l2_ms_median"] = 1e3 * statistics.median(
        seconds(cheap, pre, ft) for _ in range(repeats)
    )
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
    report = {
        "device": str(jax.devices()[0].device_kind),
        "platform": jax.default_backend(),
        "jax": jax.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "python": platform.python_version(),
        "rules": args.rules,
        "repeats": args.repeats,
        "sizes": {},
    }
    for name in args.sizes.split(","):
        result = bench_size(name, args.rules, args.repeats)
        report["sizes"][name] = result
        print(f"{name}: {json.dumps(result)}", flush=True)
    report["load_average_after"] = os.getloadavg()
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
