"""The `fft` command: `fft train`, `fft analyze`, `fft export`, `fft sweep`.

  fft train --config=configs/glue.py:task=rte --workdir=runs/rte [--config.optim.lr=3e-5] [-v]
  fft analyze --run=runs/rte --out_dir=runs/rte/analysis
  fft export runs/rte_lora [--out=DIR]
  fft sweep pooling [--jobs N] [--dry-run] [--only-table]     (grids: configs/grids/)

`pip install -e .` installs it; `python -m fft.main ...` is `fft train ...`. fft's own errors (a bad
config field, data file, checkpoint, model folder, rule ...) print as one line
`fft: error: <what> (<where>)` plus at most a hint and exit with status 2; anything else is a bug
and keeps its traceback. Library log records stay off unless `-v` (INFO) or `-vv` (DEBUG).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
from collections.abc import Callable, Sequence

from fft import errors

USAGE = """usage: fft <command> [options]

commands:
  train    fine-tune and evaluate: fft train --config=configs/glue.py:task=rte --workdir=DIR
  analyze  distances between pretrained and fine-tuned weights, by layer (fft analyze --help)
  export   write a run's task (delta, mask bits or PEFT adapter) from its checkpoint (fft export --help)
  sweep    run a grid of train runs, resumable, N at a time, and its tables: fft sweep configs/grids/tiny.py

`fft <command> --help` shows a command's options; -v / -vv show the libraries' log records."""


def _verbosity(argv: list[str]) -> tuple[int, list[str]]:
    """Takes -v, -vv, --verbosity=N out of argv (absl's own -v needs a value)."""
    level, rest = 0, []
    args = iter(argv)
    for arg in args:
        if arg in ("-v", "-vv", "-vvv"):
            level = max(level, len(arg) - 1)
        elif arg.startswith("--verbosity="):
            level = int(arg.split("=", 1)[1])
        elif arg == "--verbosity":
            level = int(next(args, "1"))
        else:
            rest.append(arg)
    return level, rest


def _train_flags(argv: list[str]):
    """A fresh flag set for one `fft train` over `argv` (config_flags reads its overrides from the
    argv it is given, not sys.argv; tests run several in one process)."""
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "Experiment config file (configs/*.py[:args]).", flag_values=fv, lock_config=True,
        sys_argv=["fft train", *argv],
    )
    flags.DEFINE_string("workdir", None, "Where checkpoints, metrics and TensorBoard events go.", flag_values=fv)
    flags.DEFINE_bool(
        "distributed", os.environ.get("FFT_DISTRIBUTED", "0") == "1",
        "Call jax.distributed.initialize() (several hosts; FFT_DISTRIBUTED=1 does the same).", flag_values=fv,
    )
    flags.DEFINE_string(
        "compilation_cache_dir", os.environ.get("JAX_COMPILATION_CACHE_DIR", "~/.cache/fft/jax"),
        "Persistent XLA compilation cache: a rerun with the same shapes skips compiling. '' disables.",
        flag_values=fv,
    )
    return fv


def _parse_train(argv: list[str]):
    """(flag values) or an FftError naming the bad flag; the config file is loaded here."""
    from absl import flags

    from fft import methods

    fv = _train_flags(argv)
    if "--help" in argv or "-h" in argv:
        print("usage: fft train --config=CONFIG[:ARGS] --workdir=DIR [--config.FIELD=VALUE ...] [-v]\n")
        print(fv.module_help(sys.modules[__name__]))
        raise SystemExit(0)
    methods.check_overrides(argv)
    _importable_config(_raw(argv, "--config"))
    try:
        extra = fv(["fft train", *argv])
        fv["config"].value  # noqa: B018  (config_flags loads the file on first access)
    except (flags.Error, KeyError) as e:
        inner = _config_file_error(e)
        if inner:  # The config file's get_config rejected its argument string.
            raise errors.FftError(f"--config={_raw(argv, '--config')}: {inner}") from None
        message = _unknown_field(argv) if isinstance(e, (flags.UnrecognizedFlagError, KeyError)) else None
        raise errors.FftError(message or _flag_error(e), hint="fft train --help lists the flags") from None
    except errors.FftError:
        raise
    except (ValueError, AttributeError, TypeError, OSError, ImportError) as e:
        # Raised while loading the config file: its get_config rejected the argument string.
        message = _unknown_field(argv) if "did you mean" in str(e).lower() else None
        raise errors.FftError(message or f"--config={_raw(argv, '--config')}: {errors.one_line(e)}") from None
    if len(extra) > 1:
        raise errors.FftError(f"unexpected arguments {extra[1:]} (flags are --name=value)")
    for name in ("config", "workdir"):
        if fv[name].value is None:
            raise errors.FftError(f"--{name} is required", hint="fft train --help")
    return fv


