"""The run's console: a tqdm bar on a terminal, plain periodic lines elsewhere, quiet libraries."""

import io
import logging as py_logging

from fft import console


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class TTY(io.StringIO):
    def isatty(self):
        return True


def drive(progress, clock, steps, seconds_per_step=1.0):
    for step in range(1, steps + 1):
        clock.t += seconds_per_step
        progress.update(step, 32)
        progress.report(step, 0.5 + 1.0 / step, 2e-5)
        if step == steps // 2:
            progress.write(f"eval dev at step {step}: accuracy 0.5")
    progress.close()


def test_plain_lines_every_tenth_with_rate_and_eta():
    out, clock = io.StringIO(), FakeClock()
    drive(console.TrainProgress(100, 0, stream=out, tty=False, clock=clock), clock, 100)
    lines = out.getvalue().splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    # One line per tenth of the run (the first step starts the clock; it has no rate yet).
    assert [s.split()[1] for s in steps] == [f"{10 * i}/100" for i in range(1, 11)]
    assert "loss 0.6000 lr 2.00e-05 32.0 ex/s ETA 1m30s" in steps[0]
    assert "ETA" not in steps[-1]  # The last line: nothing left.
    assert "eval dev at step 50: accuracy 0.5" in lines


def test_plain_lines_at_least_every_interval():
    out, clock = io.StringIO(), FakeClock()
    drive(console.TrainProgress(1000, 0, stream=out, tty=False, interval=30.0, clock=clock), clock, 95, 1.0)
    steps = [line.split()[1] for line in out.getvalue().splitlines() if line.startswith("step ")]
    assert steps == ["30/1000", "60/1000", "90/1000"]


def test_terminal_gets_one_bar():
    out, clock = TTY(), FakeClock()
    drive(console.TrainProgress(20, 5, stream=out, clock=clock), clock, 20)
    text = out.getvalue()
    assert "\r" in text and "20/20" in text and "loss" in text and "ex/s" in text
    assert "eval dev at step 10: accuracy 0.5" in text
    assert not any(line.startswith("step ") for line in text.splitlines())


def test_verbosity_silences_libraries():
    console.set_verbosity(0)
    assert py_logging.getLogger("orbax").getEffectiveLevel() == py_logging.WARNING
    console.set_verbosity(1)
    assert py_logging.getLogger("orbax").getEffectiveLevel() == py_logging.INFO
    console.set_verbosity(0)


def test_format_helpers():
    assert console.format_number(22_713_216) == "22.7M"
    assert console.format_number(4321) == "4.3k"
    assert console.format_metrics({"pearson": 0.73271, "name": "x", "loss": 1.5}) == "pearson 0.7327 loss 1.5"
