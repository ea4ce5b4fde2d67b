"""Progress of a long loop: periodic log lines with step, rate and ETA."""

from __future__ import annotations

import time

from absl import logging


def format_seconds(seconds: float) -> str:
    seconds = round(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """Tracks steps and examples since a start point and reports rate and ETA.

    The clock starts at the first `update` after construction (or `restart`), so compilation of
    the first step is reported separately from the steady-state rate.
    """

    def __init__(self, total_steps: int, first_step: int = 0, clock=time.perf_counter):
        self.total_steps = total_steps
        self._clock = clock
        self._t0: float | None = None
        self._step0 = first_step
        self._examples = 0
        self._pause = 0.0

    def update(self, step: int, examples: int) -> None:
        if self._t0 is None:
            self._t0, self._step0, self._examples = self._clock(), step, 0
            return
        self._examples += examples

    def exclude(self, seconds: float) -> None:
        """Removes time spent outside training (evaluation, checkpoints) from the rate."""
        self._pause += seconds

    def rates(self, step: int) -> dict[str, float]:
        if self._t0 is None or step <= self._step0:
            return {}
        elapsed = max(self._clock() - self._t0 - self._pause, 1e-9)
        steps_per_sec = (step - self._step0) / elapsed
        return {
            "perf/steps_per_sec": steps_per_sec,
            "perf/examples_per_sec": self._examples / elapsed,
            "perf/eta_seconds": (self.total_steps - step) / steps_per_sec,
        }

    def log(self, step: int, extra: str = "") -> None:
        r = self.rates(step)
        pct = 100.0 * step / max(self.total_steps, 1)
        if not r:
            logging.info("step %d/%d (%.1f%%) %s", step, self.total_steps, pct, extra)
            return
        logging.info(
            "step %d/%d (%.1f%%) %.2f steps/s %.1f ex/s ETA %s %s",
            step,
            self.total_steps,
            pct,
            r["perf/steps_per_sec"],
            r["perf/examples_per_sec"],
            format_seconds(r["perf/eta_seconds"]),
            extra,
        )
