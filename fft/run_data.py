"""A run's data: the task's tokenized splits (`load_data`), packed or length-bucketed training
batches in a resumable order (`epoch_batches`, `_batches_from`), and evaluation over a whole split
(`evaluate`). `fft.train` re-exports these names."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from fft import feature_cache, metrics, sharding
from fft.data import batching, glue, packing, splits, tokenize


@dataclasses.dataclass(frozen=True)
class TaskData:
    """Tokenized splits of one task."""

    task: Any  # glue.TaskSpec
    train: Any  # tokenize.Encoded
    evals: dict[str, Any]  # split name -> tokenize.Encoded
    buckets: tuple[int, ...]
    pack: Any = None  # packing.PackShape when training batches are packed (config.data.packing).
    pack_row_multiple: int = 1  # Packed row counts are multiples of the 'data' mesh axis.


def load_data(config: ml_collections.ConfigDict, tokenizer) -> TaskData:
    """Reads, tokenizes and subsets the task's train and dev splits; with
    `data.validation_fraction` > 0 a stratified `validation` split carved from train
    (`fft.data.splits`, before `train_fraction`) is the only eval split."""
    task = glue.get_task(config.task)
    cfg = config.data

    def read(split: str, limit: int):
        examples = glue.load_examples(
            task, split, data_dir=cfg.dir, source=cfg.source, skip_malformed=cfg.skip_malformed
        )
        return examples[:limit] if limit else examples

    train = tokenize.encode(tokenizer, read("train", 0), cfg.max_length)
    evals = {}
    if cfg.get("validation_fraction", 0.0) > 0:  # Carved from train; dev is then not evaluated.
        train, held = splits.carve(train, cfg.validation_fraction)
        evals["validation"] = held.select(range(min(len(held), cfg.max_eval_examples or len(held))))
    if cfg.train_fraction < 1.0:
        train = batching.subsample(train, cfg.train_fraction, config.seed)
    if cfg.max_train_examples:
        train = batching.subsample(train, min(1.0, cfg.max_train_examples / len(train.labels)), config.seed)
    evals = evals or {
        split: tokenize.encode(tokenizer, read(split, cfg.max_eval_examples), cfg.max_length)
        for split in task.eval_splits
    }
    buckets = tuple(cfg.buckets) or batching.bucket_lengths(cfg.max_length)
    return TaskData(task, train, evals, buckets)


def with_packing(config: ml_collections.ConfigDict, data: TaskData, epochs: float, row_multiple: int) -> TaskData:
    """Plans packed training batches (`fft.data.packing`) when `config.data.packing` is on.

    Feature-cache runs keep length buckets: their cache holds one row per example."""
    if not config.data.get("packing", False):  # Configs older than packing: buckets.
        return data
    if config.feature_cache:
        logging.info("feature_cache: training batches are length-bucketed, not packed")
        return data
    shape = packing.plan(
        data.train, config.batch_size, seed=config.seed, epochs=epochs,
        max_length=config.data.max_length, length=config.data.get("pack_length", 0),
        row_multiple=row_multiple,
    )
    slots, real = packing.epoch_padding(
        data.train, config.batch_size, seed=config.seed, epoch=0, shape=shape, row_multiple=row_multiple
    )
    logging.info(
        "Packed training batches: rows of %d tokens, up to %d examples a row, %s rows a step; "
        "epoch 0 computes %d token positions for %d example tokens (%.1f%% padding)",
        shape.length, shape.slots, shape.rows, slots, real, 100.0 * (1 - real / max(slots, 1)),
    )
    return dataclasses.replace(data, pack=shape, pack_row_multiple=row_multiple)


def epoch_batches(data: TaskData, config: ml_collections.ConfigDict, epoch: int):
    """The training batches of one epoch: packed (`data.pack`) or length-bucketed."""
    if data.pack is not None:
        return packing.train_batches(
            data.train, config.batch_size, seed=config.seed, epoch=epoch, shape=data.pack,
            row_multiple=data.pack_row_multiple,
        )
    return batching.train_batches(data.train, config.batch_size, seed=config.seed, epoch=epoch, buckets=data.buckets)


def _batches_from(data: TaskData, config, steps_per_epoch: int, first_step: int, num_steps: int):
    """Yields (step, global batch) from `first_step` on; the order depends only on (seed, epoch).
    `data.skip_steps` batches were taken by an earlier phase (fft.priming): the stream starts
    after them."""
    step = first_step
    offset = config.data.get("skip_steps", 0)
    while step < num_steps:
        epoch, skip = divmod(step + offset, steps_per_epoch)
        batches = epoch_batches(data, config, epoch)
        for i, batch in enumerate(batches):
            if i < skip:
                continue
            yield step, batch
            step += 1
            if step >= num_steps:
                return


def prepare_batch(batch: dict[str, Any], cache, mesh) -> dict[str, Any]:
    """A host batch as the train step takes it: cached features swapped in, on the devices."""
    if cache is not None:
        batch = feature_cache.batch_features(cache, batch)
    batch.pop("index", None)
    return sharding.global_batch_to_device(batch, mesh)


def is_regression(task) -> bool:
    return task.is_regression


def evaluate(eval_fn, params, frozen, encoded, *, batch_size: int, buckets, mesh, task) -> dict[str, float]:
    """Runs the jitted eval step over a whole split; returns the task's official metrics + loss."""
    n = len(encoded.labels)
    preds = np.zeros(n, np.float32 if is_regression(task) else np.int32)
    loss_sum = weight_sum = 0.0
    for batch in batching.eval_batches(encoded, batch_size, buckets=buckets):
        index = batch.pop("index")
        out = eval_fn(params, frozen, sharding.global_batch_to_device(batch, mesh))
        out = jax.device_get(out)
        real = index >= 0
        preds[index[real]] = out["predictions"][real]
        loss_sum += float(out["loss_sum"])
        weight_sum += float(out["weight_sum"])
    result = metrics.compute(task, preds, np.asarray(encoded.labels))
    result["loss"] = loss_sum / max(weight_sum, 1.0)
    return result


def total_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
    if config.num_train_steps > 0:
        return int(config.num_train_steps)
    return max(1, math.ceil(config.num_epochs * steps_per_epoch))
