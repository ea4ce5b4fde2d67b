"""The training loop: `train_and_evaluate(config, workdir)` fine-tunes and evaluates on GLUE.

The steps are pure functions (fft/steps.py) jitted once with explicit NamedShardings over a
(data, model) mesh; the state is donated; the batch is split over the 'data' axis. The same code
runs on one CPU, N local devices, or several hosts (each process feeds its rows of the global
batch). Checkpoints resume automatically from the workdir.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from fft import checkpoint, metrics, optim, sharding, steps, writers
from fft import progress as progress_lib
from fft.data import batching, glue, tokenize
from fft.models import loading
from fft import models


@dataclasses.dataclass(frozen=True)
class TaskData:
    """Tokenized splits of one task."""

    task: Any  # glue.TaskSpec
    train: Any  # tokenize.Encoded
    evals: dict[str, Any]  # split name -> tokenize.Encoded
    buckets: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ModelBundle:
    """A model, its pretrained (or random) parameters on the host, and its tokenizer folder."""

    model: Any  # flax.linen.Module
    params: Any  # nested dict of numpy arrays, head included
    tokenizer_dir: pathlib.Path
    description: str


def load_model(config: ml_collections.ConfigDict, num_labels: int) -> ModelBundle:
    """Builds the classifier: pretrained weights from `config.model.name`, fresh head from the seed."""
    dtype = jnp.dtype(config.model.dtype)
    rng = jax.random.key(config.seed)
    rand = config.model.random_init
    if rand.enabled:
        fields = {k: v for k, v in rand.items() if k not in ("enabled", "tokenizer")}
        model_config = models.bert.BertConfig(**fields)
        model = models.create_model("bert", model_config, num_labels, dtype)
        params = loading.init_params(model, rng, None)
        tokenizer_dir = loading.resolve_model_dir(rand.tokenizer)
        return ModelBundle(model, params, tokenizer_dir, f"random-init bert {fields}")
    model_dir = loading.resolve_model_dir(config.model.name)
    pretrained = loading.load_pretrained(model_dir)
    model = models.create_model(pretrained.model_type, pretrained.model_config, num_labels, dtype)
    params = loading.init_params(model, rng, pretrained.params)
    return ModelBundle(model, params, model_dir, f"{pretrained.model_type} from {model_dir}")


def load_data(config: ml_collections.ConfigDict, tokenizer) -> TaskData:
    """Reads, tokenizes and subsets the task's train and dev splits."""
    task = glue.get_task(config.task)
    cfg = config.data

    def read(split: str, limit: int):
        examples = glue.load_examples(
            task, split, data_dir=cfg.dir, source=cfg.source, skip_malformed=cfg.skip_malformed
        )
        return examples[:limit] if limit else examples

    train = tokenize.encode(tokenizer, read("train", 0), cfg.max_length)
    if cfg.train_fraction < 1.0:
        train = batching.subsample(train, cfg.train_fraction, config.seed)
    if cfg.max_train_examples:
        train = batching.subsample(train, min(1.0, cfg.max_train_examples / len(train.labels)), config.seed)
    evals = {
        split: tokenize.encode(tokenizer, read(split, cfg.max_eval_examples), cfg.max_length)
        for split in task.eval_splits
    }
    buckets = tuple(cfg.buckets) or batching.bucket_lengths(cfg.max_length)
    return TaskData(task, train, evals, buckets)


def is_regression(task) -> bool:
    return task.label_names is None


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


