"""Page faults and speed of the MiniLM train step under glibc malloc settings (fft.malloc_tuning).

  python benchmarks/malloc_bench.py            # writes results/bench_malloc.json
  python benchmarks/malloc_bench.py --seqs=64 --steps=10

glibc tunables are fixed when a process starts, so each side is a worker process started with
its own `GLIBC_TUNABLES`: glibc's defaults; huge pages only (`hugetlb=1`); memory kept in the
process (`arena_max=1:mmap_max=0:trim_threshold=16G`); and both, which is what
`fft.malloc_tuning` sets. All compile the same train step (batch 32, AdamW, dropout on); the
parent then asks them for one step at a time, in turn, so a change in machine load hits all
alike. Each step reports its wall time and the worker's minor page faults and user/system CPU
seconds during the step.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import common as bench
from fft import malloc_tuning

RETAIN = ":".join(malloc_tuning.RETAIN)
SIDES = {  # name -> GLIBC_TUNABLES of that worker.
    "default": "",
    "huge_pages": malloc_tuning.HUGE_PAGES,
    "retain": RETAIN,
    "retain_huge_pages": f"{RETAIN}:{malloc_tuning.HUGE_PAGES}",  # What fft.malloc_tuning sets.
}


def worker(seq: int, batch: int) -> None:
    """Compiles the train step, then runs one step per line read from stdin; prints JSON lines."""
    from benchmarks import train_bench
    from fft.models import loading

    run_step, _, _, _ = train_bench.minilm_train_step(loading.resolve_model_dir("minilm"), batch, seq)
    run_step()  # Compile before the parent starts timing.
    print(json.dumps({"ready": True, "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}), flush=True)
    for _ in sys.stdin:
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        run_step()
        seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"seconds": seconds, "minor_faults": after.ru_minflt - before.ru_minflt,
                          "user_s": after.ru_utime - before.ru_utime,
                          "sys_s": after.ru_stime - before.ru_stime}), flush=True)


def _start(seq: int, batch: int, tunables: str) -> tuple[subprocess.Popen, dict]:
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    proc = subprocess.Popen(
        [sys.executable, __file__, "--worker", f"--seqs={seq}", f"--batch={batch}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:  # Skip anything before the worker's ready line.
        if line.startswith("{"):
            return proc, json.loads(line)
    raise RuntimeError(f"worker for seq {seq} exited with {proc.wait()} before it was ready")


def _step(proc: subprocess.Popen) -> dict:
    proc.stdin.write("step\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def compare(seq: int, batch: int, n: int, warmup: int) -> dict:
    workers = {name: _start(seq, batch, tunables) for name, tunables in SIDES.items()}
    samples = {name: [] for name in workers}
    for i in range(warmup + n):
        for name, (proc, _) in workers.items():
            sample = _step(proc)
            if i >= warmup:
                samples[name].append(sample)
    for proc, _ in workers.values():
        proc.stdin.close()
        proc.wait()
    row = {"seq": seq, "batch": batch}
    for name, rows in samples.items():
        row[f"{name}_tunables"] = workers[name][1]["glibc_tunables"]
        row[f"{name}_ex_s"] = batch / float(np.median([r["seconds"] for r in rows]))
        for key in ("minor_faults", "user_s", "sys_s"):
            row[f"{name}_{key}_per_step"] = float(np.median([r[key] for r in rows]))
    for name in samples:
        row[f"{name}_speedup"] = row[f"{name}_ex_s"] / row["default_ex_s"]
    print("  " + "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
          flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seqs", default="16,64")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", default="results/bench_malloc.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(int(args.seqs), args.batch)
        return
    if malloc_tuning.tuned_environ({}, system=os.uname().sysname, glibc=malloc_tuning.glibc_version(),
                                   thp=malloc_tuning.thp_mode()) is None:
        print("fft.malloc_tuning does not apply here (needs Linux and glibc >= 2.35)")
        return
    result = {"machine": bench.machine_info(thp_mode=malloc_tuning.thp_mode())}
    print(f"== MiniLM train step, batch {args.batch}, under each GLIBC_TUNABLES ==")
    result["train_step"] = [compare(int(s), args.batch, args.steps, args.warmup) for s in args.seqs.split(",")]
    bench.write_json(result, args.out)


if __name__ == "__main__":
    main()
