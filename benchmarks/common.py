"""Small helpers the benchmark scripts share: one timing loop, one machine description, one writer.

The scripts run as `python benchmarks/<name>.py` from the repo root; each puts the repo root on
`sys.path` and imports this module as `from benchmarks import common as bench` (the alias keeps
it apart from `configs.common`).
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any


def timings(fn: Callable[[], Any], n: int, warmup: int = 0) -> list[float]:
    """Wall-clock seconds of each of `n` calls of `fn()`, after `warmup` untimed calls.

    `fn` must block until its result is ready (e.g. end in `jax.block_until_ready`, or return
    host arrays); JAX dispatch is asynchronous, so otherwise only the dispatch is timed.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def median_seconds(fn: Callable[[], Any], n: int, warmup: int) -> float:
    """Median seconds per call of `fn()` over `n` timed calls after `warmup` untimed ones.

    `fn` must block until its result is ready (see `timings`).
    """
    return float(statistics.median(timings(fn, n, warmup)))


def interleaved_medians(
    fns: dict[str, Callable[[], Any]], n: int, warmup: int, *, block: int = 3, pause: float = 0.5
) -> dict[str, float]:
    """Median seconds per call of each of `fns`, measured in alternating blocks.

    Each round gives every function in turn (reversed order on odd rounds) one untimed call and
    `block` timed calls, until each has `n` timed calls. A drift in machine speed (other load,
    clocks) so hits all sides alike, and their ratios stay fair. Before each block the machine
    idles `pause` seconds, so the thread pools of the function before (OpenMP, XLA) stop spinning
    and do not steal cores from the next. Each `fn` must block until its result is ready.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    round_ = 0
    while any(len(t) < n for t in times.values()):
        for name in names if round_ % 2 == 0 else reversed(names):
            time.sleep(pause)
            fns[name]()  # Re-warms caches after the other side ran.
            for _ in range(min(block, n - len(times[name]))):
                start = time.perf_counter()
                fns[name]()
                times[name].append(time.perf_counter() - start)
        round_ += 1
    return {name: float(statistics.median(t)) for name, t in times.items()}


def machine_info(**extra: Any) -> dict[str, Any]:
    """Where a benchmark ran: OS platform, CPU count, Python, JAX version and backend, plus `extra`.

    Keys: platform, cpus, python, jax, jax_backend, glibc_tunables, then the `extra` keys (e.g. torch=...) in the
    order given. Calling it initializes JAX's default backend.
    """
    import jax

    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),  # See fft/malloc_tuning.py.
        **extra,
    }


def write_json(result: Any, path: str | os.PathLike[str]) -> pathlib.Path:
    """Writes `result` as JSON (indent 1, trailing newline) to `path`, creating its parent folders.

    Prints `wrote <path>` and returns the path.
    """
    out = pathlib.Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print("wrote", out)
    return out
