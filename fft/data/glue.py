"""GLUE tasks: one `TaskSpec` per task and readers for the official TSV files (or TFDS).

The TSV reader follows the layout written by GLUE's `download_glue_data.py`:
`<data_dir>/<TASK>/<split>.tsv`, tab separated, no quoting (sentences contain quotes), one
row per line. Columns are found by header name; CoLA's train/dev files have no header, so
its spec names the four columns. Every problem in a file is a `DataError` naming the file and
the 1-based line number.

    examples = glue.load_examples("rte", "dev", data_dir="data/glue")
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import types
from collections.abc import Mapping
from typing import Any, NamedTuple

from absl import logging

from fft import console, errors


class DataError(errors.FftError, ValueError):
    """A GLUE file is missing or does not have the official layout."""


class MissingDataError(DataError, FileNotFoundError):
    """A GLUE file does not exist."""


class Example(NamedTuple):
    """One example: one or two texts and a class id (int), a score (float) or None (test)."""

    text_a: str
    text_b: str | None
    label: int | float | None


_SPLITS = (("train", "train", "train"), ("dev", "dev", "validation"), ("test", "test", "test"))
_MNLI_SPLITS = (
    ("train", "train", "train"),
    ("dev", "dev_matched", "validation_matched"),
    ("dev_matched", "dev_matched", "validation_matched"),
    ("dev_mismatched", "dev_mismatched", "validation_mismatched"),
    ("test", "test_matched", "test_matched"),
    ("test_matched", "test_matched", "test_matched"),
    ("test_mismatched", "test_mismatched", "test_mismatched"),
)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What fft needs to know about one GLUE task.

    Attributes:
      name: canonical lower-case name, also the TFDS config (`glue/<name>`).
      file_dir: folder under the GLUE data dir ('CoLA', 'SST-2', ...).
      text_columns: header names of the one or two text columns.
      label_column: header name of the label column.
      label_values: label strings as written in the TSV, in class-id order; None for regression.
      label_names: readable class names in class-id order (as TFDS); None for regression.
      metrics: official GLUE metrics, names as in `fft.metrics.compute`.
      primary_metric: the key of `fft.metrics.compute` used for model selection.
      eval_splits: splits evaluated during training; MNLI's 'dev' is dev_matched.tsv.
      columns: column names of headerless files (CoLA train/dev); None when files have a header.
      label_range: inclusive range of a regression score.
      tfds_features: TFDS feature names of the text columns.
      splits: (split, TSV file stem, TFDS split) triples.
    """

    name: str
    file_dir: str
    text_columns: tuple[str, ...]
    label_column: str
    label_values: tuple[str, ...] | None
    label_names: tuple[str, ...] | None
    metrics: tuple[str, ...]
    primary_metric: str
    tfds_features: tuple[str, ...]
    eval_splits: tuple[str, ...] = ("dev",)
    columns: tuple[str, ...] | None = None
    label_range: tuple[float, float] | None = None
    splits: tuple[tuple[str, str, str], ...] = _SPLITS

    @property
    def is_regression(self) -> bool:
        return self.label_values is None

    @property
    def num_labels(self) -> int:
        """Number of logits the task head needs (1 for regression)."""
        return 1 if self.label_values is None else len(self.label_values)

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(s for s, _, _ in self.splits)

    def file_name(self, split: str) -> str:
        """The TSV file name of `split`, e.g. 'dev_matched.tsv' for MNLI 'dev'."""
        return self._split(split)[1] + ".tsv"

    def tfds_split(self, split: str) -> str:
        """The TFDS split name of `split`, e.g. 'validation' for 'dev'."""
        return self._split(split)[2]

    def _split(self, split: str) -> tuple[str, str, str]:
        for entry in self.splits:
            if entry[0] == split:
                return entry
        raise ValueError(f"Unknown split {split!r} for {self.name}; valid: {self.split_names}")


def _task(name: str, file_dir: str, texts: tuple[str, ...], label: str, **kw) -> TaskSpec:
    metrics = kw.pop("metrics", ("accuracy",))
    primary = "combined" if len(metrics) > 1 else metrics[0]
    return TaskSpec(name, file_dir, texts, label, metrics=metrics, primary_metric=primary, **kw)


_BIN = ("0", "1")
_NLI2 = ("entailment", "not_entailment")
_NLI3 = ("entailment", "neutral", "contradiction")
_S12 = ("sentence1", "sentence2")

