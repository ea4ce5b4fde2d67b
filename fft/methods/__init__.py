"""Fine-tuning methods as parts: a read-only registry from a method's name to its options and
factory (see :mod:`fft.methods.base` for the interface every method implements).

A run's config names its method (``config.method``) and holds that method's options in a block of
the same name (``config.lora.rank``); ``configs/glue.py:...,method=lora`` builds both. To add a
method: write its module (``OPTIONS`` and ``create(options, config, model) -> base.Method``), add
one line to ``REGISTRY``, and test it. The training loop never learns its name.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import ml_collections

from fft.methods import adapters, base, learners, lora, partitioned, supermask
from fft.methods.base import Method, MethodError, Optimizer, Priming, head_keys, head_regex

__all__ = ["REGISTRY", "Method", "MethodError", "Optimizer", "Priming", "create", "head_keys", "head_regex",
           "priming"]


class Entry(NamedTuple):
    """A registered method: its config block's defaults, its factory and, optionally, its priming
    factory (``(options, config) -> base.Priming | None``)."""

    options: Mapping[str, Any]
    create: Callable[[ml_collections.ConfigDict, ml_collections.ConfigDict, Any], Method]
    priming: Callable[[ml_collections.ConfigDict, ml_collections.ConfigDict], Any] | None = None


def _entry(parts) -> Entry:
    options, create_fn, *priming_fn = parts
    return Entry(types.MappingProxyType(dict(options)), create_fn, *priming_fn)


REGISTRY: Mapping[str, Entry] = types.MappingProxyType(
    {
        "full": _entry(partitioned.FULL),
        "head": _entry(partitioned.HEAD),
        "bitfit": _entry(partitioned.BITFIT),
        "layernorm": _entry(partitioned.LAYERNORM),
        "layers": _entry(partitioned.LAYERS),
        "critical": _entry(partitioned.CRITICAL),
        "rules": _entry(partitioned.RULES),
        "supermask": _entry(supermask.ENTRY),
        "lora": _entry(lora.ENTRY),
        "adapters": _entry(adapters.ENTRY),
        "learners": _entry(learners.ENTRY),
    }
)


def names() -> list[str]:
    return list(REGISTRY)


def entry(name: str) -> Entry:
    """The registry entry of ``name``; MethodError naming the valid methods otherwise."""
    if name not in REGISTRY:
        raise MethodError(f"unknown method {name!r}; valid methods: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def default_options(name: str) -> ml_collections.ConfigDict:
    """A fresh config block with the defaults of method ``name``."""
    return ml_collections.ConfigDict(dict(entry(name).options))


def check_config(config: ml_collections.ConfigDict) -> None:
    """Raises MethodError unless ``config.method`` is registered, its block holds only its own
    options, and no other method's block is present (options of one method passed to another)."""
    name = config.get("method")
    if name is None:
        raise MethodError("config.method is missing; valid methods: " + ", ".join(REGISTRY))
    defaults = entry(name).options
    if name not in config:
        raise MethodError(
            f"config.method is {name!r} but the config has no {name!r} block; choose the method in "
            f"the config argument (--config=configs/glue.py:...,method={name})"
        )
    others = [k for k in config if k in REGISTRY and k != name]
    if others:
        raise MethodError(
            f"config.method is {name!r} but the config has options of {others}: set the method in "
            f"the config argument (configs/glue.py:...,method={others[0]}) or drop those options"
        )
    base.check_options(name, config[name], defaults)


def check_overrides(argv: list[str]) -> None:
    """Raises MethodError for a command-line option of one method given to another
    (``--config=configs/glue.py:method=lora --config.supermask.score_lr=...``); the flag parser
    alone would only say that the config has no ``supermask`` key."""
    chosen = "full"
    for arg in argv:
        if arg.startswith("--config=") and ":" in arg:
            for item in arg.split(":", 1)[1].split(","):
                key, _, value = item.partition("=")
                if key.strip() == "method":
                    chosen = value.strip()
    for arg in argv:
        if arg.startswith("--config."):
            block = arg.removeprefix("--config.").split(".", 1)[0].split("=", 1)[0]
            if block in REGISTRY and block != chosen:
                raise MethodError(
                    f"{arg.split('=', 1)[0]}: an option of method {block!r}, but the run's method is "
                    f"{chosen!r}; choose it with --config=configs/glue.py:...,method={block}"
                )


def create(config: ml_collections.ConfigDict, model: Any) -> Method:
    """Builds the run's method from ``config.method`` and its options block."""
    check_config(config)
    return entry(config.method).create(config[config.method], config, model)


def priming(config: ml_collections.ConfigDict) -> base.Priming | None:
    """The run's priming phase (``base.Priming``), or None when its method has none or it is off."""
    check_config(config)
    factory = entry(config.method).priming
    return None if factory is None else factory(config[config.method], config)


# ---------------------------------------------------------------------------------------------
# Configs written before methods were parts (a `partition` block and a `supermask` block with
# `enabled`): the same run, expressed as a method.


def _legacy_method(partition_block: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    head_lr = {"head_lr": partition_block.get("head_lr", 0.0)}
    if partition_block.get("rules"):
        return "rules", {"rules": partition_block["rules"], **head_lr}
    preset = str(partition_block.get("preset", "full")).strip()
    if preset.startswith("layers:"):
        return "layers", {"select": preset.removeprefix("layers:"), **head_lr}
    if preset.startswith("critical:"):
        k = preset.removeprefix("critical:")
        if not k.isdigit():
            raise MethodError(f"old config: partition.preset={preset!r} has no layer count")
        return "critical", {"k": int(k), "distances_file": partition_block.get("distances_file", ""), **head_lr}
    if preset not in REGISTRY:
        raise MethodError(f"old config: partition.preset={preset!r} is not a method; valid: {', '.join(REGISTRY)}")
    return preset, head_lr


def upgrade_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A config from before ``config.method`` (its ``partition`` and ``supermask`` blocks) as the
    same run under the method interface; configs that have ``method`` come back unchanged."""
    if "method" in config:
        return config
    d = config.to_dict()
    part = d.pop("partition", {}) or {}
    mask = d.pop("supermask", {}) or {}
    if mask.get("enabled"):
        name = "supermask"
        options = {k: v for k, v in mask.items() if k != "enabled"}
    else:
        name, options = _legacy_method(part)
    options = {**entry(name).options, **options}
    d["method"] = name
    d[name] = options
    d.setdefault("feature_cache", bool(part.get("feature_cache", False)))
    return ml_collections.ConfigDict(d)
