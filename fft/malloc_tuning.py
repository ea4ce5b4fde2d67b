"""Keep XLA:CPU's per-step buffers in the process, on huge pages (glibc malloc tunables).

XLA:CPU allocates the temporary buffers of every execution with malloc and frees them at the end.
With glibc's defaults those large blocks come from fresh `mmap`s or from per-thread heaps that
are given back to the kernel when freed, so every train step faults in hundreds of MB of new,
zeroed 4 KiB pages: about 165k minor page faults and a third of a CPU-second of kernel time per
MiniLM step at batch 32, seq 64 (`benchmarks/malloc_bench.py`).

These glibc tunables keep the memory instead:
- `arena_max=1`: one heap for all threads, so blocks freed by XLA's worker threads are reused;
- `mmap_max=0`: large blocks come from that heap too, not from separate mappings;
- `trim_threshold=16 GiB`: the heap's free top is not handed back after each step;
- `hugetlb=1` (glibc >= 2.35, kernel transparent huge pages not `never`): the heap is
  `madvise`d for 2 MiB pages, so the working set needs far fewer TLB entries.
The cost is that memory freed late in a run stays mapped in the process (the peak is unchanged).

Tunables are read when a process starts, so `reexec_with_malloc_tuning()` restarts the interpreter
with them added to `GLIBC_TUNABLES` (same executable, same arguments). It does nothing where it
does not apply: not Linux, not glibc >= 2.35, `GLIBC_TUNABLES` already naming a malloc tunable,
or `FFT_MALLOC_TUNING=0`.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping

RETAIN = ("glibc.malloc.arena_max=1", "glibc.malloc.mmap_max=0",
          "glibc.malloc.trim_threshold=17179869184")
HUGE_PAGES = "glibc.malloc.hugetlb=1"
OPT_OUT_VAR = "FFT_MALLOC_TUNING"  # Set to 0 to keep glibc's default malloc behaviour.
THP_ENABLED_PATH = "/sys/kernel/mm/transparent_hugepage/enabled"
MIN_GLIBC = (2, 35)


def thp_mode(path: str = THP_ENABLED_PATH) -> str | None:
    """The kernel's transparent-huge-page mode ('always', 'madvise', 'never'), None if unknown."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def glibc_version() -> tuple[int, ...] | None:
    """(major, minor) of the C library if it is glibc, else None."""
    name, version = platform.libc_ver()
    if name != "glibc" or not version:
        return None
    try:
        return tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return None


def tuned_environ(
    environ: Mapping[str, str],
    *,
    system: str,
    glibc: tuple[int, ...] | None,
    thp: str | None,
) -> dict[str, str] | None:
    """The environment to restart with, or None when no restart applies (see module doc)."""
    if system != "Linux" or glibc is None or glibc < MIN_GLIBC:
        return None
    tunables = environ.get("GLIBC_TUNABLES", "")
    if environ.get(OPT_OUT_VAR, "1") == "0" or "glibc.malloc." in tunables:
        return None
    added = list(RETAIN) + ([HUGE_PAGES] if thp in ("always", "madvise") else [])
    env = dict(environ)
    env["GLIBC_TUNABLES"] = ":".join(([tunables] if tunables else []) + added)
    return env


def reexec_with_malloc_tuning() -> None:
    """Replaces this process by the same command with the tunables set, where they apply.

    Call it first thing in a `__main__` block, before any work is done: when it applies it does
    not return. Elsewhere it returns and nothing changes."""
    env = tuned_environ(os.environ, system=platform.system(), glibc=glibc_version(), thp=thp_mode())
    argv = getattr(sys, "orig_argv", None)  # Python >= 3.10: the interpreter's own arguments.
    if env is None or not argv or not sys.executable:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], env)
