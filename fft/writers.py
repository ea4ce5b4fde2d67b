"""Metric writers: log lines on every process, TensorBoard event files on process 0.

clu's `metric_writers` package imports TensorFlow at import time; where TensorFlow is installed we
use `clu.metric_writers.create_default_writer`, elsewhere an equivalent built on tensorboardX with
the same methods (write_scalars, write_hparams, flush, close).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import pathlib
from collections.abc import Mapping
from typing import Any

from absl import logging


class LoggingWriter:
    """Writes scalars as one log line per call."""

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        text = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(scalars.items()))
        logging.info("[%d] %s", step, text)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        logging.info("hparams: %s", json.dumps(hparams, sort_keys=True, default=str))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class TensorboardWriter:
    """TensorBoard event files under `logdir` (via tensorboardX)."""

    def __init__(self, logdir: str | pathlib.Path):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(logdir=str(logdir))

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        for key, value in scalars.items():
            self._writer.add_scalar(key, float(value), global_step=step)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        flat = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
        self._writer.add_text("hparams", json.dumps(flat, sort_keys=True, indent=1), 0)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MultiWriter:
    def __init__(self, writers):
        self._writers = list(writers)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        for w in self._writers:
            w.write_scalars(step, scalars)

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        for w in self._writers:
            w.write_hparams(hparams)

    def flush(self) -> None:
        for w in self._writers:
            w.flush()

    def close(self) -> None:
        for w in self._writers:
            w.close()


def create_writer(workdir: str | pathlib.Path, *, just_logging: bool):
    """Log lines always; TensorBoard events in `workdir` unless `just_logging` (processes > 0)."""
    if importlib.util.find_spec("tensorflow") is not None:
        from clu import metric_writers

        return metric_writers.create_default_writer(str(workdir), just_logging=just_logging)
    if just_logging:
        return LoggingWriter()
    return MultiWriter([LoggingWriter(), TensorboardWriter(workdir)])


def _fmt(value: float) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def finite_or_none(value: Any) -> Any:
    """`value` with every float that is not finite replaced by None, recursively (strict JSON)."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
