"""One sweep runner: a grid of `fft train` runs, resumable, N at a time, and its results tables.

  python -m fft.sweep GRID [--jobs N] [--root DIR] [--results DIR] [--dry-run | --only-table]
  fft sweep configs/grids/partition.py --jobs 2     # workdirs in runs/sweeps/partition/
  fft sweep tiny --dry-run                          # a bare name means configs/grids/<name>.py

A grid is a Python file (configs/grids/*.py) whose `get_config()` returns an ml_collections
ConfigDict (or a dict) with these fields:

  name            the grid's name (default: the file's stem); its workdirs go to <root>/<name>/
  base            extra arguments of configs/glue.py, e.g. "model=minilm" or "tiny" ("" default)
  tasks           GLUE task names, in the order they run
  methods         entries, each a method name ("full") or a dict:
                    method     a registered method (fft/methods)
                    options    {option: [values]} crossed (a scalar is one value); the option
                               must be one of fft.methods.default_options(method)
                    label      the entry's name in paths and tables (default: the method and
                               every option given, e.g. lora-rank4; with a label only the options
                               with several values are appended, e.g. lora_qv-rank4)
                    overrides  config fields for this entry's runs, e.g. {"feature_cache": True}
                    tasks      only these of the grid's tasks
                    lrs        this entry's learning rates (instead of the grid's `lrs`)
                    fractions  this entry's train fractions (instead of the grid's `fractions`)
  lrs             learning rates (config.optim.lr): one list for every entry, or a dict from an
                  entry's label or method name to its list; a method without one keeps the
                  config's default
  seeds           config.seed values (default [0])
  fractions       config.data.train_fraction values (default [1.0])
  overrides       config fields for every run: {"num_epochs": 3, "data": {"validation_fraction":
                  0.1}} or, in a plain dict, dotted names {"data.validation_fraction": 0.1}
  task_overrides  {task: fields} for that task's runs, e.g. {"sst2": {"num_epochs": 1}}
  order           the axes from outermost to innermost (default: seed, task, method, lr,
                  fraction): runs start in this order, so put first what informs most; the
                  default runs seed 0 of every cell before any cell's seed 1

Fields apply in this order: overrides, task_overrides, the entry's overrides; '{task}' in a string
value (option or field) becomes the run's task. `seed`, `optim.lr`, `task`, `method` and method
options are axes, not overrides; `data.train_fraction` in overrides replaces the fraction axis
for those runs (their paths and rows show the fraction they train on, and points that become the
same run run once). As in `fft train`, a train fraction's subset is drawn from the seed. See
configs/grids/tiny.py for a small example.

Each point (task x entry x option values x lr x fraction x seed) is one run, `python -m fft.main
--config=configs/glue.py:task=T,method=M,<base> --workdir=<root>/<name>/<task>/<label>/lr<lr>/
frac<fraction>/seed<seed> --config.<field>=<value> ...`, started from the repository root, its
output in <workdir>/log.txt. A point whose workdir has final_metrics.json is skipped; an
interrupted one is started again and fft resumes it from its checkpoint. A lock
(<workdir>/.sweep.lock, held by the run itself) keeps two sweeps off one workdir: the second skips
it as running elsewhere. Each workdir records its point (sweep_point.json); a workdir that holds
another setting, or files but no sweep_point.json, is an error before any run starts. A failed
run is reported (the last error line of its log) and the sweep goes on; the exit status is 1 if
any failed. A line per start and end shows done / running / left / failed, elapsed time and an
ETA from the mean duration of the runs finished by this invocation.

Tables, one row per (task, entry and options, lr, fraction), seeds pooled: <root>/<name>/table.
{csv,json,md} and <results>/<name>.{csv,json,md} (default results/grids/). `mean` and `sd` are the
task's main metric (fft.metrics: `combined` where a task has several) in %, over the finished
seeds, on the `validation` split when data.validation_fraction > 0 and on `dev` otherwise; `n` of
`planned` seeds finished; the JSON also holds every eval metric (mean, sd, values, as fractions).
A cell with no finished run is shown as missing, never filled. --only-table rebuilds the tables.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import difflib
import fcntl
import importlib.util
import itertools
import json
import os
import pathlib
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from fft import errors
from fft import progress as progress_lib

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIG_FILE = "configs/glue.py"  # Relative to REPO, where runs start.
GRIDS_DIR = REPO / "configs" / "grids"
DEFAULT_ROOT = REPO / "runs" / "sweeps"
DEFAULT_RESULTS = REPO / "results" / "grids"
AXES = ("seed", "task", "method", "lr", "fraction")
GRID_FIELDS = ("name", "base", "tasks", "methods", "lrs", "seeds", "fractions", "overrides",
               "task_overrides", "order")
ENTRY_FIELDS = ("method", "label", "options", "overrides", "tasks", "lrs", "fractions")
# Config fields that are axes of the grid (or fixed by the config argument), not overrides.
AXIS_FIELDS = {"seed": "seeds", "optim.lr": "lrs", "task": "tasks", "method": "methods"}
POINT_FILE = "sweep_point.json"
LOCK_FILE = ".sweep.lock"
LOG_FILE = "log.txt"
FINAL = "final_metrics.json"


class GridError(errors.FftError, ValueError):
    """A grid file, or the workdirs it names, cannot be run as given."""


# ---------------------------------------------------------------------------------------------
# Grid files.


@dataclasses.dataclass(frozen=True)
class Entry:
    """One entry of a grid's `methods`."""

    method: str
    label: str | None
    options: dict[str, tuple[Any, ...]]
    overrides: dict[str, Any]
    tasks: tuple[str, ...] | None
    lrs: tuple[float, ...] | None
    fractions: tuple[float, ...] | None

    @property
    def name(self) -> str:
        return self.label or self.method


