"""The training loop: `train_and_evaluate(config, workdir)` fine-tunes and evaluates on GLUE.

The steps are pure functions (fft/steps.py) jitted once with explicit NamedShardings over a
(data, model) mesh; the state is donated; the batch is split over the 'data' axis. The same code
runs on one CPU, N local devices, or several hosts (each process feeds its rows of the global
batch). Checkpoints resume automatically from the workdir. A run's data and evaluation live in
fft/run_data.py, its model and parameters in fft/run_model.py.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from fft import (
    budget,
    checkpoint,
    console,
    distances,
    errors,
    feature_cache,
    methods,
    partition,
    priming,
    sharding,
    steps,
    tree_paths,
    validate,
    writers,
)
from fft import progress as progress_lib
from fft.data import batching, glue, tokenize
from fft.run_data import (  # noqa: F401  (re-exported: callers know them as train.<name>)
    TaskData,
    _batches_from,
    epoch_batches,
    evaluate,
    is_regression,
    load_data,
    prepare_batch,
    total_steps,
    with_packing,
)
from fft.run_model import (  # noqa: F401  (re-exported)
    ModelBundle,
    export_run,
    load_model,
    load_run_config,
    method_key,
    task_params,
    trainable_from_run,
    with_concrete_pooling,
)


def _onto_mesh(mesh, x: jax.Array) -> jax.Array:
    """Replicates over the mesh an array that jit left on one device (e.g. optimizer counters)."""
    if x.sharding.device_set == set(mesh.devices.flat):
        return x
    return jax.device_put(x, sharding.replicated(mesh))


DROPOUT_RNGS = validate.DROPOUT_RNGS


def dropout_key(config: ml_collections.ConfigDict) -> jax.Array:
    """The run's dropout key, seeded by `config.seed + 1`, of PRNG kind `config.dropout_rng`."""
    impl = config.get("dropout_rng", DROPOUT_RNGS[0])  # Configs that predate the field: the default.
    return jax.random.key(config.seed + 1, impl=impl)


def check_finite(step: int, loss: float, workdir: pathlib.Path) -> None:
    if not math.isfinite(loss):
        raise errors.RunError(
            f"training loss is {loss} at step {step} ({workdir}); stopped before it reached a "
            "checkpoint, the last good one is kept",
            hint="a lower --config.optim.lr, --config.optim.max_grad_norm=1.0 or "
            "--config.model.dtype=float32",
        )


def is_finished(workdir: pathlib.Path, restored_step: int | None, num_steps: int,
                plan: budget.Plan | None = None) -> bool:
    """Whether the workdir holds a finished run: its last checkpoint (the last step, or the step its
    time budget stopped it at) and its final metrics."""
    last = num_steps if plan is None or plan.stopped_at_step is None else plan.stopped_at_step
    return restored_step is not None and restored_step >= last and (workdir / "final_metrics.json").is_file()


def calibrate_budget(config, train_fn, state, frozen, rng, data, steps_per_epoch, cache, mesh) -> budget.Plan:
    """The step count of a time-budgeted run (fft.budget): `config.time_budget_step_s`, or this
    run's train step timed on the first batches of its data, on a copy of the state (discarded)."""
    given = config.get("time_budget_step_s")
    if given is not None:
        step_seconds, ran, source = float(given), 0, "given"
    else:
        scratch = jax.jit(lambda s: jax.tree.map(jnp.copy, s), out_shardings=jax.tree.map(lambda x: x.sharding, state))(state)
        holder = [scratch]

        def one_step(batch):
            holder[0], metrics = train_fn(holder[0], frozen, prepare_batch(batch, cache, mesh), rng)
            jax.block_until_ready(metrics)

        wanted = budget.CALIBRATION_WARMUP + budget.CALIBRATION_STEPS
        batches = (b for _, b in _batches_from(data, config, steps_per_epoch, 0, wanted))
        with jax.transfer_guard(config.transfer_guard):
            step_seconds, ran = budget.measure_step_seconds(one_step, batches)
        del holder
        step_seconds, source = budget.agree(step_seconds), "measured"
    num_steps = budget.steps_within(config.time_budget_s, step_seconds)
    console.info(f"time budget {config.time_budget_s:g} s: {num_steps} steps at {step_seconds:.4g} s a step "
                 f"({source}{f' over {ran - budget.CALIBRATION_WARMUP} timed steps' if ran else ''})")
    return budget.Plan(budget_s=float(config.time_budget_s), step_seconds=step_seconds, num_steps=num_steps,
                       source=source, calibration_steps=ran)


