"""Shared pieces of the experiment configs: the `arg` string parser and default blocks.

A config file is loaded as `--config=configs/glue.py:task=rte,model=minilm,tiny`; the part after
':' reaches `get_config(arg)` and is parsed here into typed fields.
"""

from __future__ import annotations

import pathlib
from typing import Any

import ml_collections

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHIPPED_GLUE_DIR = REPO_ROOT / "data" / "glue"


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
    """Parses 'key=value,flag,...' into a ConfigDict typed like `defaults`.

    A bare word (no '=') sets a boolean default to True. Every key must be one of `defaults`,
    and every value must parse as the default's type.

    Raises:
      ValueError: naming the unknown key or the value that does not parse.
    """
    parsed = dict(defaults)
    for item in filter(None, (arg or "").split(",")):
        key, sep, value = item.partition("=")
        key = key.strip()
        if key not in defaults:
            raise ValueError(
                f"Unknown config argument {key!r} in {arg!r}; valid: {sorted(defaults)}"
            )
        kind = type(defaults[key])
        if not sep:
            if kind is not bool:
                raise ValueError(f"Config argument {key!r} needs a value ({key}=...)")
            parsed[key] = True
        elif kind is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"Config argument {key}={value!r} is not a boolean")
            parsed[key] = value.lower() in ("true", "1")
        else:
            try:
                parsed[key] = kind(value)
            except ValueError as e:
                raise ValueError(f"Config argument {key}={value!r} is not a {kind.__name__}") from e
    return ml_collections.ConfigDict(parsed)


def optim_config(lr: float = 5e-5) -> ml_collections.ConfigDict:
    """AdamW with linear warmup then linear decay to zero (the usual BERT recipe)."""
    return ml_collections.ConfigDict(
        {
            "lr": lr,
            "warmup_fraction": 0.1,
            "weight_decay": 0.01,
            "b1": 0.9,
            "b2": 0.999,
            "eps": 1e-8,
            "max_grad_norm": 1.0,  # 0 disables clipping.
        }
    )


def mesh_config() -> ml_collections.ConfigDict:
    """Data parallel over all devices; params replicated unless `param_rules` shard them."""
    return ml_collections.ConfigDict(
        {
            "shape": (-1, 1),  # (data, model); -1 takes all remaining devices.
            "axes": ("data", "model"),
            # Ordered (regex over '/'-joined param path, PartitionSpec tuple) rules; first match
            # wins; unmatched params are replicated. Example to shard the feed-forward over the
            # model axis: (('.*/intermediate/dense/kernel', (None, 'model')),
            #              ('.*/output/dense/kernel', ('model', None))).
            "param_rules": (),
        }
    )


def checkpoint_config() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"every_steps": 200, "max_to_keep": 2})
