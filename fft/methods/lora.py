"""LoRA (Hu et al., 2021): a trained low-rank update ``(alpha / r) * A @ B`` beside frozen kernels.

Targets are Dense layers chosen by path regexes over module paths (the kernel's path without
``/kernel``): ``query_value`` (the default: the query and value projections of every layer, as in
the paper), ``all_linear`` (every encoder Dense and the pooler) or ``;``-separated regexes. For a
kernel ``W`` [in, out], ``A`` [in, r] starts Kaiming-uniform (bound ``1/sqrt(in)``, PEFT's
default) or Gaussian (std ``1/r``) and ``B`` [r, out] starts at zero, so step 0 is the pretrained
model. The head trains in full, and so do the leaves ``train`` selects (PEFT's
``modules_to_save``: e.g. ``pooler/.*`` or ``.*/bias``).

Trainable tree: ``{'lora': {<module path>: {'a': A, 'b': B}}, <head and extra leaves at their own
paths>}``; the frozen tree holds every other leaf. The model code does not change; ``mode`` says
how the update is applied:
  side   ``y = x W + (dropout(x) A) B * scale``: the Dense calls of the targets are
         intercepted (``flax.linen.intercept_methods``); no gradient of ``W`` is ever formed.
  merge  ``W + scale * A @ B`` is formed in ``assemble`` each step; the backward pass then forms
         the full ``dL/dW`` of each target before reducing it to ``A`` and ``B``. No dropout.
  auto   (default) side for at most two targets per layer (query+value), merge for more, or side
         whenever ``dropout`` > 0: the faster one as measured by ``benchmarks/methods_bench.py``.
``benchmarks/methods_bench.py`` measures the two. ``merge`` is the dense task model either way.
The task is stored as A, B and the trained leaves only (``task_delta.safetensors``) and, for BERT,
also as a Hugging Face PEFT folder (:mod:`fft.peft_io`).
"""

from __future__ import annotations

import math
import pathlib
import re
import zlib
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from fft import delta, partition, tree_paths
from fft.methods import base
from fft.models import dropout as hashed_dropout

LORA = "lora"  # Top-level key of the factors in the trainable tree.
DELTA_FILE = "task_delta.safetensors"
PEFT_DIR = "peft"
TARGET_PRESETS = {
    "query_value": r"encoder/layer_\d+/attention/(?:query|value)",
    "all_linear": (
        r"encoder/layer_\d+/(?:attention/(?:query|key|value|output/dense)|intermediate/dense"
        r"|output/dense)|pooler/dense"
    ),
}
INITS = ("kaiming", "gaussian")
MODES = ("auto", "side", "merge")
# `auto` picks `side` up to this many targets per encoder layer, else `merge`: side is faster for
# query+value (0.65x vs 0.68x of full fine-tuning's step), merge for all linear layers (0.94x vs
# 1.34x), MiniLM seq 128 batch 32 on 2 CPU cores (results/bench_methods.json).
AUTO_SIDE_MAX_PER_LAYER = 2

OPTIONS = {
    "rank": 8,
    "alpha": 8.0,  # Scale alpha / rank (Hu et al. used alpha = r = 8 on GLUE).
    "dropout": 0.0,  # Dropout on the LoRA input (side mode only).
    "targets": "query_value",  # 'query_value' | 'all_linear' | ';'-separated module-path regexes.
    "init": "kaiming",  # A's init: 'kaiming' (uniform, bound 1/sqrt(in)) or 'gaussian' (std 1/r).
    "mode": "auto",  # 'side' (x A B beside x W), 'merge' (W + A B each step) or 'auto'.
    "train": "",  # ';'-separated regexes of extra leaves that train in full, e.g. 'pooler/.*'.
    "head_lr": 0.0,  # Peak learning rate of the head and extra leaves; 0 uses optim.lr.
}


def target_regexes(text: str) -> list[str]:
    """Module-path regexes of a ``targets`` option (a preset name or ';'-separated regexes)."""
    text = text.strip()
    if text in TARGET_PRESETS:
        return [TARGET_PRESETS[text]]
    regexes = [r.strip() for r in text.split(";") if r.strip()]
    if not regexes:
        raise base.MethodError(f"config.lora.targets is empty; presets: {sorted(TARGET_PRESETS)}")
    for r in regexes:
        try:
            re.compile(r)
        except re.error as e:
            raise base.MethodError(f"config.lora.targets: invalid regex {r!r}: {e}") from None
    return regexes