def _importable_config(spec: str) -> None:
    """Checks the config file exists; a file in a `configs/` folder imports its siblings as
    `configs.<name>`, so that folder's parent goes on sys.path (fft runs from any directory)."""
    if not spec:
        return
    path = pathlib.Path(spec.split(":", 1)[0]).expanduser()
    if not path.is_file():
        raise errors.FftError(f"--config={spec}: no such file {str(path)!r}")
    folder = path.resolve().parent
    if folder.name == "configs" and str(folder.parent) not in sys.path:
        sys.path.insert(0, str(folder.parent))


def _raw(argv: list[str], name: str) -> str:
    return next((a.split("=", 1)[1] for a in argv if a.startswith(name + "=")), "")


def _config_file_error(e: Exception) -> str | None:
    """The message of the exception a config file's get_config raised, which config_flags hands
    on as the text of a traceback; None for other flag errors."""
    text = str(e)
    if "Error whilst parsing config file" not in text or "Traceback" not in text:
        return None
    last = text.strip().splitlines()[-1].strip()
    return last.split(": ", 1)[1] if ": " in last else last


def _flag_error(e: Exception) -> str:
    """absl's flag errors on one line: a misspelled field names the override and a suggestion; an
    error inside the config file's get_config keeps only its last line (not the traceback)."""
    text = str(e)
    if "Traceback (most recent call last)" in text:
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        return f"{lines[0].rstrip(':')} {lines[-1]}"
    return errors.one_line(e)


def _unknown_field(argv: list[str]) -> str | None:
    """For the first `--config.a.b=...` override naming no field of the config: 'that flag: the
    config has no field a.b (did you mean a.c?)'; None when every override names a field."""
    import difflib

    from fft import tree_paths

    only_config = [a for a in argv if a.startswith("--config=")]
    fv = _train_flags(only_config)
    fv(["fft train", *only_config])
    fields = set(tree_paths.flatten(fv.config.to_dict(), sep="."))
    prefixes = {f.rsplit(".", i)[0] for f in fields for i in range(f.count(".") + 1)}
    for arg in argv:
        if arg.startswith("--config."):
            name = arg.removeprefix("--config.").split("=", 1)[0]
            if name not in prefixes:
                close = difflib.get_close_matches(name, sorted(prefixes), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                return f"{arg.split('=', 1)[0]}: the config has no field {name}{hint}"
    return None


def train(argv: list[str]) -> int:
    """`fft train`: parses the flags, starts jax.distributed if asked, and trains."""
    fv = _parse_train(argv)
    import jax

    if fv.distributed:
        # On TPU VMs and SLURM/Open MPI clusters the arguments are detected; elsewhere they come
        # from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (launch/gpu.sh).
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
    if fv.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.expanduser(fv.compilation_cache_dir))
    from fft import train as train_lib  # After distributed init.

    train_lib.train_and_evaluate(fv.config, fv.workdir)
    return 0


def analyze(argv: list[str]) -> int:
    from fft import analyze as analyze_lib

    return analyze_lib.main(argv)


def export(argv: list[str]) -> int:
    """`fft export WORKDIR [--out=DIR] [--step=N]`: the run's task as its method stores it."""
    parser = argparse.ArgumentParser(prog="fft export", description=export.__doc__)
    parser.add_argument("workdir", help="a run's workdir")
    parser.add_argument("--out", help="where to write (default: the workdir)")
    parser.add_argument("--step", type=int, help="which checkpoint (default: the latest)")
    args = parser.parse_args(argv)
    from fft import train as train_lib

    out = train_lib.export_run(args.workdir, out_dir=args.out, step=args.step)
    print(f"wrote {out['file']} ({out['stored_bytes']} bytes, step {out['step']})")
    return 0


def sweep(argv: list[str]) -> int:
    """`fft sweep GRID [--jobs N] [--root DIR] [--dry-run] [--only-table]` (fft/sweep/__init__.py)."""
    from fft import sweep as sweep_lib

    return sweep_lib.main(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "train": train, "analyze": analyze, "export": export, "sweep": sweep,
}


def run(argv: Sequence[str]) -> int:
    """Runs one command; returns its exit status (2 for fft's own errors, after one line)."""
    verbosity, argv = _verbosity(list(argv))
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"fft: error: unknown command {command!r} (valid: {', '.join(COMMANDS)})", file=sys.stderr)
        return errors.EXIT_STATUS
    from fft import console

    console.set_verbosity(verbosity)
    try:
        return COMMANDS[command](rest) or 0
    except errors.FftError as e:
        print(errors.report(e), file=sys.stderr, flush=True)
        return errors.EXIT_STATUS
    except KeyboardInterrupt:
        print("fft: interrupted; the run resumes from its last checkpoint", file=sys.stderr)
        return 130
    except BrokenPipeError:  # Output piped into e.g. `head`, which stopped reading: not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # No second error at exit.
        return 0


def main() -> None:
    """The `fft` console script (pyproject's [project.scripts])."""
    from fft import malloc_tuning

    malloc_tuning.reexec_with_malloc_tuning()  # Restarts once with tuned malloc where it applies.
    sys.exit(run(sys.argv[1:]))


if __name__ == "__main__":
    main()
