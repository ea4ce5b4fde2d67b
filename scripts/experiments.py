"""Shared pieces of the experiment drivers: run `fft.main` once per workdir, collect results.

A run is skipped when its workdir already has final_metrics.json; an interrupted run resumes from
its checkpoint when the driver is started again.
"""

from __future__ import annotations

import json
import pathlib
import shlex
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parent.parent


def command(task: str, workdir: pathlib.Path, overrides: list[str], method: str = "full") -> list[str]:
    arg = f"task={task}" if method == "full" else f"task={task},method={method}"
    return [sys.executable, "-m", "fft.main", f"--config=configs/glue.py:{arg}",
            f"--workdir={workdir}", "--config.checkpoint.every_steps=200", *overrides]


def display_command(task: str, workdir: pathlib.Path, overrides: list[str], method: str = "full") -> str:
    """The command as a user types it from the repo root."""
    rel = workdir.relative_to(REPO) if workdir.is_relative_to(REPO) else workdir
    return "python -m fft.main " + shlex.join(command(task, rel, overrides, method)[3:])


def wait_while_paused() -> None:
    """Holds the next run while `runs/PAUSE` exists (e.g. to benchmark on an idle machine)."""
    pause = REPO / "runs" / "PAUSE"
    if pause.exists():
        print(f"paused: waiting for {pause} to go away", flush=True)
    while pause.exists():
        time.sleep(10)


def run(task: str, workdir: pathlib.Path, overrides: list[str], method: str = "full") -> dict:
    """Runs (or resumes) one fine-tuning run unless it has finished; returns its final metrics."""
    final = workdir / "final_metrics.json"
    if not final.exists():
        wait_while_paused()
    if not final.exists():  # (It may have been finished by another driver while we waited.)
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = command(task, workdir, overrides, method)
        print("$", display_command(task, workdir, overrides, method), flush=True)
        t0 = time.time()
        with open(workdir.parent / f"{workdir.name}.log", "a") as log:
            subprocess.run(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
        print(f"  done in {time.time() - t0:.0f}s", flush=True)
    return json.loads(final.read_text())


def primary_metric(task: str, dev: dict) -> tuple[str, float]:
    """(name, value in %) of the task's headline dev metric (MCC, Pearson, accuracy...)."""
    from fft.data import glue

    name = glue.get_task(task).primary_metric
    return name, 100 * dev[name]