def check_finite(step: int, loss: float, workdir: pathlib.Path) -> None:
    if not math.isfinite(loss):
        raise FloatingPointError(
            f"Training loss is {loss} at step {step}; stopping before it reaches a checkpoint. "
            f"The last good checkpoint in {workdir / 'checkpoints'} is kept. Try a lower "
            "--config.optim.lr, --config.optim.max_grad_norm=1.0, or --config.model.dtype=float32."
        )


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Fine-tunes `config.model` on `config.task`, evaluating on dev; returns the final metrics."""
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    is_main = jax.process_index() == 0
    writer = writers.create_writer(workdir, just_logging=not is_main)
    if is_main:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=1, sort_keys=True))
        writer.write_hparams(_flatten(config.to_dict()))

    task = glue.get_task(config.task)
    bundle = load_model(config, task.num_labels)
    logging.info("Model: %s", bundle.description)
    data = load_data(config, tokenize.load_tokenizer(bundle.tokenizer_dir))
    steps_per_epoch = batching.num_train_batches(data.train, config.batch_size)
    num_steps = total_steps(config, steps_per_epoch)
    logging.info(
        "Task %s: %d train examples (%d steps/epoch), eval %s; %d steps; buckets %s",
        task.name, len(data.train.labels), steps_per_epoch,
        {k: len(v.labels) for k, v in data.evals.items()}, num_steps, data.buckets,
    )

    mesh = sharding.make_mesh(config.mesh)
    if config.batch_size % mesh.shape["data"]:
        raise ValueError(f"batch_size {config.batch_size} does not split over {mesh.shape['data']} data shards")
    tx = optim.adamw(config.optim, num_steps)
    param_sh = sharding.param_shardings(bundle.params, mesh, config.mesh.param_rules)
    params = jax.device_put(bundle.params, param_sh)
    frozen: dict = {}
    init_opt = jax.jit(tx.init, out_shardings=None)
    state = steps.TrainState(jnp.zeros((), jnp.int32), params, init_opt(params))
    state = jax.device_put(state, jax.tree.map(lambda x: x.sharding, state))
    state_sh = jax.tree.map(lambda x: x.sharding, state)

    manager = checkpoint.make_manager(workdir, config.checkpoint)
    state, restored_step = checkpoint.restore_latest(manager, state)
    first_step = int(restored_step or 0)
    if restored_step is not None:
        logging.info("Resumed from checkpoint at step %d in %s", first_step, workdir)

    repl = sharding.replicated(mesh)
    batch_sh = sharding.batch_sharding(mesh)
    regression = is_regression(task)
    train_fn = jax.jit(
        functools.partial(steps.train_step, model=bundle.model, tx=tx, is_regression=regression),
        in_shardings=(state_sh, repl, batch_sh, repl),
        out_shardings=(state_sh, repl),
        donate_argnums=(0,),
    )
    eval_fn = jax.jit(
        functools.partial(steps.eval_step, model=bundle.model, is_regression=regression),
        in_shardings=(param_sh, repl, batch_sh),
        out_shardings=repl,
    )
    run_eval = functools.partial(
        evaluate, eval_fn, batch_size=config.eval_batch_size, buckets=data.buckets, mesh=mesh, task=task
    )
    rng = jax.device_put(jax.random.key(config.seed + 1), repl)
    eval_every = config.eval_every_steps or steps_per_epoch

    progress = progress_lib.Progress(num_steps, first_step)
    paused = 0.0  # Seconds spent in evaluation and checkpointing, excluded from training time.
    examples_seen = 0
    eval_results: dict[str, dict[str, float]] = {}
    step = first_step
    t_loop = time.perf_counter()
    for step, batch in _batches_from(data.train, config, steps_per_epoch, first_step, num_steps, data.buckets):
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            state, step_metrics = train_fn(state, frozen, sharding.global_batch_to_device(batch, mesh), rng)
        done = step + 1
        examples_seen += int(batch["weights"].sum())
        progress.update(done, int(batch["weights"].sum()))
        due_log = done % config.log_every_steps == 0 or done == num_steps
        due_save = done % config.checkpoint.every_steps == 0 or done == num_steps
        due_eval = done % eval_every == 0 or done == num_steps
        if due_log or due_save:
            scalars = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
            check_finite(done, scalars["train/loss"], workdir)
            if due_log:
                scalars["train/learning_rate"] = optim.learning_rate(config.optim, num_steps, done)
                scalars.update(progress.rates(done))
                writer.write_scalars(done, scalars)
                progress.log(done, f"loss {scalars['train/loss']:.4f}")
        if not (due_save or due_eval):
            continue
        jax.block_until_ready(state)  # Charge pending training work to training time.
        t_pause = time.perf_counter()
        if due_save:
            checkpoint.save(manager, done, state, force=done == num_steps)
        if due_eval:
            for split, encoded in data.evals.items():
                eval_results[split] = run_eval(state.params, frozen, encoded)
                writer.write_scalars(done, {f"eval/{split}/{k}": v for k, v in eval_results[split].items()})
                logging.info("eval %s at step %d: %s", split, done, eval_results[split])
        progress.exclude(time.perf_counter() - t_pause)
        paused += time.perf_counter() - t_pause
    jax.block_until_ready(state)
    train_seconds = time.perf_counter() - t_loop - paused
    step = int(jax.device_get(state.step))
    manager.wait_until_finished()
    if not eval_results:  # Resumed at the very end: evaluate the restored state once.
        eval_results = {split: run_eval(state.params, frozen, enc) for split, enc in data.evals.items()}

    final = {
        "task": task.name,
        "model": bundle.description,
        "steps": int(step),
        "train_examples": int(len(data.train.labels)),
        "epochs": float(step / steps_per_epoch),
        "train_seconds": train_seconds,
        "train_examples_per_sec": examples_seen / train_seconds if examples_seen else None,
        "wall_seconds": time.perf_counter() - t_start,
        "eval": eval_results,
        "devices": jax.device_count(),
        "platform": jax.devices()[0].platform,
    }
    if is_main:
        (workdir / "final_metrics.json").write_text(json.dumps(final, indent=1, sort_keys=True))
    logging.info("Final: %s", json.dumps(final["eval"], sort_keys=True))
    writer.flush()
    writer.close()
    return final


def _batches_from(train, config, steps_per_epoch: int, first_step: int, num_steps: int, buckets):
    """Yields (step, global batch) from `first_step` on; the order depends only on (seed, epoch)."""
    step = first_step
    while step < num_steps:
        epoch, skip = divmod(step, steps_per_epoch)
        batches = batching.train_batches(train, config.batch_size, seed=config.seed, epoch=epoch, buckets=buckets)
        for i, batch in enumerate(batches):
            if i < skip:
                continue
            yield step, batch
            step += 1
            if step >= num_steps:
                return


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat
