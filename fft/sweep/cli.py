"""`fft sweep` / `python -m fft.sweep`: its arguments and `main`."""

from __future__ import annotations

import argparse
import contextlib
import pathlib
import signal
import sys
import threading
from collections.abc import Sequence
from typing import TextIO

from fft.sweep import cost
from fft.sweep.grid import DEFAULT_RESULTS, DEFAULT_ROOT, Grid, GridError, display, load_grid
from fft.sweep.points import Point, check_workdirs, expand, is_finished
from fft.sweep.runner import Runner
from fft.sweep.tables import write_tables


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fft sweep",
        description="Runs a grid of fft train runs (see fft/sweep/__init__.py for the grid format).",
    )
    parser.add_argument("grid", help="a grid file (configs/grids/NAME.py) or its NAME")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once (default 1)")
    parser.add_argument("--root", default=str(DEFAULT_ROOT),
                        help="where the grid's folder of workdirs goes (default runs/sweeps)")
    parser.add_argument("--results", default=str(DEFAULT_RESULTS),
                        help="folder for the copy of the tables, <NAME>.{csv,json,md} (default results/grids)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="list the runs and their commands; start nothing")
    mode.add_argument("--only-table", action="store_true", help="rebuild the tables from finished runs")
    mode.add_argument("--cost", action="store_true",
                      help="wall time of the finished runs and an estimate for the rest (fft/sweep/cost.py)")
    args = parser.parse_args(list(argv))
    if args.jobs < 1:
        raise GridError(f"--jobs={args.jobs}: must be at least 1")
    return args


def _dry_run(grid: Grid, points: Sequence[Point], grid_dir: pathlib.Path, out: TextIO) -> None:
    finished = sum(is_finished(grid_dir / p.rel) for p in points)
    print(f"sweep {grid.name}: {len(points)} runs, {finished} finished, {len(points) - finished} "
          f"to run (dry run: nothing starts)", file=out)
    for point in points:
        workdir = grid_dir / point.rel
        state = "finished" if is_finished(workdir) else "run"
        print(f"  {state:8s} {point.display(workdir)}", file=out)


def _tables_text(written: Sequence[pathlib.Path]) -> str:
    return ", ".join(display(p) for p in written if p.suffix == ".md")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def _stop_on_signals():
    """`kill` (SIGTERM) and `kill -INT` stop a sweep like Ctrl-C: its runs are asked to stop and
    keep their checkpoints. (A sweep started in the background with nohup or `&` inherits SIGINT
    ignored; it is turned back on.) The previous handlers come back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def main(argv: Sequence[str], out: TextIO | None = None) -> int:
    """`fft sweep`: 0 when every run finished or was skipped, 1 when a run failed; FftError for
    bad input, before any run starts."""
    out = out or sys.stdout
    args = parse_args(argv)
    grid = load_grid(args.grid)
    points = expand(grid)
    grid_dir = pathlib.Path(args.root).absolute() / grid.name
    results_dir = pathlib.Path(args.results).absolute()
    check_workdirs(grid, points, grid_dir)
    if args.dry_run:
        _dry_run(grid, points, grid_dir, out)
        return 0
    if args.cost:
        refs = cost.references(pathlib.Path(args.root).absolute())
        for line in cost.cost_lines(grid.name, cost.grid_cost(points, grid_dir, cost.Model(refs)), len(refs)):
            print(line, file=out)
        return 0
    if args.only_table:
        written = write_tables(grid, points, grid_dir, results_dir)
        print(f"sweep {grid.name}: tables {_tables_text(written)}", file=out)
        return 0
    runner = Runner(grid, points, grid_dir, jobs=args.jobs, out=out,
                    on_finish=lambda: write_tables(grid, points, grid_dir, results_dir))
    with _stop_on_signals():
        runner.run()
    written = write_tables(grid, points, grid_dir, results_dir)
    runner.say(f"sweep {grid.name} ended: {runner.status()}; tables {_tables_text(written)}")
    for point, reason in runner.failures:
        runner.say(f"failed: {point.rel}: {reason}")
    return 1 if runner.failures else 0