def prepare_workdir(workdir: pathlib.Path) -> None:
    """Creates the workdir; a path that is a file or a folder fft cannot write is an error."""
    if workdir.exists() and not workdir.is_dir():
        raise errors.RunError(f"--workdir={workdir}: is a file, not a folder")
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise errors.RunError(f"--workdir={workdir}: cannot create it ({e.strerror})") from None
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise errors.RunError(f"--workdir={workdir}: not writable")


def make_optimizer(config: ml_collections.ConfigDict, method: methods.Method, trainable: Any, num_steps: int):
    """(tx, schedules): the method's optimizer after global-norm clipping over all trainable leaves
    (`optim.max_grad_norm`, 0 disables), the same for every method."""
    opt = method.optimizer(trainable, num_steps)
    tx = opt.tx
    if config.optim.max_grad_norm:
        tx = optax.chain(optax.clip_by_global_norm(config.optim.max_grad_norm), tx)
    return tx, dict(opt.schedules)


def build_feature_cache(config, method, data, trainable_host, params, frozen, mesh):
    """Runs the layers below the method's lowest changed layer once over the training set (see
    fft.feature_cache)."""
    if jax.process_count() > 1:
        raise errors.RunError("config.feature_cache=True: runs in a single process for now")
    start = method.cache_start(trainable_host)
    if start == 0:
        raise validate.ConfigError(
            f"config.feature_cache=True: needs frozen embeddings and a frozen bottom encoder layer; "
            f"method {method.description!r} changes them"
        )
    t0 = time.perf_counter()
    cache = feature_cache.build(
        method.model, jax.jit(method.assemble)(params, frozen), data.train, start=start,
        batch_size=config.eval_batch_size, buckets=data.buckets, mesh=mesh,
    )
    seconds = time.perf_counter() - t0
    console.info(f"feature cache of layers 0..{start - 1} built in {seconds:.1f}s")
    return dataclasses.replace(cache, build_seconds=seconds)


@dataclasses.dataclass
class Run:
    """Everything the training loop needs, built once by `setup`."""

    config: ml_collections.ConfigDict
    workdir: pathlib.Path
    task: Any
    data: TaskData
    model_description: str
    mesh: Any
    train_fn: Any  # jitted (state, frozen, batch, rng) -> (state, metrics)
    eval_fn: Any  # (params, frozen, encoded) -> metrics dict
    manager: Any
    writer: Any
    frozen: Any
    rng: jax.Array
    steps_per_epoch: int
    num_steps: int
    # With config.track_distances: the parameters at step 0 (on device) and a jitted
    # fn(initial, trainable, frozen) -> {group: {measure: scalar}} (fft.distances.grouped).
    initial_params: Any = None
    distance_fn: Any = None
    cache: Any = None  # feature_cache.FeatureCache when the frozen prefix is cached.
    trainable_params: int = 0
    total_params: int = 0
    method: Any = None  # fft.methods.Method: assemble, merge, metrics, export.
    metrics_fn: Any = None  # The method's jitted extra metrics (trainable -> {tag: scalar}), or None.
    plan: Any = None  # fft.budget.Plan of a time-budgeted run (config.time_budget_s), else None.