@dataclasses.dataclass(frozen=True)
class Grid:
    name: str
    file: pathlib.Path
    base: str
    tasks: tuple[str, ...]
    entries: tuple[Entry, ...]
    lrs: tuple[float, ...] | dict[str, tuple[float, ...]]
    seeds: tuple[int, ...]
    fractions: tuple[float, ...]
    overrides: dict[str, Any]
    task_overrides: dict[str, dict[str, Any]]
    order: tuple[str, ...]


def find_grid(spec: str) -> pathlib.Path:
    """The grid file `spec` names: a path, or a bare name of a file in configs/grids/."""
    for path in (pathlib.Path(spec), REPO / spec, GRIDS_DIR / f"{spec}.py"):
        if path.is_file():
            return path
    raise GridError(f"grid {spec}: no such file", hint=f"grids here: {', '.join(known_grids()) or 'none'}")


def known_grids() -> list[str]:
    return sorted(p.stem for p in GRIDS_DIR.glob("*.py") if not p.name.startswith("_"))


def _display(path: pathlib.Path) -> str:
    """`path` relative to the working directory (or the repository) when inside it."""
    path = pathlib.Path(path).absolute()
    for base in (pathlib.Path.cwd(), REPO):
        if path.is_relative_to(base):
            return str(path.relative_to(base))
    return str(path)


def load_grid(spec: str) -> Grid:
    """Reads and checks a grid file's fields (tasks, methods and options exist)."""
    path = find_grid(spec)
    where = _display(path)
    if str(REPO) not in sys.path:  # Grid files may import configs.* as config files do.
        sys.path.insert(0, str(REPO))
    try:
        module_spec = importlib.util.spec_from_file_location(f"fft_grid_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001  (any error in a user's file is one line)
        raise GridError(f"{where}: cannot load it ({type(e).__name__}: {errors.one_line(e)})") from None
    if not callable(getattr(module, "get_config", None)):
        raise GridError(f"{where}: has no get_config() returning the grid")
    try:
        raw = module.get_config()
    except Exception as e:  # noqa: BLE001
        raise GridError(f"{where}: get_config() failed ({type(e).__name__}: {errors.one_line(e)})") from None
    raw = raw.to_dict() if hasattr(raw, "to_dict") else raw
    if not isinstance(raw, Mapping):
        raise GridError(f"{where}: get_config() returned {type(raw).__name__}, not a ConfigDict or dict")
    return parse_grid(dict(raw), path)


def _listed(value: Any) -> tuple[Any, ...]:
    """A field that takes one value or several, as a tuple."""
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return (value,)


def _flatten(fields: Any, where: str, prefix: str = "") -> dict[str, Any]:
    """{"data": {"x": 1}, "a.b": 2} -> {"data.x": 1, "a.b": 2}."""
    if fields is None:
        return {}
    if not isinstance(fields, Mapping):
        raise GridError(f"{where}: expected a dict of config fields, got {fields!r}")
    out = {}
    for key, value in fields.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, where, name + "."))
        else:
            out[name] = value
    return out


def _task_name(task: Any, where: str) -> str:
    from fft.data import glue

    try:
        return glue.get_task(str(task)).name
    except glue.DataError:
        raise GridError(f"{where}: unknown task {task!r}; valid: {', '.join(glue.TASKS)}") from None


