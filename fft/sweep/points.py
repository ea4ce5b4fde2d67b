"""A grid's points (one run each): expansion, configs checked, path naming, and workdir checks."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.util
import itertools
import json
import pathlib
import re
import shlex
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from fft import errors
from fft.sweep.grid import (
    CONFIG_FILE,
    FINAL,
    LOCK_FILE,
    LOG_FILE,
    POINT_FILE,
    REPO,
    Entry,
    Grid,
    GridError,
    display,
    repo_path,
)


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
        return "python -m fft.main " + shlex.join(self.argv(repo_path(workdir)))


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


# ---------------------------------------------------------------------------------------------
# Configs.

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


# ---------------------------------------------------------------------------------------------
# Expansion.


def expand(grid: Grid) -> list[Point]:
    """Every point of the grid, in run order (`grid.order`), each config checked
    (fields exist and take the values, `fft.validate` ranges, method options)."""
    where = display(grid.file)
    keyed = sorted(_keyed_points(grid, where), key=lambda k: k[0])  # Stable: ties keep their order.
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


def _keyed_points(grid: Grid, where: str) -> Iterator[tuple[tuple, Point]]:
    """(its indices along `grid.order`, point) for every point, duplicates included."""
    for ei, entry in enumerate(grid.entries):
        for ci, combo in enumerate(itertools.product(*entry.options.values())):
            options = dict(zip(entry.options, combo))
            for task in grid.tasks if entry.tasks is None else entry.tasks:
                arg = ",".join(filter(None, (f"task={task}", f"method={entry.method}", grid.base)))
                base = base_config(arg, where)
                for li, lr in enumerate(_entry_lrs(grid, entry, base)):
                    for fi, fraction in enumerate(grid.fractions if entry.fractions is None else entry.fractions):
                        for si, seed in enumerate(grid.seeds):
                            point = _point(grid, ei, entry, options, task, arg, base, lr, fraction, seed)
                            index = {"seed": si, "task": grid.tasks.index(task), "method": (ei, ci),
                                     "lr": li, "fraction": fi}
                            yield tuple(index[a] for a in grid.order), point


def _entry_lrs(grid: Grid, entry: Entry, base) -> tuple[float, ...]:
    """The entry's own lrs, else the grid's (for its label or method), else the config's lr."""
    if entry.lrs is not None:
        return entry.lrs
    lrs = grid.lrs.get(entry.name, grid.lrs.get(entry.method)) if isinstance(grid.lrs, dict) else grid.lrs
    return lrs or (base.optim.lr,)


def _point(grid: Grid, ei: int, entry: Entry, options: dict[str, Any], task: str, arg: str, base,
           lr: float, fraction: float, seed: int) -> Point:
    from fft import methods, validate

    where = display(grid.file)
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
# Workdirs.


def check_workdirs(grid: Grid, points: Sequence[Point], grid_dir: pathlib.Path) -> None:
    """GridError for a point whose workdir holds another setting, or files of no sweep."""
    for point in points:
        workdir = grid_dir / point.rel
        if not workdir.is_dir():
            if workdir.exists():
                raise GridError(f"{display(workdir)}: is a file, not a run's workdir")
            continue
        recorded = workdir / POINT_FILE
        if recorded.is_file():
            try:
                old = json.loads(recorded.read_text()).get("settings")
            except (OSError, ValueError) as e:
                raise GridError(f"{display(recorded)}: unreadable ({errors.one_line(e)})") from None
            if old != point.settings():
                raise GridError(
                    f"{display(workdir)}: already holds a different setting "
                    f"({_difference(old or {}, point.settings())})",
                    hint="move that workdir away, or give the grid another name or --root",
                )
        elif any(p.name not in (LOCK_FILE, LOG_FILE) for p in workdir.iterdir()):
            raise GridError(
                f"{display(workdir)}: holds files but no {POINT_FILE}, so no sweep made it",
                hint="move it away, or give the grid another name or --root",
            )


def is_finished(workdir: pathlib.Path) -> bool:
    return (workdir / FINAL).is_file()