def setup(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> tuple[Run, steps.TrainState, int | None]:
    """Loads model and data, builds the method, the sharded state (restored if the workdir has a
    checkpoint) and the jitted steps."""
    legacy = "method" not in config  # Written before methods were parts.
    config = methods.upgrade_config(config)
    validate.check(config)  # Before anything is written to the workdir.
    budget.check_config(config)
    methods.check_config(config)
    prepare_workdir(workdir)
    task = glue.get_task(config.task)
    config = with_concrete_pooling(config)
    bundle = load_model(config, task.num_labels)
    logging.info("Model: %s", bundle.description)
    method = methods.create(config, bundle.model)
    logging.info("Method: %s", method.description)
    data = load_data(config, tokenize.load_tokenizer(bundle.tokenizer_dir))
    steps_per_epoch = batching.num_train_batches(data.train, config.batch_size)
    num_steps = total_steps(config, steps_per_epoch)
    mesh = sharding.make_mesh(config.mesh)
    data = with_packing(config, data, num_steps / steps_per_epoch, mesh.shape["data"])
    logging.info(
        "Task %s: %d train examples (%d steps/epoch), eval %s; %d steps; buckets %s",
        task.name, len(data.train.labels), steps_per_epoch,
        {k: len(v.labels) for k, v in data.evals.items()}, num_steps, data.buckets,
    )

    if config.batch_size % mesh.shape["data"]:
        raise validate.ConfigError(
            f"config.batch_size={config.batch_size}: does not split over the mesh's "
            f"{mesh.shape['data']} data shards"
        )
    trainable_host, frozen_host = method.init(bundle.params, method_key(config))
    trainable_host, frozen_host = jax.device_get((trainable_host, frozen_host))
    if config.get("init_trainable_from"):
        trainable_host = trainable_from_run(config, method, config.init_trainable_from, trainable_host)
    tx, schedules = make_optimizer(config, method, trainable_host, num_steps)
    param_sh = sharding.param_shardings(trainable_host, mesh, config.mesh.param_rules)
    frozen_sh = sharding.param_shardings(frozen_host, mesh, config.mesh.param_rules)
    params = jax.device_put(trainable_host, param_sh)
    frozen = jax.device_put(frozen_host, frozen_sh)
    repl = sharding.replicated(mesh)
    # Optimizer moments follow their parameters' shardings (jit propagates them); counters replicate.
    opt_state = jax.tree.map(functools.partial(_onto_mesh, mesh), jax.jit(tx.init)(params))
    state = steps.TrainState(jax.device_put(np.zeros((), np.int32), repl), params, opt_state)
    state_sh = jax.tree.map(lambda x: x.sharding, state)

    manager = checkpoint.make_manager(workdir, config.checkpoint)
    try:
        state, restored_step = checkpoint.restore_latest(manager, state)
    except errors.CheckpointError as e:
        if not legacy:
            raise
        raise errors.CheckpointError(
            f"{e}; this workdir predates fft/methods: since then every method's optimizer starts "
            "with global-norm clipping (mask-score runs had none), so its optimizer state has "
            "another layout",
            hint="its results and checkpoints still load for analysis (fft analyze); to train on, "
            "start a fresh workdir",
        ) from e
    if restored_step is not None:
        logging.info("Resumed from checkpoint at step %d in %s", restored_step, workdir)

    batch_sh = sharding.batch_sharding(mesh)
    regression = is_regression(task)
    cache, forward = None, None
    if config.feature_cache:
        cache = build_feature_cache(config, method, data, trainable_host, params, frozen, mesh)
        forward = feature_cache.cached_apply(method.model, cache.start)

    def compile_train(tx, schedules):
        return jax.jit(
            functools.partial(
                steps.train_step, model=method.model, tx=tx, is_regression=regression,
                forward=forward, assemble=method.assemble,
                learning_rates=functools.partial(_learning_rates, schedules),
            ),
            in_shardings=(state_sh, frozen_sh, batch_sh, repl),
            out_shardings=(state_sh, repl),
            donate_argnums=(0,),  # The state; the frozen tree is reused every step.
        )

    train_fn = compile_train(tx, schedules)
    # Made by a jitted call onto the mesh: device_put of a one-device key fails across processes.
    rng = jax.jit(functools.partial(dropout_key, config), out_shardings=repl)()
    plan = None
    if config.get("time_budget_s") is not None:
        plan = budget.load_plan(workdir)
        if plan is None:
            plan = calibrate_budget(config, train_fn, state, frozen, rng, data, steps_per_epoch, cache, mesh)
            budget.save_plan(workdir, plan)
        if plan.num_steps != num_steps:  # The schedule spans the planned steps: compile it.
            num_steps = plan.num_steps
            tx, schedules = make_optimizer(config, method, trainable_host, num_steps)
            train_fn = compile_train(tx, schedules)
    # Written once the checkpoint is known to fit this config: a failed resume leaves the
    # workdir's config.json describing its checkpoints. A finished run is left as it is.
    is_main = jax.process_index() == 0 and not is_finished(workdir, restored_step, num_steps, plan)
    writer = writers.create_writer(workdir, just_logging=not is_main)
    if is_main:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=1, sort_keys=True))
        writer.write_hparams(tree_paths.flatten(config.to_dict(), sep="."))
    eval_step = jax.jit(
        functools.partial(
            steps.eval_step, model=method.model, is_regression=regression, assemble=method.assemble
        ),
        in_shardings=(param_sh, frozen_sh, batch_sh),
        out_shardings=repl,
    )
    eval_fn = functools.partial(
        evaluate, eval_step, batch_size=config.eval_batch_size, buckets=data.buckets, mesh=mesh, task=task
    )
    initial_params = distance_fn = None
    if config.track_distances:
        initial_sh = sharding.param_shardings(bundle.params, mesh, config.mesh.param_rules)
        initial_params = jax.device_put(bundle.params, initial_sh)  # A copy: `state` is donated.
        rules = distances.DEFAULT_LAYER_GROUPS
        distance_fn = jax.jit(lambda init, tr, fr: distances.grouped(init, method.merged(tr, fr), rules))
    run = Run(
        config=config, workdir=workdir, task=task, data=data, model_description=bundle.description,
        mesh=mesh, train_fn=train_fn, eval_fn=eval_fn, manager=manager, writer=writer, frozen=frozen,
        rng=rng, steps_per_epoch=steps_per_epoch, num_steps=num_steps, plan=plan,
        initial_params=initial_params, distance_fn=distance_fn, cache=cache,
        method=method, metrics_fn=jax.jit(method.metrics) if method.metrics else None,
        trainable_params=partition.count_params(trainable_host),
        total_params=partition.count_params(bundle.params),
    )
    return run, state, restored_step