def _numbers(values: Any, where: str, kind: type) -> tuple[Any, ...]:
    out = []
    for v in _listed(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)):
            raise GridError(f"{where}: {v!r} is not {'an integer' if kind is int else 'a number'}")
        out.append(kind(v))
    return tuple(out)


def parse_grid(raw: dict[str, Any], path: pathlib.Path) -> Grid:
    from fft import methods

    where = _display(path)
    unknown = sorted(set(raw) - set(GRID_FIELDS))
    if unknown:
        raise GridError(f"{where}: unknown grid field(s) {unknown}; valid: {', '.join(GRID_FIELDS)}")
    name = str(raw.get("name") or path.stem)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise GridError(f"{where}: name {name!r}: use letters, digits, '_', '-' and '.'")
    base = str(raw.get("base") or "")
    for item in filter(None, base.split(",")):
        if item.partition("=")[0].strip() in ("task", "method"):
            raise GridError(f"{where}: base {base!r}: task and method come from `tasks` and `methods`")
    tasks = tuple(_task_name(t, where) for t in _listed(raw.get("tasks") or ()))
    if len(set(tasks)) != len(tasks):
        raise GridError(f"{where}: tasks {list(tasks)} lists a task twice")
    entries = []
    for i, item in enumerate(_listed(raw.get("methods") or ())):
        entries.append(_parse_entry(item, f"{where}: methods[{i}]", tasks, methods))
    lrs = raw.get("lrs") or ()
    if isinstance(lrs, Mapping):
        keys = {e.name for e in entries} | {e.method for e in entries}
        for key in lrs:
            if key not in keys:
                close = difflib.get_close_matches(str(key), sorted(keys), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise GridError(f"{where}: lrs[{key!r}]: no method entry has that label or method{hint}")
        lrs = {k: _numbers(v, f"{where}: lrs[{k!r}]", float) for k, v in lrs.items()}
    else:
        lrs = _numbers(lrs, f"{where}: lrs", float)
    overrides = _flatten(raw.get("overrides"), f"{where}: overrides")
    task_overrides = {}
    for task, fields in (raw.get("task_overrides") or {}).items():
        task_overrides[_task_name(task, f"{where}: task_overrides")] = _flatten(
            fields, f"{where}: task_overrides[{task!r}]"
        )
    order = tuple(_listed(raw.get("order") or AXES))
    if sorted(order) != sorted(AXES):
        raise GridError(f"{where}: order {list(order)}: name each of {', '.join(AXES)} once")
    grid = Grid(
        name=name, file=path, base=base, tasks=tasks, entries=tuple(entries), lrs=lrs,
        seeds=_numbers(raw.get("seeds", [0]), f"{where}: seeds", int),
        fractions=_numbers(raw.get("fractions", [1.0]), f"{where}: fractions", float),
        overrides=overrides, task_overrides=task_overrides, order=order,
    )
    for scope, fields in [("overrides", overrides),
                          *((f"task_overrides[{t!r}]", f) for t, f in task_overrides.items()),
                          *((f"methods[{i}] ({e.name}) overrides", e.overrides) for i, e in enumerate(entries))]:
        _check_not_axes(fields, f"{where}: {scope}")
    return grid


def _parse_entry(item: Any, where: str, tasks: tuple[str, ...], methods) -> Entry:
    if isinstance(item, str):
        item = {"method": item}
    if not isinstance(item, Mapping):
        raise GridError(f"{where}: expected a method name or a dict, got {item!r}")
    unknown = sorted(set(item) - set(ENTRY_FIELDS))
    if unknown:
        raise GridError(f"{where}: unknown field(s) {unknown}; an entry has {', '.join(ENTRY_FIELDS)}")
    method = item.get("method")
    if method not in methods.REGISTRY:
        raise GridError(f"{where}: unknown method {method!r}; valid: {', '.join(methods.REGISTRY)}")
    defaults = methods.default_options(method)
    options = {}
    for key, values in (item.get("options") or {}).items():
        if key not in defaults:
            close = difflib.get_close_matches(str(key), sorted(defaults), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise GridError(
                f"{where}: method {method} has no option {key!r}{hint}; its options: "
                f"{', '.join(sorted(defaults)) or 'none'}"
            )
        options[key] = _listed(values)
    label = item.get("label")
    if label is not None and not re.fullmatch(r"[A-Za-z0-9_.+-]+", str(label)):
        raise GridError(f"{where}: label {label!r}: use letters, digits, '_', '-', '+' and '.'")
    entry_tasks = None
    if item.get("tasks") is not None:
        entry_tasks = tuple(_task_name(t, where) for t in _listed(item["tasks"]))
        outside = [t for t in entry_tasks if t not in tasks]
        if outside:
            raise GridError(f"{where}: tasks {outside} are not in the grid's tasks {list(tasks)}")
    lrs = _numbers(item["lrs"], f"{where}: lrs", float) if item.get("lrs") is not None else None
    fractions = (_numbers(item["fractions"], f"{where}: fractions", float)
                 if item.get("fractions") is not None else None)
    overrides = _flatten(item.get("overrides"), f"{where}: overrides")
    return Entry(method, None if label is None else str(label), options, overrides, entry_tasks, lrs, fractions)


def _check_not_axes(fields: Mapping[str, Any], where: str) -> None:
    from fft import methods

    for key in fields:
        if key in AXIS_FIELDS:
            raise GridError(f"{where}: {key} is an axis of the grid; list its values in `{AXIS_FIELDS[key]}`")
        block = key.split(".", 1)[0]
        if block in methods.REGISTRY:
            raise GridError(f"{where}: {key} is a method option; give it in the method entry's `options`")


# ---------------------------------------------------------------------------------------------
# Points.


@dataclasses.dataclass(frozen=True)
class Point:
    """One run of a grid."""

    task: str
    method: str
    setting: str  # The entry's label and options, as in paths and tables (e.g. lora-rank4).
    options: dict[str, Any]
    lr: float
    fraction: float
    seed: int
    config_arg: str  # configs/glue.py's argument: task=...,method=...,<base>
    fields: dict[str, Any]  # Every --config.<field>=<value> of the run, typed as the config's.
    split: str  # The eval split its score comes from: 'validation' or 'dev'.
    rel: str  # Its workdir under <root>/<grid name>.

    @property
    def cell(self) -> tuple[str, str, float, float]:
        return (self.task, self.setting, self.lr, self.fraction)

    def settings(self) -> dict[str, Any]:
        """What makes the run: recorded in sweep_point.json, compared on every start."""
        return json.loads(json.dumps({"config": f"{CONFIG_FILE}:{self.config_arg}", "fields": self.fields}))

    def argv(self, workdir: pathlib.Path | str) -> list[str]:
        flags = [f"--config.{k}={flag_value(v)}" for k, v in self.fields.items()]
        return [f"--config={CONFIG_FILE}:{self.config_arg}", f"--workdir={workdir}", *flags]

    def command(self, workdir: pathlib.Path) -> list[str]:
        return [sys.executable, "-m", "fft.main", *self.argv(workdir)]

    def display(self, workdir: pathlib.Path) -> str:
        """The command as typed at the repository root."""
        return "python -m fft.main " + shlex.join(self.argv(_repo_path(workdir)))


def flag_value(value: Any) -> str:
    """A config value as a --config.<field>= flag's text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return repr(tuple(value))
    return str(value) if isinstance(value, str) else repr(value)


def path_value(value: Any) -> str:
    """A value as part of a path: 5e-4 -> '5e-4', 0.1 -> '0.1', 1.0 -> '1', 'a;b' -> 'a+b'."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if value == int(value) and abs(value) < 1e6:
            return str(int(value))
        if 0 < abs(value) < 0.01:
            mantissa, exponent = f"{value:.6e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "+".join(path_value(v) for v in value) or "none"
    text = re.sub(r"[;,]+", "+", str(value).strip())
    return re.sub(r"[^A-Za-z0-9._+=-]+", "_", text).strip("_") or "none"


def _substitute(value: Any, task: str) -> Any:
    return value.replace("{task}", task) if isinstance(value, str) else value


_CONFIGS: dict[str, Any] = {}


def base_config(config_arg: str, where: str):
    """configs/glue.py's config for `config_arg` (cached; callers copy it)."""
    if config_arg not in _CONFIGS:
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        module = sys.modules.get("fft_sweep_glue_config")
        if module is None:
            spec = importlib.util.spec_from_file_location("fft_sweep_glue_config", REPO / CONFIG_FILE)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules["fft_sweep_glue_config"] = module
        try:
            _CONFIGS[config_arg] = module.get_config(config_arg)
        except (ValueError, errors.FftError) as e:
            raise GridError(f"{where}: {CONFIG_FILE}:{config_arg}: {errors.one_line(e)}") from None
    return _CONFIGS[config_arg]


def _config_fields(config) -> set[str]:
    from fft import tree_paths

    return set(tree_paths.flatten(config.to_dict(), sep="."))


def _assign(config, key: str, value: Any, where: str) -> Any:
    """Sets `key` (dotted) of `config` to `value`; returns the value as the config typed it."""
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part] if part in node and hasattr(node[part], "keys") else None
        if node is None:
            break
    if node is None or leaf not in node or hasattr(node[leaf], "keys"):
        fields = sorted(_config_fields(config))
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise GridError(f"{where}: the config has no field {key}{hint}")
    if isinstance(node[leaf], tuple) and isinstance(value, list):
        value = tuple(value)
    try:
        node[leaf] = value
    except (TypeError, ValueError) as e:
        raise GridError(f"{where}: {key}={value!r}: {errors.one_line(e)}") from None
    return node[leaf]


def expand(grid: Grid) -> list[Point]:
    """Every point of the grid, in run order (`grid.order`), each config checked
    (fields exist and take the values, `fft.validate` ranges, method options)."""
    where = _display(grid.file)
    keyed = []
    for ei, entry in enumerate(grid.entries):
        combos = list(itertools.product(*entry.options.values()))
        for ci, combo in enumerate(combos):
            options = dict(zip(entry.options, combo))
            for task in grid.tasks if entry.tasks is None else entry.tasks:
                arg = ",".join(filter(None, (f"task={task}", f"method={entry.method}", grid.base)))
                base = base_config(arg, where)
                lrs = entry.lrs
                if lrs is None:
                    lrs = (grid.lrs.get(entry.name, grid.lrs.get(entry.method))
                           if isinstance(grid.lrs, dict) else grid.lrs) or (base.optim.lr,)
                for li, lr in enumerate(lrs):
                    for fi, fraction in enumerate(grid.fractions if entry.fractions is None else entry.fractions):
                        for si, seed in enumerate(grid.seeds):
                            point = _point(grid, ei, entry, options, task, arg, base, lr, fraction, seed)
                            index = {"seed": si, "task": grid.tasks.index(task), "method": (ei, ci),
                                     "lr": li, "fraction": fi}
                            keyed.append((tuple(index[a] for a in grid.order), point))
    keyed.sort(key=lambda k: k[0])
    points, by_rel = [], {}
    for _, point in keyed:
        other = by_rel.get(point.rel)
        if other is None:
            by_rel[point.rel] = point
            points.append(point)
        elif other.settings() != point.settings():
            raise GridError(
                f"{where}: two points share the workdir {point.rel} with different settings "
                f"({_difference(other.settings(), point.settings())}); give their entries different labels"
            )
    if not points:
        raise GridError(
            f"{where}: the grid has no points (tasks x methods x options x lrs x seeds x fractions is empty)"
        )
    return points


def _point(grid: Grid, ei: int, entry: Entry, options: dict[str, Any], task: str, arg: str, base,
           lr: float, fraction: float, seed: int) -> Point:
    from fft import methods, validate

    where = _display(grid.file)
    config = copy.deepcopy(base)
    fields: dict[str, Any] = {}
    for key, value in options.items():
        fields[f"{entry.method}.{key}"] = _assign(
            config, f"{entry.method}.{key}", _substitute(value, task), f"{where}: methods[{ei}] options"
        )
    extra = {}
    for scope, overrides in (("overrides", grid.overrides),
                             (f"task_overrides[{task!r}]", grid.task_overrides.get(task, {})),
                             (f"methods[{ei}] ({entry.name}) overrides", entry.overrides)):
        for key, value in overrides.items():
            extra[key] = _assign(config, key, _substitute(value, task), f"{where}: {scope}")
    fraction = extra.pop("data.train_fraction", fraction)
    fields["optim.lr"] = _assign(config, "optim.lr", lr, f"{where}: lrs")
    fields["data.train_fraction"] = _assign(config, "data.train_fraction", fraction, f"{where}: fractions")
    fields["seed"] = _assign(config, "seed", seed, f"{where}: seeds")
    fields.update(extra)
    shown = options if entry.label is None else {k: v for k, v in options.items() if len(entry.options[k]) > 1}
    setting = entry.name + "".join(f"-{k}{path_value(v)}" for k, v in shown.items())
    rel = "/".join((task, setting, f"lr{path_value(float(lr))}", f"frac{path_value(float(fraction))}", f"seed{seed}"))
    split = "validation" if config.data.get("validation_fraction", 0.0) > 0 else "dev"
    try:
        validate.check(config)
        methods.check_config(config)
    except errors.FftError as e:
        raise GridError(f"{where}: run {rel}: {errors.one_line(e)}") from None
    return Point(task, entry.method, setting, {k: fields[f"{entry.method}.{k}"] for k in options},
                 float(lr), float(fraction), seed, arg, fields, split, rel)


def _difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """'num_epochs: 3.0 -> 5.0; ...' for the settings that differ (at most three named)."""
    flat_old = {"config": old.get("config"), **old.get("fields", {})}
    flat_new = {"config": new.get("config"), **new.get("fields", {})}
    keys = list(dict.fromkeys([*flat_old, *flat_new]))
    diffs = [f"{k}: {flat_old.get(k, '(unset)')} -> {flat_new.get(k, '(unset)')}"
             for k in keys if flat_old.get(k, "(unset)") != flat_new.get(k, "(unset)")]
    return "; ".join(diffs[:3]) + (f"; {len(diffs) - 3} more" if len(diffs) > 3 else "")


# ---------------------------------------------------------------------------------------------
# Workdirs and runs.


def check_workdirs(grid: Grid, points: Sequence[Point], grid_dir: pathlib.Path) -> None:
    """GridError for a point whose workdir holds another setting, or files of no sweep."""
    for point in points:
        workdir = grid_dir / point.rel
        if not workdir.is_dir():
            if workdir.exists():
                raise GridError(f"{_display(workdir)}: is a file, not a run's workdir")
            continue
        recorded = workdir / POINT_FILE
        if recorded.is_file():
            try:
                old = json.loads(recorded.read_text()).get("settings")
            except (OSError, ValueError) as e:
                raise GridError(f"{_display(recorded)}: unreadable ({errors.one_line(e)})") from None
            if old != point.settings():
                raise GridError(
                    f"{_display(workdir)}: already holds a different setting "
                    f"({_difference(old or {}, point.settings())})",
                    hint="move that workdir away, or give the grid another name or --root",
                )
        elif any(p.name not in (LOCK_FILE, LOG_FILE) for p in workdir.iterdir()):
            raise GridError(
                f"{_display(workdir)}: holds files but no {POINT_FILE}, so no sweep made it",
                hint="move it away, or give the grid another name or --root",
            )


def is_finished(workdir: pathlib.Path) -> bool:
    return (workdir / FINAL).is_file()


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


@dataclasses.dataclass
class _Running:
    point: Point
    proc: subprocess.Popen
    lock_fd: int
    log: TextIO
    started: float


class Runner:
    """Runs the points of one grid, `jobs` at a time, and reports progress."""

    def __init__(self, grid: Grid, points: Sequence[Point], grid_dir: pathlib.Path, *, jobs: int,
                 out: TextIO, on_finish=None, clock=time.monotonic, poll_seconds: float = 0.2):
        self.grid, self.points, self.grid_dir, self.jobs = grid, list(points), grid_dir, jobs
        self.out, self.on_finish, self.clock, self.poll_seconds = out, on_finish, clock, poll_seconds
        self.done = self.failed = self.elsewhere = 0
        self.durations: list[float] = []
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
        if self.durations:
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
        self.say(
            f"sweep {self.grid.name}: {len(self.points)} runs, {before} finished before, "
            f"{len(self.pending)} to run, {self.jobs} at a time; workdirs in {_display(self.grid_dir)}"
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
        fd = os.open(workdir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self.elsewhere += 1
            self.say(f"skip  {point.rel}: running elsewhere (another process holds its lock)")
            return
        log = None
        try:
            if is_finished(workdir):  # Finished by another sweep since this one started.
                os.close(fd)
                self.done += 1
                return
            try:
                check_workdirs(self.grid, [point], self.grid_dir)  # Another sweep may have begun it.
            except GridError as e:
                os.close(fd)
                self.failed += 1
                self.failures.append((point, errors.one_line(e)))
                self.say(f"FAILED {point.rel}: {errors.one_line(e)} | {self.status()}")
                return
            record = {
                "grid": self.grid.name, "grid_file": _display(self.grid.file),
                "point": {"task": point.task, "method": point.method, "setting": point.setting,
                          "options": point.options, "lr": point.lr, "fraction": point.fraction,
                          "seed": point.seed},
                "settings": point.settings(), "command": point.display(workdir),
            }
            tmp = workdir / (POINT_FILE + ".tmp")
            tmp.write_text(json.dumps(record, indent=1) + "\n")
            tmp.replace(workdir / POINT_FILE)
            log = open(workdir / LOG_FILE, "a")  # noqa: SIM115  (closed when the run ends)
            log.write(f"# fft sweep {self.grid.name} {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                      f"{point.display(workdir)}\n")
            log.flush()
            # The run inherits the lock: it stays held while the run lives, even past this process.
            # Its own session: a Ctrl-C reaches it once, from `_stop_all`, not from the terminal.
            proc = subprocess.Popen(point.command(workdir.absolute()), cwd=REPO, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, pass_fds=(fd,),
                                    start_new_session=True)
        except BaseException:
            os.close(fd)
            if log is not None:
                log.close()
            raise
        self.running.append(_Running(point, proc, fd, log, self.clock()))
        self.say(f"start {point.rel} | {self.status()}")

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
            score = _score_text(r.point, workdir)
            self.say(f"done  {r.point.rel} in {progress_lib.format_seconds(seconds)}{score} | {self.status()}")
        else:
            self.failed += 1
            reason = last_error(workdir / LOG_FILE)
            self.failures.append((r.point, reason))
            self.say(f"FAILED {r.point.rel} (exit {r.proc.returncode}): {reason} "
                     f"(log: {_display(workdir / LOG_FILE)}) | {self.status()}")
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


def _score_text(point: Point, workdir: pathlib.Path) -> str:
    try:
        final = json.loads((workdir / FINAL).read_text())
        name, value = _main_metric(point.task, final["eval"], point.split)
        return f", {point.split} {name} {100 * value:.2f}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""


# ---------------------------------------------------------------------------------------------
# Tables.


def _main_metric(task: str, evals: Mapping[str, Mapping[str, float]], split: str) -> tuple[str, float]:
    from fft.data import glue

    name = glue.get_task(task).primary_metric
    return name, evals[split][name]


def _mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _repo_path(path: pathlib.Path) -> str:
    path = path.absolute()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def table_rows(points: Sequence[Point], grid_dir: pathlib.Path) -> list[dict[str, Any]]:
    """One row per cell (task, setting, lr, fraction) in grid order, seeds pooled."""
    from fft.data import glue

    cells: dict[tuple, list[Point]] = {}
    for point in points:
        cells.setdefault(point.cell, []).append(point)
    order = {t: i for i, t in enumerate(dict.fromkeys(p.task for p in points))}
    rows = []
    for (task, setting, lr, fraction), group in sorted(cells.items(), key=lambda kv: order[kv[0][0]]):
        first = group[0]
        finished = []
        for point in group:
            path = grid_dir / point.rel / FINAL
            if path.is_file():
                try:
                    finished.append((point, json.loads(path.read_text())))
                except (OSError, ValueError):
                    continue
        metric = glue.get_task(task).primary_metric
        scores = [100 * f["eval"][first.split][metric] for _, f in finished
                  if f.get("eval", {}).get(first.split, {}).get(metric) is not None]
        mean, sd = _mean_sd(scores)
        evals: dict[str, dict[str, Any]] = {}
        for split in dict.fromkeys(s for _, f in finished for s in f.get("eval", {})):
            names = dict.fromkeys(k for _, f in finished for k in f["eval"].get(split, {}))
            for name in names:
                values = [f["eval"].get(split, {}).get(name) for _, f in finished]
                m, s = _mean_sd(values)
                evals.setdefault(split, {})[name] = {"mean": m, "sd": s, "values": values}
        seconds = [f.get("train_seconds") for _, f in finished]
        rows.append({
            "task": task, "setting": setting, "method": first.method, "options": first.options,
            "lr": lr, "fraction": fraction, "split": first.split, "metric": metric,
            "mean": None if mean is None else round(mean, 2), "sd": None if sd is None else round(sd, 2),
            "n": len(finished), "planned": len(group),
            "seeds": [p.seed for p, _ in finished],
            "trainable_params": finished[0][1].get("trainable_params") if finished else None,
            "stored_bytes": finished[0][1].get("stored_bytes") if finished else None,
            "train_seconds": None if _mean_sd(seconds)[0] is None else round(_mean_sd(seconds)[0], 1),
            "eval": evals,
            "workdirs": [_repo_path(grid_dir / p.rel) for p, _ in finished],
        })
    return rows


def _number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def score_text(row: Mapping[str, Any]) -> str:
    """'57.04 ± 1.23' (n >= 2), '57.04' (n = 1), 'missing' (no finished run)."""
    if row["mean"] is None:
        return "missing"
    return f"{row['mean']:.2f}" + ("" if row["sd"] is None else f" ± {row['sd']:.2f}")


def _runs_text(row: Mapping[str, Any], grid_dir: pathlib.Path) -> str:
    """The cell's finished workdirs, short: 'rte/full/lr1e-3/frac1/seed0, seed1'."""
    names = [pathlib.Path(w) for w in row["workdirs"]]
    if not names:
        return "—"
    base = (REPO / names[0]).parent if not names[0].is_absolute() else names[0].parent
    try:
        head = str(base.relative_to(grid_dir.absolute()))
    except ValueError:
        head = str(base)
    return f"{head}/" + ", ".join(n.name for n in names)


def markdown(grid: Grid, rows: Sequence[Mapping[str, Any]], grid_dir: pathlib.Path) -> str:
    lines = [
        f"# Sweep `{grid.name}`",
        "",
        (f"Grid `{_repo_path(grid.file)}`, runs in `{_repo_path(grid_dir)}`. Score: the task's main "
         "metric in %, mean ± sd over the finished seeds; n = finished / planned seeds; 'missing' = "
         "no finished run. Train s: mean training time per run (without evaluation). Rebuild: "
         f"`python -m fft.sweep {_repo_path(grid.file)} --only-table`."),
    ]
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        metric, split = mine[0]["metric"], mine[0]["split"]
        lines += [
            "", f"## {task}: {metric} on {split} (%)", "",
            "| method | lr | fraction | score | n | trainable params | stored bytes | train s | runs |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in mine:
            lines.append(
                f"| {r['setting']} | {path_value(r['lr'])} | {path_value(r['fraction'])} | {score_text(r)} | "
                f"{r['n']}/{r['planned']} | {_number(r['trainable_params'])} | {_number(r['stored_bytes'])} | "
                f"{_seconds(r['train_seconds'])} | {_runs_text(r, grid_dir)} |"
            )
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ("task", "setting", "method", "options", "lr", "fraction", "split", "metric", "mean",
               "sd", "n", "planned", "trainable_params", "stored_bytes", "train_seconds", "workdirs")


def write_tables(grid: Grid, points: Sequence[Point], grid_dir: pathlib.Path,
                 results_dir: pathlib.Path | None) -> list[pathlib.Path]:
    """Writes table.{csv,json,md} in the grid's folder and <results_dir>/<name>.{csv,json,md}."""
    rows = table_rows(points, grid_dir)
    doc = {"grid": grid.name, "grid_file": _repo_path(grid.file), "runs": _repo_path(grid_dir),
           "score": "main metric of the task in % (mean, sd over finished seeds); eval: fractions",
           "rows": rows}
    texts = {"json": json.dumps(doc, indent=1) + "\n", "md": markdown(grid, rows, grid_dir)}
    written = []
    targets = [(grid_dir, "table")] + ([(results_dir, grid.name)] if results_dir is not None else [])
    for folder, stem in targets:
        folder.mkdir(parents=True, exist_ok=True)
        for ext, text in texts.items():
            (folder / f"{stem}.{ext}").write_text(text)
        with open(folder / f"{stem}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({**r, "options": json.dumps(r["options"], sort_keys=True),
                            "workdirs": ";".join(r["workdirs"])})
        written += [folder / f"{stem}.{ext}" for ext in ("csv", "json", "md")]
    return written


# ---------------------------------------------------------------------------------------------
# Command line.


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="fft sweep", description="Runs a grid of fft train runs (see fft/sweep.py for the grid format).",
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
    args = parser.parse_args(list(argv))
    if args.jobs < 1:
        raise GridError(f"--jobs={args.jobs}: must be at least 1")
    return args


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
        finished = sum(is_finished(grid_dir / p.rel) for p in points)
        print(f"sweep {grid.name}: {len(points)} runs, {finished} finished, {len(points) - finished} "
              f"to run (dry run: nothing starts)", file=out)
        for point in points:
            workdir = grid_dir / point.rel
            state = "finished" if is_finished(workdir) else "run"
            print(f"  {state:8s} {point.display(workdir)}", file=out)
        return 0
    if args.only_table:
        written = write_tables(grid, points, grid_dir, results_dir)
        print(f"sweep {grid.name}: tables {', '.join(_display(p) for p in written if p.suffix == '.md')}", file=out)
        return 0
    runner = Runner(grid, points, grid_dir, jobs=args.jobs, out=out,
                    on_finish=lambda: write_tables(grid, points, grid_dir, results_dir))
    runner.run()
    written = write_tables(grid, points, grid_dir, results_dir)
    runner.say(f"sweep {grid.name} ended: {runner.status()}; tables "
               f"{', '.join(_display(p) for p in written if p.suffix == '.md')}")
    for point, reason in runner.failures:
        runner.say(f"failed: {point.rel}: {reason}")
    return 1 if runner.failures else 0


if __name__ == "__main__":
    from fft import cli

    sys.exit(cli.run(["sweep", *sys.argv[1:]]))