# fmt: off
TASKS: Mapping[str, TaskSpec] = types.MappingProxyType({
    "cola": _task("cola", "CoLA", ("sentence",), "label", label_values=_BIN,
                  label_names=("unacceptable", "acceptable"), tfds_features=("sentence",),
                  metrics=("matthews_corrcoef",),
                  columns=("source", "label", "original_label", "sentence")),
    "sst2": _task("sst2", "SST-2", ("sentence",), "label", label_values=_BIN,
                  label_names=("negative", "positive"), tfds_features=("sentence",)),
    "mrpc": _task("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", label_values=_BIN,
                  label_names=("not_equivalent", "equivalent"), tfds_features=_S12,
                  metrics=("accuracy", "f1")),
    "stsb": _task("stsb", "STS-B", _S12, "score", label_values=None, label_names=None,
                  tfds_features=_S12, metrics=("pearson", "spearman"), label_range=(0.0, 5.0)),
    "qqp": _task("qqp", "QQP", ("question1", "question2"), "is_duplicate", label_values=_BIN,
                 label_names=("not_duplicate", "duplicate"),
                 tfds_features=("question1", "question2"), metrics=("accuracy", "f1")),
    "mnli": _task("mnli", "MNLI", _S12, "gold_label", label_values=_NLI3, label_names=_NLI3,
                  tfds_features=("premise", "hypothesis"), eval_splits=("dev", "dev_mismatched"),
                  splits=_MNLI_SPLITS),
    "qnli": _task("qnli", "QNLI", ("question", "sentence"), "label", label_values=_NLI2,
                  label_names=_NLI2, tfds_features=("question", "sentence")),
    "rte": _task("rte", "RTE", _S12, "label", label_values=_NLI2, label_names=_NLI2,
                 tfds_features=_S12),
    "wnli": _task("wnli", "WNLI", _S12, "label", label_values=_BIN,
                  label_names=("not_entailment", "entailment"), tfds_features=_S12),
})
# fmt: on


def get_task(name: str | TaskSpec) -> TaskSpec:
    """Looks a task up by name, ignoring case, '-' and '_' ('SST-2', 'sts_b', 'CoLA' work)."""
    if isinstance(name, TaskSpec):
        return name
    key = str(name).lower().replace("-", "").replace("_", "")
    if key not in TASKS:
        raise DataError(f"Unknown GLUE task {name!r}; valid: {', '.join(TASKS)}")
    return TASKS[key]


class _RowError(Exception):
    """A problem with one row; `read_tsv` adds the file and line."""


def _column_indices(path: str, spec: TaskSpec, header: list[str], labeled: bool) -> list[int]:
    """Indices of the text columns, then the label column when `labeled`."""
    wanted = spec.text_columns + ((spec.label_column,) if labeled else ())
    names = [h.strip() for h in header]
    missing = [w for w in wanted if w not in names]
    if missing:
        raise DataError(
            f"{path}:1: missing header column {missing[0]!r} (header: {names}); expected the "
            f"official GLUE {spec.file_dir} layout with columns {list(wanted)}"
        )
    return [names.index(w) for w in wanted]


def _parse_label(spec: TaskSpec, raw: str) -> int | float:
    raw = raw.strip()
    if spec.label_values is not None:
        try:
            return spec.label_values.index(raw)
        except ValueError:
            valid = ", ".join(repr(v) for v in spec.label_values)
            raise _RowError(f"unknown label {raw!r} (valid: {valid})") from None
    try:
        score = float(raw)
    except ValueError:
        raise _RowError(f"score {raw!r} is not a number") from None
    low, high = spec.label_range or (-math.inf, math.inf)
    if not low <= score <= high:  # Also rejects NaN.
        raise _RowError(f"score {raw!r} is outside [{low}, {high}]")
    return score


def _parse_row(spec: TaskSpec, row: list[str], header: list[str], cols: list[int]) -> Example:
    if len(row) != len(header):
        raise _RowError(f"expected {len(header)} tab-separated columns, found {len(row)}")
    texts = [row[i] for i in cols[: len(spec.text_columns)]]
    for i, text in zip(cols, texts):
        if not text.strip():
            raise _RowError(f"empty sentence in column {header[i].strip()!r}")
    label = _parse_label(spec, row[cols[-1]]) if len(cols) > len(texts) else None
    return Example(texts[0], texts[1] if len(texts) > 1 else None, label)