def _learning_rates(schedules, step: jax.Array) -> dict[str, jax.Array]:
    """Each parameter group's learning rate at `step` (the one its update used)."""
    return {f"train/learning_rate/{label}": schedule(step) for label, schedule in schedules.items()}


def evaluate_all(run: Run, state: steps.TrainState, step: int, say=console.info) -> dict[str, dict[str, float]]:
    """Evaluates every eval split (and the tracked distances and method metrics) at `step`; one
    console line per split through `say`."""
    results = {}
    for split, encoded in run.data.evals.items():
        results[split] = run.eval_fn(state.params, run.frozen, encoded)
        run.writer.write_scalars(step, {f"eval/{split}/{k}": v for k, v in results[split].items()})
        logging.info("eval %s at step %d: %s", split, step, results[split])
        say(f"eval {split} at step {step}: {console.format_metrics(results[split])}")
    if run.distance_fn is not None:
        log_distances(run, state, step)
    if run.metrics_fn is not None:
        extra = {k: float(v) for k, v in jax.device_get(run.metrics_fn(state.params)).items()}
        run.writer.write_scalars(step, extra)
        logging.info("method metrics at step %d: %s", step, _short(extra))
    return results


def _short(scalars: dict[str, float], limit: int = 6) -> str:
    """At most `limit` scalars as text, those named total first."""
    keys = sorted(scalars, key=lambda k: (not k.endswith("total"), k))[:limit]
    more = f" (+{len(scalars) - limit} more)" if len(scalars) > limit else ""
    return ", ".join(f"{k} {scalars[k]:.4g}" for k in keys) + more


TRACKED_MEASURES = ("rel_l1", "rel_l2", "angle")


