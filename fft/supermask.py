"""Supermask fine-tuning: learn binary masks over frozen pretrained weights.

Zhao et al. (2020), "Masking as an efficient alternative to finetuning": the pretrained weights
stay fixed; each selected tensor ``W`` gets a real-valued score tensor ``S`` of the same shape, a
binary mask ``M = h(S)`` is derived from it and the model uses ``W * M``. ``h`` is not
differentiable, so its gradient is replaced by the identity (straight-through estimator), which
makes ``dL/dS = W * dL/dW_eff``. The task head trains normally.

Mask conventions (:class:`MaskConfig`):
  * ``mode='threshold'``: ``M = S > threshold`` (strict: a score equal to the threshold masks
    its weight). Each tensor's sparsity is free to move during training.
  * ``mode='topk'``: per tensor, keep exactly ``k = round(keep_fraction * size)`` (at least 1)
    largest scores; equal scores are ranked by flat (C-order) index, lower index first.

Score init (per tensor, float32; ``t = threshold``, ``c = init_scale``, ``n = size``): exactly
``n0 = round(initial_sparsity * n)`` entries start masked, so initial sparsity is met exactly:
  * ``'constant'``: a random subset (from the seed) of ``n0`` entries gets ``t - c``, the rest
    ``t + c``: every score is ``c`` away from flipping.
  * ``'uniform'``: ``u ~ U[0, 1)`` and ``S = t + c * (u - cut)``, ``cut`` halfway between the
    ``n0``-th and ``n0 + 1``-th smallest ``u``: the ``n0`` smallest draws fall below ``t``.
  * ``'magnitude'``: as ``'uniform'`` with ``u = |W| / max|W|``: the smallest-magnitude weights
    start masked and larger weights have larger scores. The spread of ``u`` is the tensor's:
    where a few outlier weights set ``max|W|`` (MiniLM's FFN output projections: max/median |W|
    136-285 against 8-13 for attention), most scores start within ``c * 0.003`` of the threshold
    and flip after a few Adam steps whatever the gradient says (README "Supermasks": that tensor
    then loses 3-4x more mask entries than any other, in every task).
  * ``'rank'``: as ``'magnitude'`` but ``u = (rank of |W| in its tensor + 1/2) / n``: the same
    order (smallest weights masked, larger weights larger scores) with the same, uniform spread of
    distances to the threshold in every tensor, so how many entries flip is the gradients' doing.
For the last two, ties at the cut are resolved by rank (lowest value, then lowest index, is
masked) and scores are clamped to the correct side of ``t`` (kept ones to at least the next
normal float32 above ``t``), so the count is exact. In topk mode
the init only orders the scores: the mask keeps ``keep_fraction``; set ``keep_fraction = 1 -
initial_sparsity`` to start from the same mask as threshold mode.

Training layout (see :func:`make_assemble`): ``trainable = {'scores': scores, 'head': head}`` and
``frozen`` = the pretrained tree without the head. Scores train with :func:`score_optimizer`
(Adam, optional decoupled L1 pull towards a target sparsity), the head with AdamW
(:func:`make_optimizer` builds both as one ``optax.partition``).
"""

from __future__ import annotations

import dataclasses
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fft import models, optim, tree_paths
from fft.steps import merge_trees

Tree = Any
Schedule = Callable[[jax.Array], jax.Array]

# Every weight matrix of every encoder layer (attention q/k/v/output and the two FFN matrices).
ENCODER_RULE = (
    r"encoder/layer_\d+/(attention/(query|key|value|output/dense)|intermediate/dense|output/dense)"
    r"/kernel"
)
EMBEDDING_RULE = r"embeddings/word_embeddings/embedding"
POOLER_RULE = r"pooler/dense/kernel"
DEFAULT_HEAD_KEYS = models.ALL_HEAD_NAMES  # Any registered model's head (fft.methods.head_keys).
MODES = ("threshold", "topk")
INITS = ("constant", "uniform", "magnitude", "rank")


