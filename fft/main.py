"""Command-line entry point: `python -m fft.main --config=configs/glue.py:task=rte --workdir=DIR`.

Only parses flags and calls `fft.train.train_and_evaluate`. Multi-host jobs (TPU VM pods, several
GPU hosts) set `--distributed` (or FFT_DISTRIBUTED=1) so `jax.distributed.initialize()` runs first.
On Linux the process first restarts itself once with glibc malloc tunables that keep XLA's
per-step buffers mapped (`fft.malloc_tuning`; FFT_MALLOC_TUNING=0 turns that off).
"""

import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py[:args]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and TensorBoard events go.")
flags.DEFINE_bool("distributed", os.environ.get("FFT_DISTRIBUTED", "0") == "1", "Call jax.distributed.initialize().")
flags.DEFINE_string(
    "compilation_cache_dir",
    os.environ.get("JAX_COMPILATION_CACHE_DIR", "~/.cache/fft/jax"),
    "Persistent XLA compilation cache: a rerun with the same shapes skips compiling. '' disables.",
)
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if FLAGS.distributed:
        # On TPU VMs and SLURM/Open MPI clusters the arguments are detected; elsewhere they come
        # from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (see launch/gpu.sh).
        kwargs = {}
        if "JAX_COORDINATOR_ADDRESS" in os.environ:
            kwargs = {
                "coordinator_address": os.environ["JAX_COORDINATOR_ADDRESS"],
                "num_processes": int(os.environ["JAX_NUM_PROCESSES"]),
                "process_id": int(os.environ["JAX_PROCESS_ID"]),
            }
        # CPU devices of several processes talk over gloo (GPU and TPU backends ignore this).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(**kwargs)
    if FLAGS.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(FLAGS.compilation_cache_dir))
    logging.info("JAX %s: process %d/%d, devices %s", jax.__version__, jax.process_index(), jax.process_count(), jax.devices())
    logging.info("GLIBC_TUNABLES=%r (fft.malloc_tuning)", os.environ.get("GLIBC_TUNABLES", ""))
    from fft import train  # After distributed init.

    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    from fft import malloc_tuning

    malloc_tuning.reexec_with_malloc_tuning()  # Restarts once with tuned malloc where it applies.
    try:
        from fft import methods

        methods.check_overrides(sys.argv)
    except ValueError as e:
        sys.exit(f"fft.main: {e}")
    app.run(main)
