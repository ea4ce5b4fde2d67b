"""Checks a run's config before any work: each bad field fails with one line naming it.

`check(config)` raises `ConfigError` for the first field out of range: sizes and intervals that
must be positive integers, fractions outside their range, learning rates that are not finite and
positive, unknown dtype names, and a run with nothing to train. Called by `fft.train.setup`.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections

from fft import errors

DTYPES = ("float32", "bfloat16", "float16")
DROPOUT_RNGS = ("rbg", "threefry2x32", "unsafe_rbg")  # PRNG kinds of the dropout key.
POOLINGS = ("cls", "mean")  # fft.models.POOLINGS (not imported: this module stays light).
CONFIG_POOLINGS = POOLINGS + ("auto",)  # 'auto': the model folder's own (fft.models.loading).


class ConfigError(errors.FftError, ValueError):
    """A config field is out of range; the message names it."""


def _get(config: ml_collections.ConfigDict, path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        if part not in node:
            return None
        node = node[part]
    return node


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first invalid field of `config` (fields it lacks are skipped:
    configs from older versions)."""

    def fail(path: str, value: Any, what: str) -> None:
        raise ConfigError(f"config.{path}={value!r}: {what}")

    def positive_int(path: str) -> None:
        value = _get(config, path)
        if value is not None and (not _is_int(value) or value < 1):
            fail(path, value, "must be an integer >= 1")

    def non_negative_int(path: str) -> None:
        value = _get(config, path)
        if value is not None and (not _is_int(value) or value < 0):
            fail(path, value, "must be an integer >= 0 (0: off)")

    def in_range(path: str, low: float, high: float, low_open: bool, high_open: bool) -> None:
        value = _get(config, path)
        if value is None:
            return
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        ok = ok and (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not ok:
            lo, hi = "(" if low_open else "[", ")" if high_open else "]"
            fail(path, value, f"must be in {lo}{low:g}, {high:g}{hi}")

    for path in ("batch_size", "eval_batch_size", "log_every_steps", "checkpoint.every_steps",
                 "checkpoint.max_to_keep", "data.max_length"):
        positive_int(path)
    for path in ("num_train_steps", "eval_every_steps", "data.max_train_examples",
                 "data.max_eval_examples", "data.pack_length", "data.skip_steps"):
        non_negative_int(path)
    in_range("data.train_fraction", 0.0, 1.0, True, False)
    in_range("data.validation_fraction", 0.0, 0.5, False, True)
    in_range("optim.lr", 0.0, math.inf, True, True)
    in_range("optim.warmup_fraction", 0.0, 1.0, False, True)
    in_range("optim.weight_decay", 0.0, math.inf, False, True)
    in_range("optim.max_grad_norm", 0.0, math.inf, False, True)
    in_range("num_epochs", 0.0, math.inf, False, True)
    if not _get(config, "num_train_steps") and not _get(config, "num_epochs"):
        raise ConfigError(
            f"config.num_epochs={_get(config, 'num_epochs')!r} and config.num_train_steps="
            f"{_get(config, 'num_train_steps')!r}: nothing to train"
        )
    for path, valid in (("model.dtype", DTYPES), ("dropout_rng", DROPOUT_RNGS), ("model.pooling", CONFIG_POOLINGS)):
        value = _get(config, path)
        if value is not None and value not in valid:
            fail(path, value, f"valid: {', '.join(valid)}")
