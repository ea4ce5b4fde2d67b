"""One sweep runner: a grid of `fft train` runs, resumable, N at a time, and its results tables.

  python -m fft.sweep GRID [--jobs N] [--root DIR] [--results DIR] [--dry-run | --only-table | --cost]
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
A cell with no finished run is shown as missing, never filled. --only-table rebuilds the tables;
--cost prints the wall time of the finished runs and an estimate for the rest (fft/sweep/cost.py).

The package: grid.py (grid files: finding, loading, checking), points.py (expansion into points,
path naming, workdir checks), runner.py (locks, runs, --jobs, progress), tables.py (tables),
cli.py (arguments and `main`). Everything public is re-exported here: `from fft import sweep`.
"""

from fft.sweep.cli import main, parse_args
from fft.sweep.grid import (
    AXES,
    AXIS_FIELDS,
    CONFIG_FILE,
    DEFAULT_RESULTS,
    DEFAULT_ROOT,
    ENTRY_FIELDS,
    FINAL,
    GRID_FIELDS,
    GRIDS_DIR,
    LOCK_FILE,
    LOG_FILE,
    POINT_FILE,
    REPO,
    Entry,
    Grid,
    GridError,
    find_grid,
    known_grids,
    load_grid,
    parse_grid,
)
from fft.sweep.points import (
    Point,
    base_config,
    check_workdirs,
    expand,
    flag_value,
    is_finished,
    path_value,
)
from fft.sweep.runner import Runner, last_error
from fft.sweep.tables import (
    CSV_COLUMNS,
    main_metric,
    markdown,
    score_text,
    table_rows,
    write_tables,
)

__all__ = [
    "AXES", "AXIS_FIELDS", "CONFIG_FILE", "CSV_COLUMNS", "DEFAULT_RESULTS", "DEFAULT_ROOT", "ENTRY_FIELDS",
    "FINAL", "GRIDS_DIR", "GRID_FIELDS", "LOCK_FILE", "LOG_FILE", "POINT_FILE", "REPO", "Entry", "Grid",
    "GridError", "Point", "Runner", "base_config", "check_workdirs", "expand", "find_grid", "flag_value",
    "is_finished", "known_grids", "last_error", "load_grid", "main", "main_metric", "markdown", "parse_args",
    "parse_grid", "path_value", "score_text", "table_rows", "write_tables",
]