@dataclasses.dataclass(frozen=True)
class MaskConfig:
    """Which tensors get a mask and how it is derived and initialised (hashable: a jit static).

    Attributes:
      rules: regexes; a leaf is masked when one of them fully matches its '/'-joined path.
      extra_rules: more regexes, e.g. ``(EMBEDDING_RULE, POOLER_RULE)``.
      mode: 'threshold' (``score > threshold``) or 'topk' (keep ``keep_fraction`` per tensor).
      threshold: the cut for threshold mode; also the centre of the initial scores.
      keep_fraction: share of entries kept per tensor in topk mode, in (0, 1].
      init: 'constant', 'uniform', 'magnitude' or 'rank' (see the module docstring).
      initial_sparsity: share of entries masked at init, in [0, 1).
      init_scale: distance scale of the initial scores from the threshold (> 0). With Adam a score
        moves by about the learning rate per step, so ``init_scale / lr`` steps flip a mask entry.
      seed: seeds the init when :func:`init_scores` gets no key.
    """

    rules: tuple[str, ...] = (ENCODER_RULE,)
    extra_rules: tuple[str, ...] = ()
    mode: str = "threshold"
    threshold: float = 0.0
    keep_fraction: float = 0.95
    init: str = "uniform"
    initial_sparsity: float = 0.05
    init_scale: float = 0.05
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "extra_rules", tuple(self.extra_rules))
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if not 0.0 <= self.initial_sparsity < 1.0:
            raise ValueError(f"initial_sparsity must be in [0, 1), got {self.initial_sparsity}")
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1], got {self.keep_fraction}")
        if not self.init_scale > 0.0:
            raise ValueError(f"init_scale must be > 0, got {self.init_scale}")
        for rule in self.all_rules:
            re.compile(rule)

    @property
    def all_rules(self) -> tuple[str, ...]:
        """``rules`` followed by ``extra_rules``."""
        return self.rules + self.extra_rules

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (lists for the rule tuples)."""
        d = dataclasses.asdict(self)
        d["rules"], d["extra_rules"] = list(self.rules), list(self.extra_rules)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MaskConfig:
        """From a dict or an ``ml_collections.ConfigDict``; unknown keys raise ``ValueError``."""
        d = dict(d.to_dict() if hasattr(d, "to_dict") else d)
        unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"Unknown MaskConfig fields: {unknown}")
        return cls(**d)


def _path_seed(path: str) -> int:
    """A stable 31-bit integer from a path (independent of which other tensors are masked)."""
    return zlib.crc32(path.encode()) & 0x7FFFFFFF


# ----------------------------------------------------------------------------- binarizers


@jax.custom_vjp
def _straight_through(scores: jax.Array, hard: jax.Array) -> jax.Array:
    """Forward: ``hard``. Backward: the cotangent goes to ``scores`` unchanged, none to ``hard``."""
    return hard


def _st_fwd(scores, hard):
    return hard, (jnp.zeros((), scores.dtype), jnp.zeros((), hard.dtype))


def _st_bwd(residuals, g):
    score_zero, hard_zero = residuals
    return g.astype(score_zero.dtype), jnp.zeros(g.shape, hard_zero.dtype)


_straight_through.defvjp(_st_fwd, _st_bwd)


@jax.custom_vjp
def _binarize(scores: jax.Array, threshold: jax.Array, like: jax.Array) -> jax.Array:
    return (scores > threshold).astype(like.dtype)


def _binarize_fwd(scores, threshold, like):
    return _binarize(scores, threshold, like), (jnp.zeros((), scores.dtype), threshold, like)


def _binarize_bwd(residuals, g):
    score_zero, threshold, like = residuals
    return g.astype(score_zero.dtype), jnp.zeros_like(threshold), jnp.zeros_like(like)


_binarize.defvjp(_binarize_fwd, _binarize_bwd)


def binarize(scores: jax.Array, threshold: float | jax.Array, dtype: Any = None) -> jax.Array:
    """``(scores > threshold)`` as exact 0/1 in ``dtype`` (default: the scores' dtype).

    Straight-through: the gradient w.r.t. ``scores`` is the incoming gradient (cast to the scores'
    dtype); the threshold gets zero gradient.
    """
    dtype = scores.dtype if dtype is None else dtype
    threshold = jnp.asarray(threshold, scores.dtype)
    return _binarize(scores, threshold, jnp.zeros((), dtype))


def num_kept(size: int, keep_fraction: float) -> int:
    """``k = round(keep_fraction * size)`` clipped to ``[1, size]`` (Python ints, exact)."""
    return max(1, min(int(size), round(float(keep_fraction) * int(size))))


def _descending_ranks(flat: jax.Array) -> jax.Array:
    """Rank of each entry in descending order; equal values: lower index ranks first."""
    order = jnp.argsort(-flat, stable=True)
    return jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))


def _topk_hard(scores: jax.Array, keep_fraction: float | jax.Array, dtype: Any) -> jax.Array:
    """The forward value of :func:`topk_mask` (no gradient)."""
    n = scores.size
    if isinstance(keep_fraction, (int, float)):
        k = num_kept(n, keep_fraction)
    else:
        k = jnp.clip(jnp.round(keep_fraction * n), 1, n).astype(jnp.int32)
    ranks = _descending_ranks(jax.lax.stop_gradient(scores).reshape(-1))
    return (ranks < k).astype(dtype).reshape(scores.shape)


def topk_mask(scores: jax.Array, keep_fraction: float | jax.Array, dtype: Any = None) -> jax.Array:
    """0/1 mask keeping the ``k`` largest scores of the tensor (see :func:`num_kept`).

    ``keep_fraction`` may be traced (e.g. from a schedule); then ``k`` is computed in float32 and
    may differ from :func:`num_kept` by rounding on tensors above ~2**24 entries. Straight-through
    gradient to ``scores``.
    """
    dtype = scores.dtype if dtype is None else dtype
    return _straight_through(scores, _topk_hard(scores, keep_fraction, dtype))


def _mask_leaf(scores: jax.Array, config: MaskConfig, dtype: Any = None) -> jax.Array:
    """The straight-through 0/1 mask of one tensor."""
    if config.mode == "topk":
        return topk_mask(scores, config.keep_fraction, dtype)
    return binarize(scores, config.threshold, dtype)


def _hard_mask(scores: jax.Array, config: MaskConfig, dtype: Any) -> jax.Array:
    """The 0/1 mask of one tensor without gradient."""
    scores = jax.lax.stop_gradient(scores)
    if config.mode == "topk":
        return _topk_hard(scores, config.keep_fraction, dtype)
    return (scores > config.threshold).astype(dtype)


def mask_weight(weight: jax.Array, keep: jax.Array) -> jax.Array:
    """``weight * keep`` for a 0/1 (or bool) ``keep``, written as a select.

    Masked entries are +0.0 whatever the sign of the weight, so the result is bit-identical under
    jit and eagerly (XLA may rewrite a multiply by a 0/1 mask into a select, changing -0.0 to 0).
    """
    return jnp.where(keep.astype(bool), weight, jnp.zeros((), weight.dtype))


@jax.custom_vjp
def _masked_weight(weight: jax.Array, scores: jax.Array, keep: jax.Array) -> jax.Array:
    """:func:`mask_weight` with the straight-through gradient ``dL/dS = W * dL/dW_eff``."""
    return mask_weight(weight, keep)


def _masked_weight_fwd(weight, scores, keep):
    return mask_weight(weight, keep), (weight, keep, jnp.zeros((), scores.dtype))


def _masked_weight_bwd(residuals, g):
    weight, keep, score_zero = residuals
    return g * keep, (g * weight).astype(score_zero.dtype), jnp.zeros_like(keep)


_masked_weight.defvjp(_masked_weight_fwd, _masked_weight_bwd)


# ----------------------------------------------------------------------------- scores


def masked_paths(params: Mapping[str, Any], rules: Sequence[str]) -> list[str]:
    """Paths (in tree order) of the leaves that one of ``rules`` fully matches."""
    patterns = [re.compile(r) for r in rules]
    return [p for p in tree_paths.flatten(params) if any(pt.fullmatch(p) for pt in patterns)]


def _lowest(values: jax.Array, count: int) -> tuple[jax.Array, jax.Array]:
    """(bool mask of exactly ``count`` smallest entries, sorted flat values).

    Ties: the lower flat index counts as smaller.
    """
    flat = values.reshape(-1)
    order = jnp.argsort(flat, stable=True)
    ranks = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
    return (ranks < count).reshape(values.shape), flat[order]


def _init_leaf(key: jax.Array, weight: jax.Array, config: MaskConfig) -> jax.Array:
    """float32 scores for one tensor with exactly ``round(initial_sparsity * n)`` masked."""
    n = weight.size
    n0 = round(config.initial_sparsity * n)
    t = jnp.float32(config.threshold)
    c = jnp.float32(config.init_scale)
    if config.init == "magnitude":
        u = jnp.abs(weight.astype(jnp.float32))
        u = u / jnp.maximum(jnp.max(u), jnp.finfo(jnp.float32).tiny)
    elif config.init == "rank":  # Stable sort: equal magnitudes are ranked by flat index.
        order = jnp.argsort(jnp.abs(weight.astype(jnp.float32)).reshape(-1), stable=True)
        ranks = jnp.zeros(n, jnp.float32).at[order].set(jnp.arange(n, dtype=jnp.float32))
        u = ((ranks + 0.5) / n).reshape(weight.shape)
    else:
        u = jax.random.uniform(key, weight.shape, jnp.float32)
    below, ordered = _lowest(u, n0)
    if config.init == "constant":
        return jnp.where(below, t - c, t + c)
    if 0 < n0 < n:
        cut = 0.5 * (ordered[n0 - 1] + ordered[n0])
    else:
        cut = ordered[min(n0, n - 1)]
    raw = t + c * (u - cut)
    # The smallest float32 above t that is not subnormal (CPUs flush subnormals to zero).
    tiny = jnp.finfo(jnp.float32).tiny
    above_t = jnp.maximum(jnp.nextafter(t, jnp.float32(jnp.inf)), t + tiny)
    return jnp.where(below, jnp.minimum(raw, t), jnp.maximum(raw, above_t))


_init_leaf_jit = jax.jit(_init_leaf, static_argnums=2)


def init_scores(
    rng: jax.Array | None, pretrained: Mapping[str, Any], config: MaskConfig
) -> dict[str, Any]:
    """float32 scores (nested dict) for the leaves of ``pretrained`` that ``config`` masks.

    Args:
      rng: a PRNG key, or None for ``jax.random.PRNGKey(config.seed)``. Each tensor draws from
        ``fold_in(rng, crc32(path))``, so its scores do not depend on the other rules.
      pretrained: the pretrained parameter tree (nested dicts).
      config: the mask config.

    Raises:
      ValueError: when no leaf matches the rules (the message lists them).
    """
    paths = masked_paths(pretrained, config.all_rules)
    if not paths:
        raise ValueError(f"No parameter matches the mask rules {list(config.all_rules)}")
    rng = jax.random.PRNGKey(config.seed) if rng is None else rng
    flat = tree_paths.flatten(pretrained)
    scores = {
        p: _init_leaf_jit(jax.random.fold_in(rng, _path_seed(p)), flat[p], config) for p in paths
    }
    return tree_paths.unflatten(scores)


def masks(scores: Mapping[str, Any], config: MaskConfig) -> dict[str, Any]:
    """0/1 masks (in the scores' dtype, straight-through) with the layout of ``scores``."""
    flat = tree_paths.flatten(scores)
    return tree_paths.unflatten({p: _mask_leaf(s, config) for p, s in flat.items()})


def apply_masks(
    pretrained: Mapping[str, Any], scores: Mapping[str, Any], config: MaskConfig
) -> dict[str, Any]:
    """The parameter tree with every scored leaf replaced by ``pretrained * mask(scores)``.

    Masked entries are +0.0 (see :func:`mask_weight`). Leaves without scores pass through
    unchanged. The pretrained values are wrapped in ``stop_gradient``: only the scores get
    gradients, straight-through: ``dL/dS = W * dL/dW_eff``.

    Raises:
      ValueError: a scored path is missing from ``pretrained`` or has another shape.
    """
    flat = tree_paths.flatten(pretrained)
    for path, s in tree_paths.flatten(scores).items():
        if path not in flat:
            raise ValueError(f"Scores for '{path}' but the pretrained tree has no such leaf")
        w = flat[path]
        if tuple(np.shape(w)) != tuple(np.shape(s)):
            raise ValueError(
                f"Shape mismatch at '{path}': pretrained {tuple(np.shape(w))}, scores "
                f"{tuple(np.shape(s))}"
            )
        w = jax.lax.stop_gradient(jnp.asarray(w))
        flat[path] = _masked_weight(w, s, _hard_mask(s, config, w.dtype))
    return tree_paths.unflatten(flat)


def split_head(
    params: Mapping[str, Any], head_keys: Sequence[str] = DEFAULT_HEAD_KEYS
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(head, rest)``: the top-level subtrees named in ``head_keys`` (those present), the rest."""
    head = {k: v for k, v in params.items() if k in head_keys}
    rest = {k: v for k, v in params.items() if k not in head_keys}
    return head, rest


def init_trainable(
    rng: jax.Array | None,
    params: Mapping[str, Any],
    config: MaskConfig,
    head_keys: Sequence[str] = DEFAULT_HEAD_KEYS,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(trainable, frozen)`` for :func:`make_assemble` from a full (pretrained + head) tree."""
    head, frozen = split_head(params, head_keys)
    if not head:
        raise ValueError(f"No head subtree {list(head_keys)} in params {sorted(params)}")
    return {"scores": init_scores(rng, frozen, config), "head": head}, frozen


def make_assemble(config: MaskConfig) -> Callable[[Any, Any], Any]:
    """``assemble(trainable, frozen) -> params`` for the train/eval steps.

    Layout: ``trainable = {'scores': <nested dict of float32 scores, one per masked leaf, same
    paths as in frozen>, 'head': <top-level head subtrees, e.g. {'classifier': {...}}>}``;
    ``frozen`` = the pretrained tree without the head. Returns ``frozen`` with masks applied and
    the head merged in. ``frozen`` gets no gradient and is never updated.
    """

    def assemble(trainable: Mapping[str, Any], frozen: Mapping[str, Any]) -> dict[str, Any]:
        masked = apply_masks(frozen, trainable["scores"], config)
        return merge_trees(dict(trainable["head"]), masked)

    return assemble


def sparsity(scores: Mapping[str, Any], config: MaskConfig) -> dict[str, jax.Array]:
    """Fraction of masked (zero) entries per scored path and overall (key ``'total'``).

    float32 scalars; jittable (the config is read in Python). ``'total'`` weights tensors by size.
    """
    out, zeros, size = {}, jnp.float32(0.0), 0
    for path, s in tree_paths.flatten(scores).items():
        kept = jnp.sum(jax.lax.stop_gradient(_mask_leaf(s, config, jnp.float32)))
        out[path] = 1.0 - kept / jnp.float32(s.size)
        zeros, size = zeros + (jnp.float32(s.size) - kept), size + s.size
    out["total"] = zeros / jnp.float32(max(size, 1))
    return out


# ----------------------------------------------------------------------------- optimizer


class ScoreOptState(NamedTuple):
    """State of :func:`score_optimizer`."""

    count: jax.Array  # int32 scalar: number of updates done.
    mu: optax.Updates  # float32 first moments, like the scores.
    nu: optax.Updates  # float32 second moments, like the scores.


def sparsity_schedule(
    initial: float, final: float, steps: int, power: float = 1.0
) -> optax.Schedule:
    """Target sparsity ``final + (initial - final) * (1 - step / steps) ** power``, then ``final``.

    ``power=1`` is linear; ``power=3`` is the cubic schedule of Zhu & Gupta (2017).
    """
    steps = max(int(steps), 1)

    def schedule(step):
        frac = jnp.clip(jnp.asarray(step, jnp.float32) / steps, 0.0, 1.0)
        return final + (initial - final) * (1.0 - frac) ** power

    return schedule


def score_optimizer(
    learning_rate: float | optax.Schedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    threshold: float = 0.0,
    l1: float = 0.0,
    target_sparsity: float | optax.Schedule | None = None,
) -> optax.GradientTransformation:
    """Adam for mask scores, with an optional decoupled L1 pull towards a target sparsity.

    The update is ``-lr * (m_hat / (sqrt(v_hat) + eps) + l1 * pull)`` where, per tensor, ``pull``
    is ``1[S > threshold]`` while the tensor's sparsity (share of ``S <= threshold``) is below
    ``target_sparsity`` (at this step) and 0 once it reaches it: the subgradient of
    ``l1 * sum(relu(S - threshold))`` applied like AdamW's decoupled decay. Kept scores drift down
    by ``lr * l1`` per step until enough fall below the threshold; masked ones are not pushed
    further. ``target_sparsity=None`` pulls always. Meant for threshold mode (top-k sparsity is
    fixed by ``keep_fraction``).

    Args:
      learning_rate: a float or an optax schedule of the step count.
      b1, b2, eps: Adam's parameters.
      threshold: the mask threshold (``MaskConfig.threshold``).
      l1: strength of the pull; 0 disables it (and ``update`` then needs no params).
      target_sparsity: a float in [0, 1], a schedule (see :func:`sparsity_schedule`) or None.
    """
    lr = learning_rate if callable(learning_rate) else optax.constant_schedule(learning_rate)
    target_sparsity = 1.0 if target_sparsity is None else target_sparsity
    target = (
        target_sparsity if callable(target_sparsity) else optax.constant_schedule(target_sparsity)
    )

    def init(params):
        zeros = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)
        return ScoreOptState(jnp.zeros((), jnp.int32), zeros, zeros)

    def update(updates, state, params=None):
        if l1 and params is None:
            raise ValueError("score_optimizer with l1 > 0 needs params in update()")
        count = state.count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g.astype(jnp.float32), state.mu, updates)
        nu = jax.tree.map(
            lambda v, g: b2 * v + (1 - b2) * jnp.square(g.astype(jnp.float32)), state.nu, updates
        )
        c1 = 1 - b1 ** count.astype(jnp.float32)
        c2 = 1 - b2 ** count.astype(jnp.float32)
        step_lr = lr(state.count)
        tgt = target(state.count)

        def leaf(m, v, g, p):
            direction = (m / c1) / (jnp.sqrt(v / c2) + eps)
            if l1:
                above = (p > threshold).astype(jnp.float32)
                below_target = (1.0 - jnp.mean(above)) < tgt
                direction = direction + l1 * above * below_target.astype(jnp.float32)
            return (-step_lr * direction).astype(g.dtype)

        ps = params if l1 else updates
        new = jax.tree.map(leaf, mu, nu, updates, ps)
        return new, ScoreOptState(count, mu, nu)

    return optax.GradientTransformation(init, update)


def trainable_labels(trainable: Mapping[str, Any]) -> dict[str, Any]:
    """``optax.partition`` labels: every leaf under ``'scores'``/``'head'`` gets that label."""
    return {k: jax.tree.map(lambda _, k=k: k, v) for k, v in trainable.items()}


def make_optimizer(
    score_lr: float,
    head_lr: float,
    total_steps: int,
    *,
    config: MaskConfig | None = None,
    warmup_fraction: float = 0.0,
    head_weight_decay: float = 0.01,
    l1: float = 0.0,
    target_sparsity: float | optax.Schedule | None = None,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
) -> optax.GradientTransformation:
    """One optimizer for ``{'scores', 'head'}``: :func:`score_optimizer` and AdamW.

    Both learning rates follow :func:`fft.optim.linear_warmup_decay` (warmup over
    ``warmup_fraction * total_steps``, then linear decay to 0). The head's biases and layer norms
    get no weight decay (:func:`fft.optim.decay_mask`). Zhao et al. used ~1e-3..1e-2 for the scores
    (with ``init_scale`` set accordingly) and ~2e-5 for the head.
    """
    config = MaskConfig() if config is None else config
    if l1 and config.mode != "threshold":
        raise ValueError("The L1 sparsity pull only applies to threshold mode")
    warmup = round(warmup_fraction * total_steps)
    scores_tx = score_optimizer(
        optim.linear_warmup_decay(score_lr, total_steps, warmup),
        b1=b1,
        b2=b2,
        eps=eps,
        threshold=config.threshold,
        l1=l1,
        target_sparsity=target_sparsity,
    )
    head_tx = optax.adamw(
        optim.linear_warmup_decay(head_lr, total_steps, warmup),
        b1=b1,
        b2=b2,
        eps=eps,
        weight_decay=head_weight_decay,
        mask=optim.decay_mask,
    )
    return optax.partition({"scores": scores_tx, "head": head_tx}, trainable_labels)