def dense_modules(params: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """Module path -> (in, out) of every 2-D ``kernel`` leaf (the Dense layers)."""
    return {
        p.removesuffix("/kernel"): tuple(np.shape(x))
        for p, x in tree_paths.flatten(params).items()
        if p.endswith("/kernel") and np.ndim(x) == 2
    }


def resolve_targets(params, regexes, head: str, rank: int) -> dict[str, tuple[int, int]]:
    """The targeted Dense modules (path -> (in, out)); checks every rule, the head and the rank."""
    modules = {p: s for p, s in dense_modules(params).items() if not re.fullmatch(head, p + "/kernel")}
    chosen: dict[str, tuple[int, int]] = {}
    for r in regexes:
        hit = {p: s for p, s in modules.items() if re.fullmatch(r, p)}
        if not hit:
            raise base.MethodError(
                f"config.lora.targets rule {r!r} matches no Dense layer (head excluded); "
                f"e.g. {sorted(modules, key=tree_paths.natural_key)[:4]}"
            )
        chosen.update(hit)
    for path, (fan_in, fan_out) in chosen.items():
        if not 1 <= rank <= min(fan_in, fan_out):
            raise base.MethodError(
                f"config.lora.rank={rank} must be in 1..{min(fan_in, fan_out)} "
                f"({path} is {fan_in}x{fan_out})"
            )
    return tree_paths.natural_order(chosen)


def init_factors(rng: jax.Array, targets: Mapping[str, tuple[int, int]], rank: int, init: str) -> dict:
    """{path: {'a': A [in, r], 'b': zeros [r, out]}}, A drawn from ``fold_in(rng, crc32(path))``."""
    out = {}
    for path, (fan_in, fan_out) in targets.items():
        key = jax.random.fold_in(rng, zlib.crc32(path.encode()) & 0x7FFFFFFF)
        if init == "kaiming":  # kaiming_uniform(a=sqrt(5)) on [r, in]: bound 1/sqrt(in).
            bound = 1.0 / math.sqrt(fan_in)
            a = jax.random.uniform(key, (fan_in, rank), jnp.float32, -bound, bound)
        else:
            a = jax.random.normal(key, (fan_in, rank), jnp.float32) / rank
        out[path] = {"a": np.asarray(a), "b": np.zeros((rank, fan_out), np.float32)}
    return out


def fold(params: Mapping[str, Any], factors: Mapping[str, Any], scale: float) -> dict:
    """``params`` with ``scale * A @ B`` added to each factored kernel (the dense task model)."""
    flat = tree_paths.flatten(params)
    for module, ab in _modules(factors).items():
        w = flat[f"{module}/kernel"]
        update = jnp.matmul(ab["a"], ab["b"], precision=jax.lax.Precision.HIGHEST)
        flat[f"{module}/kernel"] = w + jnp.asarray(scale, w.dtype) * update.astype(w.dtype)
    return tree_paths.unflatten(flat)


def _modules(factors: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{module path: {'a': A, 'b': B}} from the nested factors tree."""
    flat = tree_paths.flatten(factors)
    out: dict[str, dict[str, Any]] = {}
    for path, x in flat.items():
        module, _, name = path.rpartition("/")
        out.setdefault(module, {})[name] = x
    return out


class SideModel:
    """The base model with each targeted Dense computing ``x W + b + (drop(x) A) B * scale``.

    Duck-types the flax module for the steps, the feature cache and the evaluation: ``apply``
    takes the parameters with a top-level ``'lora'`` subtree (from ``assemble``); every other
    attribute is the base model's. Per-example factors (a leading batch axis on ``A`` and ``B``,
    as in multi-task serving) apply example ``i``'s factors to row ``i``.
    """

    def __init__(self, base_model, scale: float, dropout: float):
        self.base, self.scale, self.dropout = base_model, scale, dropout

    def __getattr__(self, name):
        return getattr(self.base, name)

    def apply(self, variables, *args, **kwargs):
        params = dict(variables["params"])
        factors = _modules(params.pop(LORA, {}))
        deterministic = kwargs.get("deterministic", True)  # Prefix calls have no dropout.
        interceptor = side_interceptor(factors, self.scale, self.dropout, deterministic)
        with nn.intercept_methods(interceptor):
            return self.base.apply({"params": params}, *args, **kwargs)


def low_rank(x: jax.Array, a: jax.Array, b: jax.Array) -> jax.Array:
    """``(x A) B`` in x's dtype; per-example factors ([batch, in, r], [batch, r, out]) apply
    example i's factors to row i of x [batch, ..., in]."""
    a, b = a.astype(x.dtype), b.astype(x.dtype)
    if a.ndim == 3:
        return jnp.einsum("b...r,bro->b...o", jnp.einsum("b...i,bir->b...r", x, a), b)
    return jnp.matmul(jnp.matmul(x, a), b)


def side_interceptor(factors: Mapping[str, Mapping[str, Any]], scale: float, dropout: float, deterministic: bool):
    """A flax method interceptor adding the low-rank path to the Dense layers named in ``factors``."""

    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__" or not isinstance(module, nn.Dense):
            return next_fun(*args, **kwargs)
        ab = factors.get("/".join(module.scope.path))
        y = next_fun(*args, **kwargs)
        if ab is None:
            return y
        x = args[0]
        if dropout and not deterministic:
            x = hashed_dropout.dropout(x, dropout, module.make_rng("dropout"))
        return y + low_rank(x, ab["a"], ab["b"]).astype(y.dtype) * jnp.asarray(scale, y.dtype)

    return interceptor


def export_peft(trainable, out_dir: pathlib.Path, config, rank: int, alpha: float, dropout: float) -> dict:
    """Also writes the task as a Hugging Face PEFT folder (fft.peft_io), where PEFT can express
    it (BERT; extra trained leaves only as whole modules); returns what happened, for the report."""
    from fft import peft_io
    from fft.models import loading

    if config.model.random_init.enabled:
        return {"peft_dir": None, "peft_error": "a random-init model has no base model PEFT could load"}
    if loading.config_pooling(config.model) != "cls":
        return {"peft_dir": None, "peft_error": "mean pooling: a PEFT BertForSequenceClassification pools "
                "[CLS] through the pooler, so it would compute other logits"}
    name = config.model.name
    base_name = loading.MINILM_HUB_NAME if str(name).casefold() in loading.MINILM_NAMES else str(name)
    flat = tree_paths.flatten(_without_factors(trainable))
    factors = {m: (ab["a"], ab["b"]) for m, ab in _modules(trainable[LORA]).items()}
    try:
        size = peft_io.save(out_dir, lora=factors, rank=rank, alpha=alpha, modules_to_save=flat,
                            base_model_name_or_path=base_name, dropout=dropout)
    except (peft_io.AdapterError, ValueError, OSError) as e:
        logging.info("LoRA task not written as a PEFT folder: %s", e)
        return {"peft_dir": None, "peft_error": str(e)}
    return {"peft_dir": PEFT_DIR, "peft_bytes": size}


def _without_factors(trainable):
    return {k: v for k, v in trainable.items() if k != LORA}


def _per_layer(model, regexes) -> int:
    """How many of a BERT layer's six Dense layers the target rules select (layer 0's count)."""
    names = ("attention/query", "attention/key", "attention/value", "attention/output/dense",
             "intermediate/dense", "output/dense")
    return sum(any(re.fullmatch(r, f"encoder/layer_0/{n}") for r in regexes) for n in names)


def create(options: ml_collections.ConfigDict, config: ml_collections.ConfigDict, model) -> base.Method:
    rank, alpha = int(options.rank), float(options.alpha)
    if rank < 1:
        raise base.MethodError(f"config.lora.rank={rank} must be >= 1")
    if options.init not in INITS:
        raise base.MethodError(f"config.lora.init={options.init!r}; valid: {', '.join(INITS)}")
    if options.mode not in MODES:
        raise base.MethodError(f"config.lora.mode={options.mode!r}; valid: {', '.join(MODES)}")
    if not 0.0 <= options.dropout < 1.0:
        raise base.MethodError(f"config.lora.dropout={options.dropout} must be in [0, 1)")
    if options.dropout and options.mode == "merge":
        raise base.MethodError("config.lora.dropout needs config.lora.mode='side' (merge has no LoRA input)")
    regexes = target_regexes(options.targets)
    extra = [r.strip() for r in options.train.split(";") if r.strip()]
    scale = alpha / rank
    head = base.head_regex(model)
    num = base.num_layers(model)
    mode = options.mode
    if mode == "auto":
        mode = "side" if options.dropout or _per_layer(model, regexes) <= AUTO_SIDE_MAX_PER_LAYER else "merge"
    side = mode == "side"
    run_model = SideModel(model, scale, options.dropout) if side else model

    def trains(path: str) -> bool:
        return re.fullmatch(head, path) is not None or any(re.fullmatch(r, path) for r in extra)

    def init(params, rng):
        targets = resolve_targets(params, regexes, head, rank)
        for r in extra:
            if not any(re.fullmatch(r, p) for p in tree_paths.flatten(params)):
                raise base.MethodError(f"config.lora.train rule {r!r} matches no parameter")
        trained, frozen = base.split_paths(params, trains)
        factors = tree_paths.unflatten(
            {f"{m}/{k}": v for m, ab in init_factors(rng, targets, rank, options.init).items() for k, v in ab.items()}
        )
        logging.info(
            "LoRA r=%d alpha=%g (scale %g) on %d Dense layers (%d factor entries), %s mode; full: %s",
            rank, alpha, scale, len(targets), partition.count_params(factors), mode,
            sorted(tree_paths.flatten(trained)),
        )
        return {LORA: factors, **trained}, frozen

    def merge(trainable, frozen):
        return fold(base.merge(_without_factors(trainable), frozen), trainable[LORA], scale)

    def assemble(trainable, frozen):
        if not side:
            return merge(trainable, frozen)
        return side_assemble(trainable, frozen)

    def optimizer(trainable, total_steps):
        labels = {k: jax.tree.map(lambda _, k=k: "lora" if k == LORA else "head", v) for k, v in trainable.items()}
        lrs = {"lora": config.optim.lr, "head": options.head_lr or config.optim.lr}
        return base.group_adamw(labels, lrs, config.optim, total_steps)

    def export(trainable, directory, metadata):
        directory = pathlib.Path(directory)
        meta = {**metadata, "lora_rank": str(rank), "lora_alpha": repr(alpha), "lora_targets": options.targets}
        size = delta.export_delta(trainable, directory / DELTA_FILE, meta)
        report = {"stored_bytes": size, "file": DELTA_FILE,
                  "factor_entries": partition.count_params(trainable[LORA])}
        report.update(export_peft(trainable, directory / PEFT_DIR, config, rank, alpha, options.dropout))
        return report

    def import_task(directory, params):
        trained, _ = delta.load_delta(pathlib.Path(directory) / DELTA_FILE)
        factors = trained.pop(LORA)
        return fold(delta.apply_delta(params, trained), factors, scale)

    def cache_start(trainable):
        return base.lowest_layer(tree_paths.flatten(trainable), num)

    def side_assemble(trainable, frozen):
        return {**base.merge(_without_factors(trainable), frozen), LORA: trainable[LORA]}

    def scaled(trainable):  # Serving folds each task's scale into its B (tasks may differ).
        flat = tree_paths.flatten(trainable)
        for p in flat:
            if p.startswith(LORA + "/") and p.endswith("/b"):
                flat[p] = np.asarray(flat[p]) * np.float32(scale)
        return tree_paths.unflatten(flat)

    return base.Method(
        name="lora", model=run_model, init=init, assemble=assemble, optimizer=optimizer,
        export=export, import_task=import_task, cache_start=cache_start, merge=merge,
        # Serving: fft.multitask adds each example's factors beside the frozen kernels itself.
        serving=base.Serving(model, lambda tr, fr: base.merge(_without_factors(tr), fr), scaled),
        description=f"lora r={rank} alpha={alpha:g} targets={options.targets} mode={mode}",
    )


ENTRY = (OPTIONS, create)