def _first_bad_line(path: str) -> int:
    """1-based number of the first line that is not UTF-8 (decoding reads ahead in blocks)."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1


def read_tsv(
    path: str | os.PathLike,
    task: str | TaskSpec,
    *,
    labeled: bool = True,
    skip_malformed: bool = False,
) -> list[Example]:
    """Reads one GLUE TSV file.

    Args:
      path: the file.
      task: task name or spec.
      labeled: False for test files (label None; CoLA's test file has a header).
      skip_malformed: skip bad rows (logging how many) instead of raising.

    Returns:
      The examples in file order.

    Raises:
      MissingDataError: the file does not exist.
      DataError: a missing header column, or a bad row: wrong column count, empty sentence,
        unknown label, non-numeric or out-of-range score (unless `skip_malformed`).
    """
    spec, path = get_task(task), os.fspath(path)
    if not os.path.isfile(path):
        raise MissingDataError(f"{path}: no such file")
    examples, skipped = [], []
    # utf-8-sig drops a byte-order mark (MRPC's source files start with one).
    with open(path, encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            if spec.columns is not None and labeled:
                header = list(spec.columns)
            else:
                header = next(reader, None)
                if not header:
                    raise DataError(f"{path}:1: empty file or blank first line, expected a header")
            cols = _column_indices(path, spec, header, labeled)
            for row in reader:
                if not row:  # A blank line carries no example.
                    continue
                try:
                    examples.append(_parse_row(spec, row, header, cols))
                except _RowError as e:
                    error = DataError(f"{path}:{reader.line_num}: {e}")
                    if not skip_malformed:
                        raise error from None
                    skipped.append(str(error))
        except UnicodeDecodeError as e:
            raise DataError(
                f"{path}:{_first_bad_line(path)}: not UTF-8 text ({e.reason})"
            ) from None
    if not examples:
        more = f" ({len(skipped)} malformed rows skipped; first: {skipped[0]})" if skipped else ""
        raise DataError(f"{path}: no examples, only a header{more}")
    if skipped:
        console.warn(f"{path}: skipped {len(skipped)} malformed rows; first: {skipped[0]}")
    return examples


def load_examples(
    task: str | TaskSpec,
    split: str,
    *,
    data_dir: str | os.PathLike | None,
    source: str = "tsv",
    skip_malformed: bool = False,
) -> list[Example]:
    """Loads a split of a GLUE task.

    Args:
      task: task name or spec.
      split: 'train', 'dev', 'test', or for MNLI also 'dev_matched', 'dev_mismatched',
        'test_matched', 'test_mismatched' ('dev' is dev_matched). Test splits are unlabeled.
      data_dir: for 'tsv', the GLUE root holding `<TASK>/<split>.tsv`; for 'tfds', the TFDS
        data dir (None: TFDS's default).
      source: 'tsv' or 'tfds' (needs the `tfds` extra: tensorflow-datasets and TensorFlow).
      skip_malformed: see `read_tsv`.

    Returns:
      The examples in file order.
    """
    spec = get_task(task)
    labeled = not split.startswith("test")
    if source == "tfds":
        return _load_tfds(spec, split, data_dir)
    if source != "tsv":
        raise DataError(f"config.data.source={source!r}: valid: 'tsv', 'tfds'")
    if data_dir is None:
        raise DataError("config.data.dir is empty: source='tsv' needs the folder holding <TASK>/<split>.tsv")
    path = os.path.join(os.fspath(data_dir), spec.file_dir, spec.file_name(split))
    if not os.path.isfile(path):
        raise MissingDataError(
            f"{path}: no such file. GLUE TSVs are expected at <data_dir>/<TASK>/<split>.tsv as "
            f"written by download_glue_data.py; here <data_dir>={os.fspath(data_dir)!r}, "
            f"<TASK>={spec.file_dir!r}, file {spec.file_name(split)!r}"
        )
    return read_tsv(path, spec, labeled=labeled, skip_malformed=skip_malformed)


def _load_tfds(spec: TaskSpec, split: str, data_dir: str | os.PathLike | None) -> list[Example]:
    """Reads `glue/<name>` through tensorflow_datasets (imported here: it is an optional extra)."""
    tfds_split = spec.tfds_split(split)
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise ImportError(
            "source='tfds' needs tensorflow-datasets and TensorFlow; install the `tfds` extra "
            "(pip install 'fft[tfds]') or use source='tsv'"
        ) from e
    try:  # Registers the glue builder in versions that load builders lazily.
        import tensorflow_datasets.text.glue
    except ImportError:
        pass
    builder = tfds.builder(f"glue/{spec.name}", data_dir=data_dir)
    builder.download_and_prepare()
    dataset = builder.as_dataset(split=tfds_split, shuffle_files=False)
    return [tfds_example(spec, record) for record in tfds.as_numpy(dataset)]


def tfds_example(spec: TaskSpec, record: Mapping[str, Any]) -> Example:
    """Converts one TFDS glue record (texts as bytes, label -1 on test) to an `Example`."""
    texts = [record[f] for f in spec.tfds_features]
    texts = [t.decode("utf-8") if isinstance(t, bytes) else str(t) for t in texts]
    label = record["label"]
    if label == -1:  # TFDS marks unlabeled test examples with -1.
        label = None
    elif spec.is_regression:
        label = float(label)
    elif 0 <= int(label) < spec.num_labels:
        label = int(label)
    else:
        raise DataError(f"glue/{spec.name}: label {label} outside 0..{spec.num_labels - 1}")
    return Example(texts[0], texts[1] if len(texts) > 1 else None, label)
