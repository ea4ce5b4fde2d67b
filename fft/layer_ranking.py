"""Which encoder layers are worth fine-tuning? A gradient ranking computed before training.

The `critical` method (fft.methods.partitioned) trains the k layers a ranking file names first.
Ranking by how far each layer moved in a full fine-tuning run (rel_l1, ``fft.analyze``) needs that
run first and, on CoLA, picks layers 0 and 1 (dev MCC 0.0 where the top two layers give 20.4):
AdamW moves every coordinate by about the learning rate whatever its gradient, so the layers'
relative distances hardly differ (0.0195 to 0.0216 on CoLA) and their order says little about
use. This module ranks the layers by how much a training step on each could lower the training
loss, measured at step 0, before any training:

  1. The run's model and data exactly as ``fft.train`` builds them (``load_model``, ``load_data``
     with ``data.validation_fraction`` and ``train_fraction``, packing), with method ``full``
     (every parameter differentiable) whatever ``config.method`` names.
  2. Head warm-up. A fresh random head (N(0, 0.02) kernel) makes the encoder's gradients small
     and their direction random (they are the head's kernel times the residual), so the head
     alone is fitted first, as the ``head`` method would train it, on frozen features: the pooled
     features of up to ``warmup_examples`` training examples that are *not* in the measured
     batches are computed once (no dropout), and full-batch Adam (up to ``warmup_steps`` at
     ``warmup_lr``) fits the head on 80% of them; the head kept is the one with the lowest loss
     on the other 20% (early stopping: a linear probe overfits quickly where the features do
     not separate the task, e.g. CoLA, and an overfit head's residuals are not the task's).
  3. Gradients. The run's first ``batches`` training batches (epoch 0 in its order, seeded by
     ``config.seed``), each differentiated w.r.t. all parameters at the pretrained encoder with
     the warmed-up head, dropout off. Per group of parameters (``fft.distances`` groups:
     embeddings, layer_<i>, pooler, head) we keep each batch's squared L2 and L1 gradient norms
     and the sum of the gradients (one parameter-sized buffer).

The statistic (``score``; the ranking sorts by it, largest first):

    score_l = ||theta_l|| * mean over batches b of ||g_{b,l}||

the first-order decrease of a batch's training loss when layer l alone takes one normalized step
(relative size 1: ||d theta_l|| = ||theta_l||, along that batch's gradient; scale by the step's
relative size, e.g. 1e-3), averaged over the run's first steps. Why this one:

  * Dimension-fair: a step is sized relative to the layer's own weights, so the score does not
    depend on the units of its parameters: a rescaling theta -> c theta that leaves the function
    alone (a following layer norm allows it) gives g -> g / c and leaves ||theta|| ||g||
    unchanged, while the relative gradient ||g|| / ||theta|| scales as c^-2 and
    ||g||^2 / ||theta|| as c^-3. Across groups of different sizes it
    adds up over parameters (a larger group can lower the loss more, which is what training it
    buys); the encoder layers of one model all have the same shape.
  * Per batch, not of the mean gradient: a training step sees one batch. The consistent part of
    the gradient, ||E[g_l]||, is also estimated (``signal_norm``: the mean inner product of
    *different* batches' gradients, ``(||sum_b g_b||^2 - sum_b ||g_b||^2) / (N (N - 1))``,
    unbiased, signed square root), but at the pretrained weights it is far below the batch noise:
    on CoLA (16 batches of 32) the estimate is within noise of 0 for every layer
    (``consistency`` = ||E g||^2 / mean ||g_b||^2, about -0.03..0; with 96 batches it comes out
    at 0.01..0.03 and puts layers 4 and 5 first, as the score does with 16), so ranking by it
    ranks noise, and a negative estimate times a large norm would put the most sensitive layers
    last. The per-
    batch norm measures how strongly a layer's parameters move the loss of the examples at hand,
    the capacity a step on it has.

Also reported per group, for comparison (``alternatives`` holds the ranking each gives):
``grad_norm`` (mean ||g_{b,l}||), ``rel_grad_norm`` (grad_norm / ||theta_l||, the relative gradient
norm), ``adam_step`` (mean ||g_{b,l}||_1: the first-order decrease of a batch's loss from one AdamW
step of unit learning rate on layer l, whose first update moves every coordinate by the learning
rate, sign(g); what the layer gives under the runs' optimizer, not scale-invariant), and
``signal_score`` (||theta_l|| * signal_norm: the decrease of the *expected* loss for a normalized
step along E[g]; meaningful only where ``consistency`` is clearly above 0).

The written JSON (``to_json``) is the layout ``fft.partition.ranked_layers`` reads:
``{"ranking": [{"group": "layer_5", "rank": 1, "score": ...}, ...], ...}``, encoder layers only,
most useful first; other groups are under ``other_groups``, the settings under ``settings``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import re
import time
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from fft import distances, methods, partition, steps, train, tree_paths, validate, writers
from fft.data import batching, glue, tokenize

STATISTIC = "score = ||theta_l|| * mean_b ||g_b,l|| (first-order loss decrease of a normalized step)"
ALTERNATIVES = ("grad_norm", "rel_grad_norm", "adam_step", "signal_score")
HELD_FRACTION = 0.2  # Of the warm-up examples: picks the warm-up step (early stopping).
_WARMUP_SALT = 0x77726D75  # Seeds the choice of warm-up examples apart from other draws.


@dataclasses.dataclass(frozen=True)
class Settings:
    """How the ranking is measured (see the module docstring).

    Attributes:
      batches: training batches whose gradients are measured (the run's first ones).
      warmup_steps: at most this many full-batch Adam steps fitting the head alone first (the
        step with the lowest held-out loss is kept); 0 keeps the fresh head.
      warmup_lr: their learning rate.
      warmup_examples: at most this many training examples (outside the measured batches) to fit
        the head on (80%) and stop it early on (20%).
    """

    batches: int = 16
    warmup_steps: int = 2000
    warmup_lr: float = 1e-2
    warmup_examples: int = 4096

    def __post_init__(self):
        if self.batches < 1 or self.warmup_steps < 0 or self.warmup_lr <= 0 or self.warmup_examples < 2:
            raise ValueError(f"Settings need batches >= 1, warmup_steps >= 0, warmup_lr > 0, "
                             f"warmup_examples >= 2: {self}")


@dataclasses.dataclass
class Ranking:
    """The result of `rank`: per-group statistics, the layer order, and what was measured.

    Attributes:
      groups: ``{group: {statistic: float}}`` in model order (embeddings, layer_0.., head).
      ranking: encoder layer groups (``layer_<i>``), most useful first.
      settings: the `Settings` used.
      info: task, model, seed, pooling, example counts, warm-up losses, timing, the config.
      batch_indices: per measured batch, the training-example indices it held (not in the JSON).
      params: the parameters the gradients were taken at, warmed-up head included (host; not
        in the JSON).
    """

    groups: dict[str, dict[str, float]]
    ranking: list[str]
    settings: Settings
    info: dict[str, Any]
    batch_indices: list[np.ndarray] = dataclasses.field(default_factory=list)
    params: Any = None

    def layers(self) -> list[int]:
        return [int(g.removeprefix("layer_")) for g in self.ranking]


# ---------------------------------------------------------------------------------------------
# Config and data, as fft.train builds them


def full_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with method ``full`` (everything differentiable) and no feature cache."""
    d = methods.upgrade_config(config).to_dict()
    for name in methods.names():
        d.pop(name, None)
    d["method"] = "full"
    d["full"] = methods.default_options("full").to_dict()
    d["feature_cache"] = False
    return ml_collections.ConfigDict(d)


def measured_batches(data, config: ml_collections.ConfigDict, count: int) -> Iterator[dict[str, np.ndarray]]:
    """The run's first `count` training batches (into epoch 1 and on if an epoch is shorter)."""
    done, epoch = 0, 0
    while done < count:
        for batch in train.epoch_batches(data, config, epoch):
            yield batch
            done += 1
            if done == count:
                return
        epoch += 1


def warmup_indices(num_train: int, measured: np.ndarray, limit: int, seed: int) -> tuple[np.ndarray, bool]:
    """(example indices to fit the head on, whether they overlap the measured ones): up to
    `limit` examples outside `measured` in an order drawn by `seed`; all examples if none is left."""
    rest = np.setdiff1d(np.arange(num_train), measured)
    overlap = rest.size == 0
    if overlap:
        rest = np.arange(num_train)
    rng = np.random.default_rng([seed, _WARMUP_SALT])
    return rng.permutation(rest)[:limit], overlap


# ---------------------------------------------------------------------------------------------
# Head warm-up


def _head_logits(module, pooled):
    """The model's head on pooled features (BERT: classifier; DistilBERT: pre_classifier first).
    Head dropout is the identity here (no dropout while measuring)."""
    if "pre_classifier" in module.head_names:
        pooled = module.pre_classifier(pooled)
    return module.classifier(pooled)


@functools.partial(jax.jit, static_argnames="model")
def _pool(params, batch, *, model):
    return model.apply(
        {"params": params}, batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
        deterministic=True, method=model.pool,
    )


def pooled_features(model, params, encoded, *, batch_size: int, buckets) -> np.ndarray:
    """What the head reads for every example of `encoded`, [n, width] float32 (no dropout)."""
    out = None
    for batch in batching.eval_batches(encoded, batch_size, buckets=buckets):
        index = batch.pop("index")
        pooled = np.asarray(jax.device_get(_pool(params, batch, model=model)), np.float32)
        if out is None:
            out = np.zeros((len(encoded), pooled.shape[-1]), np.float32)
        real = index >= 0
        out[index[real]] = pooled[real]
    return out


def head_loss(model, head, features, labels, is_regression: bool) -> jax.Array:
    """Mean loss of the head alone on pooled `features`."""
    logits = model.apply({"params": head}, features, method=_head_logits)
    return jnp.mean(steps.example_losses(logits, labels, is_regression))


@functools.partial(jax.jit, static_argnames=("model", "is_regression", "num_steps", "lr"))
def _fit_head(head, fit_x, fit_y, held_x, held_y, *, model, is_regression: bool, num_steps: int, lr: float):
    tx = optax.adam(lr)
    loss_on = functools.partial(head_loss, model, is_regression=is_regression)
    fit_loss = functools.partial(loss_on, features=fit_x, labels=fit_y)
    held_loss = functools.partial(loss_on, features=held_x, labels=held_y)

    def step(carry, i):
        params, opt_state, best, best_loss, best_step = carry
        updates, opt_state = tx.update(jax.grad(fit_loss)(params), opt_state, params)
        params = optax.apply_updates(params, updates)
        loss = held_loss(params)
        better = loss < best_loss
        best = jax.tree.map(lambda new, old: jnp.where(better, new, old), params, best)
        return (params, opt_state, best, jnp.where(better, loss, best_loss),
                jnp.where(better, i + 1, best_step)), None

    start = (head, tx.init(head), head, held_loss(head), jnp.int32(0))
    (_, _, best, best_loss, best_step), _ = jax.lax.scan(step, start, jnp.arange(num_steps))
    return best, best_step, {"fit_before": fit_loss(head), "fit_after": fit_loss(best),
                             "held_before": held_loss(head), "held_after": best_loss}


def fit_head(model, head, features: np.ndarray, labels: np.ndarray, *, is_regression: bool,
             num_steps: int, lr: float) -> tuple[Any, dict[str, Any]]:
    """(head, report): up to `num_steps` full-batch Adam steps on the first 80% of the examples;
    the head after the step with the lowest loss on the last 20% (the input head if none is
    lower). The report has that step and the losses before and after on both parts."""
    n = len(labels)
    cut = n - max(1, round(HELD_FRACTION * n)) if n > 1 else n
    best, best_step, losses = jax.device_get(_fit_head(
        head, jnp.asarray(features[:cut]), jnp.asarray(labels[:cut]), jnp.asarray(features[cut:]),
        jnp.asarray(labels[cut:]), model=model, is_regression=is_regression, num_steps=num_steps, lr=lr,
    ))
    report = {"fit_examples": cut, "held_examples": n - cut, "best_step": int(best_step),
              **{k: float(v) for k, v in losses.items()}}
    return best, report


# ---------------------------------------------------------------------------------------------
# Gradients and statistics


def _group_members(params) -> dict[str, list[str]]:
    return distances.assign_groups(tree_paths.flatten(params), distances.DEFAULT_LAYER_GROUPS)


def _group_sums(members, flat, fn):
    return {g: sum(fn(flat[p]) for p in paths) for g, paths in members.items()}


def batch_loss(model, params, batch, is_regression: bool) -> jax.Array:
    """The weighted mean training loss of a (bucketed or packed) batch, without dropout."""
    out = steps.eval_step(params, {}, batch, model=model, is_regression=is_regression)
    return out["loss_sum"] / jnp.maximum(out["weight_sum"], 1.0)


@functools.partial(jax.jit, static_argnames=("model", "is_regression"), donate_argnums=(1,))
def _accumulate(params, grad_sum, batch, *, model, is_regression: bool):
    """One batch: (sum of gradients so far, loss, {group: ||g||_2^2}, {group: ||g||_1})."""
    loss, g = jax.value_and_grad(lambda p: batch_loss(model, p, batch, is_regression))(params)
    members, flat = _group_members(params), tree_paths.flatten(g)
    sq = _group_sums(members, flat, lambda x: jnp.sum(jnp.square(x)))
    l1 = _group_sums(members, flat, lambda x: jnp.sum(jnp.abs(x)))
    return jax.tree.map(jnp.add, grad_sum, g), loss, sq, l1


@jax.jit
def _squared_norms(params, grad_sum):
    """Per group: (||sum_b g_b||^2, ||theta||^2)."""
    members, square = _group_members(params), lambda x: jnp.sum(jnp.square(x))
    return (_group_sums(members, tree_paths.flatten(grad_sum), square),
            _group_sums(members, tree_paths.flatten(params), square))


def statistics(param_sq: float, batch_sq, batch_l1, total_sq: float, size: int) -> dict[str, float]:
    """One group's statistics (see the module docstring) from ||theta||^2, each batch's ||g_b||^2
    and ||g_b||_1, and ||sum_b g_b||^2; a pure function of them."""
    sq, l1 = np.asarray(batch_sq, np.float64), np.asarray(batch_l1, np.float64)
    n = len(sq)
    if n == 0 or len(l1) != n:
        raise ValueError(f"need the same number (>= 1) of per-batch norms; got {len(sq)} and {len(l1)}")
    # Unbiased ||E g||^2: the mean inner product of different batches' gradients (one batch: ||g||^2).
    signal_sq = total_sq if n == 1 else (total_sq - sq.sum()) / (n * (n - 1))
    signal = math.copysign(math.sqrt(abs(signal_sq)), signal_sq)
    norm = math.sqrt(param_sq)
    grad_norm = float(np.sqrt(sq).mean())
    return {
        "score": norm * grad_norm,
        "grad_norm": grad_norm,
        "rel_grad_norm": grad_norm / norm if norm > 0 else math.inf,
        "adam_step": float(l1.mean()),
        "signal_score": norm * signal,
        "signal_norm": signal,
        "consistency": signal_sq / sq.mean() if sq.mean() > 0 else 0.0,
        "param_norm": norm,
        "params": int(size),
    }


def measure(model, params, batches, *, is_regression: bool) -> tuple[dict[str, dict[str, float]], dict]:
    """Per-group gradient statistics over `batches` at `params` (see the module docstring).

    Returns:
      ({group: `statistics(...)`} in model order, {"mean_loss", "batch_indices"}).
    """
    members = _group_members(params)
    flat = tree_paths.flatten(params)
    params = jax.device_put(params)
    grad_sum = jax.tree.map(jnp.zeros_like, params)
    batch_sq: dict[str, list[float]] = {g: [] for g in members}
    batch_l1: dict[str, list[float]] = {g: [] for g in members}
    losses, indices = [], []
    for batch in batches:
        batch = dict(batch)
        index = batch.pop("index")
        indices.append(index[index >= 0])
        grad_sum, loss, sq, l1 = _accumulate(params, grad_sum, batch, model=model,
                                             is_regression=is_regression)
        sq, l1 = jax.device_get((sq, l1))
        losses.append(float(loss))
        for g in members:
            batch_sq[g].append(float(sq[g]))
            batch_l1[g].append(float(l1[g]))
    if not losses:
        raise ValueError("no batches to measure")
    total_sq, param_sq = jax.device_get(_squared_norms(params, grad_sum))
    table = {
        g: statistics(float(param_sq[g]), batch_sq[g], batch_l1[g], float(total_sq[g]),
                      partition.count_params([flat[p] for p in paths]))
        for g, paths in members.items()
    }
    return table, {"mean_loss": float(np.mean(losses)), "batch_indices": indices}


def order(groups: Mapping[str, Mapping[str, float]], statistic: str = "score") -> list[str]:
    """Encoder layer groups sorted by `statistic`, largest first (ties keep model order)."""
    layers = [g for g in groups if re.fullmatch(r"layer_\d+", g)]
    return sorted(layers, key=lambda g: -groups[g][statistic])


# ---------------------------------------------------------------------------------------------
# The whole ranking


def rank(config: ml_collections.ConfigDict, settings: Settings = Settings()) -> Ranking:
    """Ranks the encoder layers of `config`'s model on `config`'s task (see the module docstring)."""
    t0 = time.perf_counter()
    config = full_config(config)
    validate.check(config)
    methods.check_config(config)
    task = glue.get_task(config.task)
    config = train.with_concrete_pooling(config)
    bundle = train.load_model(config, task.num_labels)
    method = methods.create(config, bundle.model)
    params, frozen = method.init(bundle.params, train.method_key(config))
    if frozen:
        raise AssertionError("method full left parameters frozen")
    params = jax.device_get(params)
    model, regression = method.model, task.is_regression
    data = train.load_data(config, tokenize.load_tokenizer(bundle.tokenizer_dir))
    steps_per_epoch = batching.num_train_batches(data.train, config.batch_size)
    num_steps = train.total_steps(config, steps_per_epoch)
    data = train.with_packing(config, data, num_steps / steps_per_epoch, 1)
    batches = list(measured_batches(data, config, settings.batches))
    measured = np.unique(np.concatenate([b["index"][b["index"] >= 0] for b in batches]))

    warm: dict[str, Any] = {"max_steps": settings.warmup_steps, "lr": settings.warmup_lr}
    if settings.warmup_steps:
        t1 = time.perf_counter()
        idx, overlap = warmup_indices(len(data.train.labels), measured, settings.warmup_examples, config.seed)
        subset = data.train.select(idx)
        features = pooled_features(model, params, subset, batch_size=config.eval_batch_size,
                                   buckets=data.buckets)
        head = {k: params[k] for k in methods.head_keys(model)}
        head, report = fit_head(model, head, features, np.asarray(subset.labels), is_regression=regression,
                                num_steps=settings.warmup_steps, lr=settings.warmup_lr)
        warm.update(report, overlaps_measured=overlap, seconds=time.perf_counter() - t1)
        params = {**params, **head}
    t2 = time.perf_counter()
    groups, found = measure(model, params, batches, is_regression=regression)
    info = {
        "task": task.name,
        "model": bundle.description,
        "pooling": config.model.get("pooling", "cls"),
        "seed": config.seed,
        "batch_size": config.batch_size,
        "packed": data.pack is not None,
        "train_examples": len(data.train.labels),
        "measured_examples": int(measured.size),
        "measured_mean_loss": found["mean_loss"],
        "head_warmup": warm,
        "gradient_seconds": time.perf_counter() - t2,
        "seconds": time.perf_counter() - t0,
        "config": json.loads(config.to_json_best_effort()),
    }
    return Ranking(groups, order(groups), settings, info, found["batch_indices"], params)


def to_json(result: Ranking) -> dict[str, Any]:
    """The JSON layout `fft.partition.ranked_layers` reads, with the scores and the settings."""
    rows = [{"group": g, "rank": r + 1, **result.groups[g]} for r, g in enumerate(result.ranking)]
    return {
        "kind": "gradient",
        "statistic": STATISTIC,
        "ranking": rows,
        "alternatives": {s: order(result.groups, s) for s in ALTERNATIVES},
        "other_groups": {g: v for g, v in result.groups.items() if g not in result.ranking},
        "settings": dataclasses.asdict(result.settings),
        **{k: v for k, v in result.info.items() if k != "config"},
        "config": result.info.get("config"),
    }


def write(result: Ranking, path) -> dict[str, Any]:
    """Writes `to_json(result)` (strict JSON; non-finite numbers become null) and returns it."""
    report = to_json(result)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(writers.finite_or_none(report), indent=1, allow_nan=False) + "\n")
    return report
