"""The numbers behind the search's plots, as pure functions of plain lists and dicts.

``running_best`` (best so far), ``group_stats`` (the metric by group of trials) and
``parallel_axes`` (where each trial sits on each parallel-coordinates axis). The figures in
``search.plots.figures`` draw exactly these, and the description in ``search.tracking`` quotes
them. No imports beyond the standard library.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

NA = "n/a"

# Group panels: title -> the config keys whose values name a group.
GROUPS: dict[str, tuple[str, ...]] = {
    "activation / initializer": ("activation", "initializer"),
    "batch norm": ("batch_norm",),
    "optimizer": ("optimizer",),
}


def is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def running_best(values: Sequence[float | None], mode: str = "max") -> list[float | None]:
    """The best value up to each position (``None`` until the first finite value)."""
    check_mode(mode)
    out: list[float | None] = []
    best: float | None = None
    for value in values:
        if is_finite(value) and (best is None or _better(float(value), best, mode)):
            best = float(value)
        out.append(best)
    return out


@dataclass
class GroupStat:
    """The trials of one group: their metric values (finite ones), mean, and failures."""

    label: str
    values: list[float]
    failed: int = 0

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": self.mean, "n": len(self.values)}


def group_label(config: Mapping[str, Any], keys: Sequence[str], defaults: Mapping[str, Any] | None = None) -> str:
    """``relu/he_normal`` for keys (activation, initializer); a missing key reads its default, else n/a."""
    parts = []
    for key in keys:
        value = config.get(key, (defaults or {}).get(key, NA))
        parts.append(NA if value is None and key not in config else as_text(value))
    return "/".join(parts)


def group_stats(
    configs: Sequence[Mapping[str, Any]],
    values: Sequence[float | None],
    keys: Sequence[str],
    *,
    mode: str = "max",
    defaults: Mapping[str, Any] | None = None,
) -> list[GroupStat]:
    """Trials grouped by the values of ``keys``, best mean first (groups of failures only last)."""
    check_mode(mode)
    check_lengths(configs, values)
    groups: dict[str, GroupStat] = {}
    for config, value in zip(configs, values, strict=True):
        stat = groups.setdefault(group_label(config, keys, defaults), GroupStat(group_label(config, keys, defaults), []))
        if is_finite(value):
            stat.values.append(float(value))
        else:
            stat.failed += 1
    sign = -1 if mode == "max" else 1
    return sorted(groups.values(), key=lambda g: (g.mean is None, sign * (g.mean or 0.0), g.label))


@dataclass
class Axis:
    """One axis of the parallel-coordinates plot: where each value sits, in [0, 1] (n/a below)."""

    key: str
    kind: str  # numeric | categorical
    labels: list[str] = field(default_factory=list)  # categorical: in axis order
    low: float | None = None  # numeric: the range drawn
    high: float | None = None
    log: bool = False
    has_na: bool = False

    def position(self, value: Any) -> float:
        if value is None or value == NA:
            return NA_POSITION
        if self.kind == "categorical":
            i = self.labels.index(as_text(value))
            return 0.5 if len(self.labels) == 1 else i / (len(self.labels) - 1)
        assert self.low is not None and self.high is not None
        lo, hi, v = self.low, self.high, float(value)
        if self.log:
            lo, hi, v = math.log10(lo), math.log10(hi), math.log10(v)
        return 0.5 if hi == lo else (v - lo) / (hi - lo)

    def ticks(self) -> list[tuple[float, str]]:
        """(position, label) of the tick labels drawn on this axis."""
        if self.kind == "categorical":
            out = [(self.position(label), label) for label in self.labels]
        else:
            assert self.low is not None and self.high is not None
            if self.low == self.high:
                out = [(0.5, short_number(self.low))]
            else:
                mid = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
                out = [(self.position(v), short_number(v)) for v in (self.low, mid, self.high)]
        if self.has_na:
            out.append((NA_POSITION, NA))
        return out


NA_POSITION = -0.12


def parallel_axes(
    configs: Sequence[Mapping[str, Any]],
    values: Sequence[float | None],
    *,
    metric: str = "val_accuracy",
    keys: Sequence[str] | None = None,
) -> tuple[list[Axis], list[list[float]]]:
    """The axes (the keys the trials differ in, then the metric) and each trial's positions on them.

    With ``keys`` None: every key whose value is not the same in all trials (all keys when
    there is a single trial), in the order they first appear.
    """
    check_lengths(configs, values)
    if keys is None:
        seen: list[str] = []
        for config in configs:
            seen += [k for k in config if k not in seen]
        varying = [k for k in seen if len({json.dumps(c.get(k, NA), default=str) for c in configs}) > 1]
        keys = varying or seen
    axes = [_axis(key, [c.get(key) if key in c else NA for c in configs]) for key in keys]
    axes.append(_axis(metric, [v if is_finite(v) else NA for v in values]))
    rows = [[axis.position(c.get(axis.key) if axis.key in c else NA) for axis in axes[:-1]] for c in configs]
    for row, value in zip(rows, values, strict=True):
        row.append(axes[-1].position(value if is_finite(value) else NA))
    return axes, rows


def _axis(key: str, column: Sequence[Any]) -> Axis:
    present = [v for v in column if v is not None and v != NA]
    has_na = len(present) < len(column)
    if present and all(is_finite(v) for v in present):
        low, high = float(min(present)), float(max(present))
        log = low > 0 and high / low >= 20
        return Axis(key, "numeric", low=low, high=high, log=log, has_na=has_na)
    labels = sorted({as_text(v) for v in present}, key=_natural)
    return Axis(key, "categorical", labels=labels, has_na=has_na)


def _natural(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def as_text(value: Any) -> str:
    if isinstance(value, float):
        return short_number(value)
    return "none" if value is None else str(value)


def short_number(value: float) -> str:
    return f"{value:.3g}"


def check_mode(mode: str) -> None:
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', but got {mode!r}")


def check_lengths(configs: Sequence[Any], values: Sequence[Any]) -> None:
    if len(configs) != len(values):
        raise ValueError(f"one value per config is needed, but got {len(configs)} configs and {len(values)} values")
