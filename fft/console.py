"""What a run prints: a few header lines, one progress bar, one line per evaluation, a summary.

Only process 0 prints. On a terminal the progress is a tqdm bar (step, loss, learning rate,
examples/s, ETA); when stdout is not a terminal (CI, nohup, a pipe) it is a plain line every tenth
of the run or every `interval` seconds, whichever comes first. Warnings go to stderr as
`fft: warning: ...`. The libraries' own log records (orbax, absl INFO) stay off unless
`set_verbosity(1)` (the `-v` flag) turns them on.
"""

from __future__ import annotations

import logging as py_logging
import os
import sys
import time
from typing import Any, TextIO

from absl import logging

from fft import progress as progress_lib

# Loggers of dependencies that log at INFO while fft works (the orbax checkpoint manager logs
# every save and every cleanup); they follow fft's verbosity.
LIBRARY_LOGGERS = ("absl", "orbax", "jax", "etils", "tensorstore", "asyncio", "flax", "transformers")


def set_verbosity(verbosity: int) -> None:
    """0: only fft's console and warnings; 1 (`-v`): library INFO records too; 2 (`-vv`): DEBUG."""
    level = {0: py_logging.WARNING, 1: py_logging.INFO}.get(verbosity, py_logging.DEBUG)
    logging.set_verbosity({0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))
    for name in LIBRARY_LOGGERS:
        py_logging.getLogger(name).setLevel(level)
    # transformers reads its own verbosity when first imported ("PyTorch was not found" ...).
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error" if verbosity <= 0 else "info")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if verbosity <= 0 else "0")
    if verbosity <= 0:
        # asyncio reports tasks left behind by an aborted tensorstore read as ERROR records.
        py_logging.getLogger("asyncio").setLevel(py_logging.CRITICAL)


def is_main() -> bool:
    import jax  # Not at import time: `fft.main` may initialise jax.distributed first.

    return jax.process_index() == 0


def info(message: str, stream: TextIO | None = None) -> None:
    """Prints a line of the run's console output (process 0 only)."""
    if is_main():
        print(message, file=stream or sys.stdout, flush=True)


def warn(message: str) -> None:
    """Prints `fft: warning: <message>` to stderr (process 0 only); logs it at INFO (not WARNING:
    absl's handler would print it a second time)."""
    logging.info("warning: %s", message)
    if is_main():
        print(f"fft: warning: {message}", file=sys.stderr, flush=True)


def format_number(n: float) -> str:
    """12345678 -> '12.3M', 4321 -> '4.3k', 17 -> '17'."""
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:g}"


def format_metrics(values: dict[str, Any], limit: int = 6) -> str:
    """'pearson 0.7327 spearman 0.7282 loss 0.81' (numbers to 4 significant digits)."""
    items = [(k, v) for k, v in values.items() if isinstance(v, (int, float))][:limit]
    return " ".join(f"{k} {v:.4g}" for k, v in items)


class TrainProgress:
    """One run's progress: a tqdm bar on a terminal, periodic plain lines otherwise."""

    def __init__(self, total: int, first_step: int, *, stream: TextIO | None = None,
                 interval: float = 60.0, tty: bool | None = None, clock=time.perf_counter):
        self.total = total
        self.stream = stream or sys.stdout
        self.interval = interval
        self.enabled = is_main()
        self.rates = progress_lib.Progress(total, first_step, clock=clock)
        self._clock = clock
        self._last_line = clock()
        self._last_tenth = 10 * first_step // max(total, 1)
        tty = self.stream.isatty() if tty is None else tty
        self._bar = None
        if self.enabled and tty:
            from tqdm import auto as tqdm

            self._bar = tqdm.tqdm(
                total=total, initial=first_step, file=self.stream, unit="step", dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
                desc="train",
            )

    def update(self, step: int, examples: int) -> None:
        """Called after every step (cheap: no device reads)."""
        self.rates.update(step, examples)
        if self._bar is not None:
            self._bar.update(step - self._bar.n)

    def exclude(self, seconds: float) -> None:
        """Time spent evaluating or checkpointing, left out of the rate and ETA."""
        self.rates.exclude(seconds)

    def report(self, step: int, loss: float, learning_rate: float | None) -> None:
        """Shows the loss and learning rate at `step` (called on the logging schedule)."""
        if not self.enabled:
            return
        r = self.rates.rates(step)
        parts = [f"loss {loss:.4f}"]
        if learning_rate is not None:
            parts.append(f"lr {learning_rate:.2e}")
        if r:
            parts.append(f"{r['perf/examples_per_sec']:.1f} ex/s")
        if self._bar is not None:
            self._bar.set_postfix_str(", ".join(parts), refresh=True)
            return
        tenth = 10 * step // max(self.total, 1)
        now = self._clock()
        if tenth > self._last_tenth or now - self._last_line >= self.interval or step == self.total:
            self._last_tenth, self._last_line = tenth, now
            eta = f" ETA {progress_lib.format_seconds(r['perf/eta_seconds'])}" if r and step < self.total else ""
            pct = 100.0 * step / max(self.total, 1)
            print(f"step {step}/{self.total} ({pct:.0f}%) {' '.join(parts)}{eta}", file=self.stream, flush=True)

    def write(self, line: str) -> None:
        """Prints a line (an evaluation) without breaking the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