def log_distances(run: Run, state: steps.TrainState, step: int) -> dict[str, dict[str, float]]:
    """Writes `dist/<measure>/<group>` (distance from the step-0 weights) for every group.

    One jitted call computes all groups on the devices; only the scalars come to the host."""
    table = jax.device_get(run.distance_fn(run.initial_params, state.params, run.frozen))
    table = distances.sort_groups(table, distances.DEFAULT_LAYER_GROUPS)
    scalars = {
        f"dist/{m}/{group}": float(values[m]) for group, values in table.items() for m in TRACKED_MEASURES
    }
    run.writer.write_scalars(step, scalars)
    total = table[distances.TOTAL]
    logging.info(
        "distance from step 0 at step %d: rel_l1 %.3g rel_l2 %.3g angle %.3g rad",
        step, total["rel_l1"], total["rel_l2"], total["angle"],
    )
    return table


def train_loop(run: Run, state: steps.TrainState, first_step: int) -> tuple[steps.TrainState, dict[str, Any]]:
    """Trains from `first_step` to `run.num_steps`: logs, checkpoints and evaluates on schedule.

    Returns the final state and a summary (timing, last loss, last evaluation)."""
    config = run.config
    eval_every = config.eval_every_steps or run.steps_per_epoch
    progress = console.TrainProgress(run.num_steps, first_step)
    paused = 0.0  # Seconds spent in evaluation and checkpointing, excluded from training time.
    summary = {"examples_seen": 0, "last_train_loss": float("nan"), "eval": {}, "stopped_by_budget": False}
    # A resumed run continues the training time and example count of its earlier segments.
    before = _load_train_time(run.workdir, first_step)
    summary["examples_seen"] = before["examples_seen"]
    budget.trim_curve(run.workdir, first_step)
    clock = budget.Clock(run.plan.budget_s if run.plan else None, config.get("eval_every_s"), before["train_seconds"])
    t_loop = time.perf_counter() - before["train_seconds"]
    cpu0, wall0 = time.process_time(), time.perf_counter()  # This process's CPU share (cpu_share).
    in_flight = None  # The last step's metrics, while a time budget or timed evaluation is on.
    batches = _batches_from(run.data, config, run.steps_per_epoch, first_step, run.num_steps)
    for step, batch in batches:
        n_real = int(batch["weights"].sum())
        device_batch = prepare_batch(batch, run.cache, run.mesh)
        compiled, t_call = _compiled_count(run.train_fn), time.perf_counter()
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
            state, step_metrics = run.train_fn(state, run.frozen, device_batch, run.rng)
        if _compiled_count(run.train_fn) != compiled:  # This call compiled (a new batch shape):
            compile_s = time.perf_counter() - t_call  # compiling is not training (dispatch is async).
            summary["compile_seconds"] = summary.get("compile_seconds", 0.0) + compile_s
            paused += compile_s
            if step > first_step:  # The progress clock starts after the first step.
                progress.exclude(compile_s)
        done = step + 1
        summary["examples_seen"] += n_real
        progress.update(done, n_real)
        stop = timed_eval = False
        if clock.active:  # Time what has run: wait for the step before (this one stays in flight).
            if in_flight is not None:
                jax.block_until_ready(in_flight)
            in_flight = step_metrics
            stop, timed_eval = clock.due(time.perf_counter() - t_loop - paused)
        last = done == run.num_steps or stop
        due_log = done % config.log_every_steps == 0 or last
        due_save = done % config.checkpoint.every_steps == 0 or last
        due_eval = done % eval_every == 0 or last or timed_eval
        if due_log or due_save:
            scalars = {k: float(v) for k, v in jax.device_get(step_metrics).items()}
            check_finite(done, scalars["train/loss"], run.workdir)
            summary["last_train_loss"] = scalars["train/loss"]
            if due_log:
                scalars.update(progress.rates.rates(done))
                run.writer.write_scalars(done, scalars)
                logging.info("step %d: %s", done, _short(scalars))
                progress.report(done, scalars["train/loss"], _first_learning_rate(scalars))
        if not (due_save or due_eval):
            continue
        jax.block_until_ready(state)  # Charge pending training work to training time.
        t_pause = time.perf_counter()
        trained = t_pause - t_loop - paused
        if stop and done < run.num_steps:
            summary["stopped_by_budget"] = True
            progress.write(f"time budget of {run.plan.budget_s:g} s spent at step {done} of {run.num_steps}")
            budget.save_plan(run.workdir, dataclasses.replace(run.plan, stopped_at_step=done))
        if due_save:
            checkpoint.save(run.manager, done, state, force=last)
            _save_train_time(run.workdir, done, trained, summary["examples_seen"])
        if due_eval:
            summary["eval"] = evaluate_all(run, state, done, say=progress.write)
            budget.append_curve(run.workdir, done, trained, summary["eval"], timed=timed_eval)
        progress.exclude(time.perf_counter() - t_pause)
        paused += time.perf_counter() - t_pause
        if stop:
            break
    progress.close()
    jax.block_until_ready(state)
    summary["train_seconds"] = time.perf_counter() - t_loop - paused
    wall = time.perf_counter() - wall0
    summary["cpu_share"] = (time.process_time() - cpu0) / wall if wall > 0 else None
    return state, summary


