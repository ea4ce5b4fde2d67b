"""Numbers and verdicts as the claims report writes them (fft.report.markdown and its tables)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def num(x: float | None, digits: int = 2, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "∞"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def sig(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return num(x)
    return f"{x:.{digits}g}"


def score_text(s: Mapping[str, Any], digits: int = 2, fmt: Callable | None = None) -> str:
    if not s["n"]:
        return "missing"
    f = fmt or (lambda v: num(v, digits))
    return f(s["mean"]) + ("" if s["sd"] is None else f" ± {f(s['sd'])}") + f" (n={s['n']})"


def diff_text(d: Mapping[str, Any] | None) -> str:
    if d is None or not d["n"]:
        return "—"
    if d["low"] is None:
        return f"{num(d['mean'], sign=True)} (no interval)"
    return f"{num(d['mean'], sign=True)} [{num(d['low'], sign=True)}, {num(d['high'], sign=True)}]"


def verdict_text(cell: Mapping[str, Any]) -> str:
    v = f"**{cell['verdict']}**"
    return v + (f" ({cell['note']})" if cell.get("note") else "")


def key_columns(cells: Sequence[Mapping[str, Any]]) -> list[tuple[str, Callable[[Mapping[str, Any]], str]]]:
    """The columns that name a cell beyond its task: its train fraction and/or its time budget."""
    columns = []
    if any(c.get("fraction") is not None for c in cells):
        columns.append(("fraction", lambda c: "—" if c.get("fraction") is None else f"{c['fraction']:g}"))
    if any(c.get("budget") for c in cells):
        columns.append(("budget (epochs)", lambda c: c.get("epochs_text") or "—"))
    return columns


def params_text(value: int | None) -> str:
    return "missing" if value is None else f"{value:,}"


def seconds_text(t: Mapping[str, Any] | None) -> str:
    """Seconds to a target: 'mean ± sd s (reached k/n)'; the seeds without a curve named."""
    if t is None:
        return "missing"
    if not t["n"]:
        return "no curve" + (f" (seeds {', '.join(map(str, t['no_curve']))})" if t["no_curve"] else "")
    text = "not reached" if t["mean_s"] is None else (
        f"{t['mean_s']:.0f}" + ("" if t["sd_s"] is None else f" ± {t['sd_s']:.0f}") + " s")
    text += f" (reached {t['reached']}/{t['n']})"
    return text + (f"; no curve: seeds {', '.join(map(str, t['no_curve']))}" if t["no_curve"] else "")


def per_seed_text(t: Mapping[str, Any] | None) -> str:
    if not t or not t["seconds"]:
        return "—"
    return ", ".join(f"{s}: " + ("not reached" if v is None else f"{v:.0f}")
                     for s, v in sorted(t["seconds"].items(), key=lambda kv: int(kv[0])))
