"""Grid files: finding, loading, parsing and checking them (the format: fft/sweep/__init__.py)."""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import pathlib
import re
import sys
from collections.abc import Mapping
from typing import Any

from fft import errors

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
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


# ---------------------------------------------------------------------------------------------
# Paths as shown.


def display(path: pathlib.Path) -> str:
    """`path` relative to the working directory (or the repository) when inside it."""
    path = pathlib.Path(path).absolute()
    for base in (pathlib.Path.cwd(), REPO):
        if path.is_relative_to(base):
            return str(path.relative_to(base))
    return str(path)


def repo_path(path: pathlib.Path) -> str:
    """`path` relative to the repository when inside it (as in commands and tables)."""
    path = path.absolute()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


# ---------------------------------------------------------------------------------------------
# Finding and loading.


def find_grid(spec: str) -> pathlib.Path:
    """The grid file `spec` names: a path, or a bare name of a file in configs/grids/."""
    for path in (pathlib.Path(spec), REPO / spec, GRIDS_DIR / f"{spec}.py"):
        if path.is_file():
            return path
    raise GridError(f"grid {spec}: no such file", hint=f"grids here: {', '.join(known_grids()) or 'none'}")


def known_grids() -> list[str]:
    return sorted(p.stem for p in GRIDS_DIR.glob("*.py") if not p.name.startswith("_"))


def load_grid(spec: str) -> Grid:
    """Reads and checks a grid file's fields (tasks, methods and options exist)."""
    path = find_grid(spec)
    where = display(path)
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


# ---------------------------------------------------------------------------------------------
# Parsing and checking fields.


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


def _did_you_mean(key: Any, valid: list[str]) -> str:
    close = difflib.get_close_matches(str(key), valid, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def parse_grid(raw: dict[str, Any], path: pathlib.Path) -> Grid:
    from fft import methods

    where = display(path)
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
    entries = tuple(_parse_entry(item, f"{where}: methods[{i}]", tasks, methods)
                    for i, item in enumerate(_listed(raw.get("methods") or ())))
    lrs = _parse_lrs(raw.get("lrs") or (), entries, where)
    overrides = _flatten(raw.get("overrides"), f"{where}: overrides")
    task_overrides = _parse_task_overrides(raw.get("task_overrides") or {}, where)
    order = tuple(_listed(raw.get("order") or AXES))
    if sorted(order) != sorted(AXES):
        raise GridError(f"{where}: order {list(order)}: name each of {', '.join(AXES)} once")
    grid = Grid(
        name=name, file=path, base=base, tasks=tasks, entries=entries, lrs=lrs,
        seeds=_numbers(raw.get("seeds", [0]), f"{where}: seeds", int),
        fractions=_numbers(raw.get("fractions", [1.0]), f"{where}: fractions", float),
        overrides=overrides, task_overrides=task_overrides, order=order,
    )
    for scope, fields in [("overrides", overrides),
                          *((f"task_overrides[{t!r}]", f) for t, f in task_overrides.items()),
                          *((f"methods[{i}] ({e.name}) overrides", e.overrides) for i, e in enumerate(entries))]:
        _check_not_axes(fields, f"{where}: {scope}")
    return grid


def _parse_lrs(lrs: Any, entries: tuple[Entry, ...],
               where: str) -> tuple[float, ...] | dict[str, tuple[float, ...]]:
    """The grid's `lrs`: one list, or a dict keyed by entry label or method name."""
    if not isinstance(lrs, Mapping):
        return _numbers(lrs, f"{where}: lrs", float)
    keys = {e.name for e in entries} | {e.method for e in entries}
    for key in lrs:
        if key not in keys:
            raise GridError(f"{where}: lrs[{key!r}]: no method entry has that label or method"
                            f"{_did_you_mean(key, sorted(keys))}")
    return {k: _numbers(v, f"{where}: lrs[{k!r}]", float) for k, v in lrs.items()}


def _parse_task_overrides(raw: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    return {_task_name(task, f"{where}: task_overrides"): _flatten(fields, f"{where}: task_overrides[{task!r}]")
            for task, fields in raw.items()}


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
    options = _parse_options(item.get("options") or {}, method, methods.default_options(method), where)
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


def _parse_options(raw: Mapping[str, Any], method: str, defaults: Mapping[str, Any],
                   where: str) -> dict[str, tuple[Any, ...]]:
    options = {}
    for key, values in raw.items():
        if key not in defaults:
            raise GridError(
                f"{where}: method {method} has no option {key!r}{_did_you_mean(key, sorted(defaults))}; "
                f"its options: {', '.join(sorted(defaults)) or 'none'}"
            )
        options[key] = _listed(values)
    return options


def _check_not_axes(fields: Mapping[str, Any], where: str) -> None:
    from fft import methods

    for key in fields:
        if key in AXIS_FIELDS:
            raise GridError(f"{where}: {key} is an axis of the grid; list its values in `{AXIS_FIELDS[key]}`")
        block = key.split(".", 1)[0]
        if block in methods.REGISTRY:
            raise GridError(f"{where}: {key} is a method option; give it in the method entry's `options`")