def _compiled_count(fn) -> int:
    """How many programs a jitted function has compiled (-1 where jax does not tell)."""
    size = getattr(fn, "_cache_size", None)
    return size() if callable(size) else -1


def _first_learning_rate(scalars: dict[str, float]) -> float | None:
    """The learning rate the progress line shows: the first parameter group's (by name)."""
    rates = sorted(k for k in scalars if k.startswith("train/learning_rate/"))
    return scalars[rates[0]] if rates else None


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Fine-tunes `config.model` on `config.task`, evaluating on dev; returns the final metrics.

    Resumes from the latest checkpoint in `workdir` if there is one. Writes `config.json`,
    TensorBoard events, checkpoints and `final_metrics.json` there. A method with a priming
    phase runs it first, in `<workdir>/priming` (fft.priming).
    """
    return priming.run(config, pathlib.Path(workdir), train_one)


def train_one(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run of `config` in `workdir` (no priming phase); `extra` joins its final metrics."""
    t_start = time.perf_counter()
    workdir = pathlib.Path(workdir)
    run, state, restored_step = setup(config, workdir)
    config = run.config
    first_step = int(restored_step or 0)
    if is_finished(workdir, restored_step, run.num_steps, run.plan):
        finished = workdir / "final_metrics.json"
        console.info(f"{workdir}: finished at step {first_step}; its results are in {finished}")
        run.writer.close()
        return json.loads(finished.read_text())
    for line in _header(run, first_step):
        console.info(line)
    with jax.transfer_guard(config.transfer_guard):  # Host<->device moves must be explicit.
        state, summary = train_loop(run, state, first_step)
    run.manager.wait_until_finished()
    step = int(jax.device_get(state.step))
    eval_results = summary["eval"] or evaluate_all(run, state, step)  # Resumed at the end.
    train_seconds = summary["train_seconds"]
    export = None
    if jax.process_index() == 0 and config.export_delta:
        export = run.method.export(
            jax.device_get(state.params), workdir,
            {"task": run.task.name, "model": run.model_description, "method": run.method.description},
        )
        logging.info("Task stored in %s: %d bytes", export.get("file"), export["stored_bytes"])
    final = {
        "task": run.task.name,
        "model": run.model_description,
        "steps": step,
        "resumed_from_step": restored_step,
        "last_train_loss": summary["last_train_loss"],
        "train_examples": len(run.data.train.labels),
        "epochs": step / run.steps_per_epoch,
        "train_seconds": train_seconds,
        "compile_seconds": summary.get("compile_seconds", 0.0),  # Not in train_seconds.
        "train_examples_per_sec": summary["examples_seen"] / train_seconds if summary["examples_seen"] else None,
        "wall_seconds": time.perf_counter() - t_start,
        # CPU seconds of this process per wall second over its training loop (this segment, with
        # its evaluations): near the usable cores when the run had the machine to itself, lower
        # when something else ran beside it (fft.report flags time-budget runs so slowed).
        "cpu_share": summary.get("cpu_share"),
        "cpu_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "eval": eval_results,
        "method": config.method,
        "method_description": run.method.description,
        "method_options": config[config.method].to_dict(),
        "time_budget": None if run.plan is None else budget.load_plan(workdir).to_json(),
        "stopped_by_budget": bool(summary.get("stopped_by_budget")),
        "feature_cache": run.cache is not None,
        "feature_cache_seconds": None if run.cache is None else run.cache.build_seconds,
        "trainable_params": run.trainable_params,
        "total_params": run.total_params,
        "stored_bytes": None if export is None else export["stored_bytes"],
        "export": export,
        "devices": jax.device_count(),
        "platform": jax.devices()[0].platform,
        **(extra or {}),
    }
    final["train_seconds_total"] = train_seconds + (final.get("priming") or {}).get("train_seconds", 0.0)
    if jax.process_index() == 0:
        # Strict JSON: a value that is not finite (no training step ran, so no loss) is null.
        (workdir / "final_metrics.json").write_text(
            json.dumps(writers.finite_or_none(final), indent=1, sort_keys=True, allow_nan=False)
        )
    logging.info("Final: %s", json.dumps(final["eval"], sort_keys=True))
    run.writer.flush()
    run.writer.close()
    for line in _summary(final, workdir):
        console.info(line)
    return final


