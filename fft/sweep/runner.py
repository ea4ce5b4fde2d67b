"""Running a grid's points: locks, one subprocess per run, `jobs` at a time, progress lines, failures."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import pathlib
import re
import signal
import statistics
import subprocess
import time
from collections.abc import Sequence
from typing import TextIO

from absl import logging

from fft import errors
from fft import progress as progress_lib
from fft.sweep.grid import FINAL, LOCK_FILE, LOG_FILE, POINT_FILE, REPO, Grid, GridError, display
from fft.sweep.points import Point, check_workdirs, is_finished
from fft.sweep.tables import main_metric


def last_error(log: pathlib.Path) -> str:
    """The line of a run's log that says why it failed: fft's `fft: error:` line, else the last
    exception line, else the last line."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    for pattern in (r"^fft: error:", r"^[\w.]+(Error|Exception|Interrupt)\b"):
        found = [line for line in lines if re.match(pattern, line)]
        if found:
            return found[-1]
    return lines[-1] if lines else "(empty log)"


def _score_text(point: Point, workdir: pathlib.Path) -> str:
    try:
        final = json.loads((workdir / FINAL).read_text())
        name, value = main_metric(point.task, final["eval"], point.split)
        return f", {point.split} {name} {100 * value:.2f}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def _write_point_record(grid: Grid, point: Point, workdir: pathlib.Path) -> None:
    """<workdir>/sweep_point.json: the point and its settings (compared on every later start)."""
    record = {
        "grid": grid.name, "grid_file": display(grid.file),
        "point": {"task": point.task, "method": point.method, "setting": point.setting,
                  "options": point.options, "lr": point.lr, "fraction": point.fraction,
                  "seed": point.seed},
        "settings": point.settings(), "command": point.display(workdir),
    }
    tmp = workdir / (POINT_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(workdir / POINT_FILE)


@dataclasses.dataclass
class _Running:
    point: Point
    proc: subprocess.Popen
    lock_fd: int
    log: TextIO
    started: float


def _estimates(points: Sequence[Point], root: pathlib.Path) -> dict[str, float]:
    """{point.rel: estimated wall seconds} for the points fft.sweep.cost can estimate from the
    finished runs under `root`; empty when it cannot (the ETA then waits for this sweep's runs)."""
    from fft.sweep import cost

    try:
        model = cost.Model(cost.references(root))
        epochs: dict[str, float] = {}
        out = {}
        for p in points:
            key = p.config_arg + repr(p.fields.get("num_epochs"))
            epochs.setdefault(key, cost.point_epochs(p))
            estimate = model.estimate(p, epochs[key])
            if estimate is not None:
                out[p.rel] = estimate
        return out
    except Exception as e:  # noqa: BLE001 -- an estimate must never stop a sweep.
        logging.warning("sweep ETA: no estimates from finished runs (%s)", e)
        return {}


class Runner:
    """Runs the points of one grid, `jobs` at a time, and reports progress."""

    def __init__(self, grid: Grid, points: Sequence[Point], grid_dir: pathlib.Path, *, jobs: int,
                 out: TextIO, on_finish=None, clock=time.monotonic, poll_seconds: float = 0.2):
        self.grid, self.points, self.grid_dir, self.jobs = grid, list(points), grid_dir, jobs
        self.out, self.on_finish, self.clock, self.poll_seconds = out, on_finish, clock, poll_seconds
        self.done = self.failed = self.elsewhere = 0
        self.durations: list[float] = []
        # Estimated wall seconds per point (fft.sweep.cost, from finished runs under the root);
        # the ETA scales them by how this sweep's finished runs compared with their estimates.
        self.estimates: dict[str, float] = {}
        self.measured: list[tuple[float, float]] = []  # (estimate, actual) of runs finished here.
        self.failures: list[tuple[Point, str]] = []
        self.running: list[_Running] = []
        self.pending: list[Point] = []
        self.t0 = clock()

    def say(self, line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", file=self.out, flush=True)

    def status(self) -> str:
        elapsed = self.clock() - self.t0
        text = (f"{self.done} done, {len(self.running)} running, {len(self.pending)} left, "
                f"{self.failed} failed")
        if self.elsewhere:
            text += f", {self.elsewhere} running elsewhere"
        eta = "?"
        pending_est = [self.estimates.get(p.rel) for p in self.pending]
        running_est = [self.estimates.get(r.point.rel) for r in self.running]
        if (self.pending or self.running) and all(e is not None for e in pending_est + running_est):
            scale = 1.0
            if self.measured:
                scale = sum(a for _, a in self.measured) / max(sum(e for e, _ in self.measured), 1e-9)
            now = self.clock()
            work = sum(pending_est) + sum(max(e - (now - r.started), 0.0) for e, r in zip(running_est, self.running))
            eta = progress_lib.format_seconds(scale * work / self.jobs)
        elif self.durations:
            mean = statistics.fmean(self.durations)
            now = self.clock()
            work = len(self.pending) * mean + sum(max(mean - (now - r.started), 0.0) for r in self.running)
            eta = progress_lib.format_seconds(work / self.jobs)
        elif not self.pending and not self.running:
            eta = "0m00s"
        return f"{text}; elapsed {progress_lib.format_seconds(elapsed)}, ETA {eta}"

    def run(self) -> None:
        before = sum(is_finished(self.grid_dir / p.rel) for p in self.points)
        self.done = before
        self.pending = [p for p in self.points if not is_finished(self.grid_dir / p.rel)]
        self.estimates = _estimates(self.pending, self.grid_dir.parent)
        self.say(
            f"sweep {self.grid.name}: {len(self.points)} runs, {before} finished before, "
            f"{len(self.pending)} to run, {self.jobs} at a time; workdirs in {display(self.grid_dir)}"
        )
        try:
            while self.pending or self.running:
                while self.pending and len(self.running) < self.jobs:
                    self._start(self.pending.pop(0))
                if self.running:
                    self._wait()
        finally:
            self._stop_all()

    def _start(self, point: Point) -> None:
        workdir = self.grid_dir / point.rel
        if is_finished(workdir):
            self.done += 1
            return
        workdir.mkdir(parents=True, exist_ok=True)
        fd = self._lock(point, workdir)
        if fd is None:
            return
        try:
            if not self._still_to_run(point, workdir):
                os.close(fd)
                return
            running = self._launch(point, workdir, fd)
        except BaseException:
            os.close(fd)
            raise
        self.running.append(running)
        self.say(f"start {point.rel} | {self.status()}")

    def _lock(self, point: Point, workdir: pathlib.Path) -> int | None:
        """The workdir's lock, taken (its fd); None when another process holds it."""
        fd = os.open(workdir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self.elsewhere += 1
            self.say(f"skip  {point.rel}: running elsewhere (another process holds its lock)")
            return None
        return fd

    def _still_to_run(self, point: Point, workdir: pathlib.Path) -> bool:
        """Under the lock: False (counted) when another sweep finished the point since this one
        started, or when its workdir now holds another setting (a failure)."""
        if is_finished(workdir):
            self.done += 1
            return False
        try:
            check_workdirs(self.grid, [point], self.grid_dir)  # Another sweep may have begun it.
        except GridError as e:
            self.failed += 1
            self.failures.append((point, errors.one_line(e)))
            self.say(f"FAILED {point.rel}: {errors.one_line(e)} | {self.status()}")
            return False
        return True

    def _launch(self, point: Point, workdir: pathlib.Path, fd: int) -> _Running:
        """Records the point and starts its run, which inherits the lock `fd`."""
        _write_point_record(self.grid, point, workdir)
        log = open(workdir / LOG_FILE, "a")  # noqa: SIM115  (closed when the run ends)
        try:
            log.write(f"# fft sweep {self.grid.name} {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                      f"{point.display(workdir)}\n")
            log.flush()
            # The run inherits the lock: it stays held while the run lives, even past this process.
            # Its own session: a Ctrl-C reaches it once, from `_stop_all`, not from the terminal.
            proc = subprocess.Popen(point.command(workdir.absolute()), cwd=REPO, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, pass_fds=(fd,),
                                    start_new_session=True)
        except BaseException:
            log.close()
            raise
        return _Running(point, proc, fd, log, self.clock())

    def _wait(self) -> None:
        while True:
            for r in list(self.running):
                if r.proc.poll() is not None:
                    self._finish(r)
                    return
            time.sleep(self.poll_seconds)

    def _finish(self, r: _Running) -> None:
        self.running.remove(r)
        r.log.close()
        os.close(r.lock_fd)
        seconds = self.clock() - r.started
        workdir = self.grid_dir / r.point.rel
        if r.proc.returncode == 0 and is_finished(workdir):
            self.done += 1
            self.durations.append(seconds)
            if self.estimates.get(r.point.rel) is not None:
                self.measured.append((self.estimates[r.point.rel], seconds))
            score = _score_text(r.point, workdir)
            self.say(f"done  {r.point.rel} in {progress_lib.format_seconds(seconds)}{score} | {self.status()}")
        else:
            self.failed += 1
            reason = last_error(workdir / LOG_FILE)
            self.failures.append((r.point, reason))
            self.say(f"FAILED {r.point.rel} (exit {r.proc.returncode}): {reason} "
                     f"(log: {display(workdir / LOG_FILE)}) | {self.status()}")
        if self.on_finish is not None:
            self.on_finish()

    def _stop_all(self) -> None:
        """On an interrupt: asks the runs still going to stop (they keep their checkpoints)."""
        for r in self.running:
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGINT)
        for r in self.running:
            try:
                r.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()
            r.log.close()
            os.close(r.lock_fd)
        self.running = []
