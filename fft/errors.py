"""The one base class of fft's own errors, and how the command line reports them.

An `FftError` is a mistake in what the user gave fft (a config field, a data file, a checkpoint, a
model folder, a partition rule ...): the `fft` command prints it as one line,
`fft: error: <what> (<where>)`, plus at most one hint line, and exits with status 2, without a
traceback. Any other exception is a bug in fft or a dependency and keeps its traceback.

Each module keeps its own subclass (`validate.ConfigError`, `glue.DataError`, ...); those also
derive from the builtin they used to be (ValueError, FileNotFoundError) so callers that catch the
builtin keep working.
"""

from __future__ import annotations

EXIT_STATUS = 2  # What `fft` exits with for an FftError (argparse's status for usage errors).


class FftError(Exception):
    """A user-facing error: the message says what is wrong and where; `hint` says what to do."""

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class CheckpointError(FftError, ValueError):
    """A run's checkpoints cannot be restored: damaged, or made for another state layout."""


class RunError(FftError, ValueError):
    """A run cannot start or continue as asked (workdir, topology, training diverged ...)."""


def one_line(error: BaseException) -> str:
    """`error`'s message folded onto one line (newlines become '; ')."""
    text = str(error).strip() or type(error).__name__
    return "; ".join(part.strip() for part in text.splitlines() if part.strip())


def report(error: FftError) -> str:
    """The text `fft` prints for `error`: `fft: error: ...` and, if any, `  hint: ...`."""
    lines = [f"fft: error: {one_line(error)}"]
    if error.hint:
        lines.append(f"  hint: {one_line(Exception(error.hint))}")
    return "\n".join(lines)