def _header(run: Run, first_step: int) -> list[str]:
    """The lines a run starts with: what trains on what, and how long."""
    devices = f"{jax.device_count()} {jax.devices()[0].platform} device{'s' * (jax.device_count() > 1)}"
    if jax.process_count() > 1:
        devices += f" in {jax.process_count()} processes"
    evals = ", ".join(f"{k} {len(v.labels)}" for k, v in run.data.evals.items())
    epochs = run.num_steps / run.steps_per_epoch
    lines = [
        f"fft train {run.task.name}: {run.model_description}",
        (f"method {run.method.description}: {console.format_number(run.trainable_params)} of "
        f"{console.format_number(run.total_params)} parameters train"),
        (f"{len(run.data.train.labels)} train examples, eval {evals}; {run.num_steps} steps "
        f"({epochs:.3g} epoch{'' if epochs == 1 else 's'}) of {run.config.batch_size} on {devices}"),
    ]
    if run.plan is not None:
        plan = run.plan
        lines.append(f"time budget {plan.budget_s:g} s of training: {plan.num_steps} steps at "
                     f"{plan.step_seconds:.4g} s a step ({plan.source}; {run.workdir / budget.PLAN_FILE})")
    if first_step:
        lines.append(f"resumed from the checkpoint at step {first_step} in {run.workdir / 'checkpoints'}")
    return lines


def _summary(final: dict[str, Any], workdir: pathlib.Path) -> list[str]:
    """The lines a run ends with: scores, time, and where its outputs are."""
    rate = final["train_examples_per_sec"]
    lines = [
        f"done: {final['steps']} steps, train {progress_lib.format_seconds(final['train_seconds'])}"
        + (f" at {rate:.1f} ex/s" if rate else "")
        + f", wall {progress_lib.format_seconds(final['wall_seconds'])}"
    ]
    for split, values in final["eval"].items():
        lines.append(f"{split}: {console.format_metrics(values)}")
    written = ["final_metrics.json", "checkpoints/"]
    if final.get("export"):
        written.append(pathlib.Path(final["export"]["file"]).name)
    lines.append(f"wrote {', '.join(written)} in {workdir}")
    return lines


def _save_train_time(workdir: pathlib.Path, step: int, seconds: float, examples: int) -> None:
    """Records training time so far next to the checkpoint of `step` (atomic replace)."""
    if jax.process_index() != 0:
        return
    path = workdir / "train_time.json"
    tmp = path.with_suffix(".json.tmp")
    record = {"step": step, "train_seconds": seconds, "examples_seen": examples}
    history = json.loads(path.read_text()) if path.exists() else {}
    history[str(step)] = record
    tmp.write_text(json.dumps(history))
    tmp.replace(path)


def _load_train_time(workdir: pathlib.Path, step: int) -> dict[str, float]:
    """Training time and examples up to the checkpoint `step` resumes from (0 for a fresh run)."""
    path = workdir / "train_time.json"
    if step and path.exists():
        record = json.loads(path.read_text()).get(str(step))
        if record:
            return record
    return {"train_seconds": 0.0, "examples_seen": 0}


