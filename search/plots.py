"""The search's report: plots of its trials, and the markdown of the parent run's description.

Plots (matplotlib on an Agg canvas, imported inside the functions, so importing this module
costs nothing). Each is a pure function of plain lists and dicts and a path, and returns the
path of the PNG it wrote:

* :func:`plot_parallel_coordinates`: one line per trial across the keys the trials differ
  in, coloured by the metric (numeric axes for numbers, log where the range spans decades;
  categorical axes for the rest, one tick label per value; ``n/a`` where a key did not apply);
* :func:`plot_best_so_far`: each trial's metric in trial start order and the best so far;
* :func:`plot_groups`: the metric by activation/initializer pair, by batch-norm placement and
  by optimizer: a bar per group at the mean of its trials, the trials as dots.

The numbers each plot draws are written into the PNG itself (a ``tEXt`` chunk, read back with
:func:`plot_data`); they are read off the drawn artists (bar lengths, line points), so a test
can check what the picture shows without image analysis. The same numbers come from the pure
functions :func:`running_best`, :func:`group_stats` and :func:`parallel_axes`.

Description (``mlflow.note.content``): :func:`set_section` replaces one ``### `` section of the
markdown (or adds it, in the order of ``SECTIONS``), and the ``*_section`` functions write the
sections: the best trial, retraining and evaluation, with links into the MLflow UI.
"""

from __future__ import annotations

import json
import math
import statistics
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_KEY = "search.plot"  # the PNG tEXt keyword holding the plotted numbers (JSON)
NA = "n/a"

# Group panels: title -> the config keys whose values name a group.
GROUPS: dict[str, tuple[str, ...]] = {
    "activation / initializer": ("activation", "initializer"),
    "batch norm": ("batch_norm",),
    "optimizer": ("optimizer",),
}
PLOT_FILES = {"parallel": "parallel_coordinates.png", "best_so_far": "best_so_far.png", "groups": "by_group.png"}


# =========================================================================== numbers


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def running_best(values: Sequence[float | None], mode: str = "max") -> list[float | None]:
    """The best value up to each position (``None`` until the first finite value)."""
    _check_mode(mode)
    out: list[float | None] = []
    best: float | None = None
    for value in values:
        if _finite(value) and (best is None or _better(float(value), best, mode)):
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
        parts.append(NA if value is None and key not in config else _text(value))
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
    _check_mode(mode)
    _check_lengths(configs, values)
    groups: dict[str, GroupStat] = {}
    for config, value in zip(configs, values, strict=True):
        stat = groups.setdefault(group_label(config, keys, defaults), GroupStat(group_label(config, keys, defaults), []))
        if _finite(value):
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
            i = self.labels.index(_text(value))
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
                out = [(0.5, _number(self.low))]
            else:
                mid = math.sqrt(self.low * self.high) if self.log else (self.low + self.high) / 2
                out = [(self.position(v), _number(v)) for v in (self.low, mid, self.high)]
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
    _check_lengths(configs, values)
    if keys is None:
        seen: list[str] = []
        for config in configs:
            seen += [k for k in config if k not in seen]
        varying = [k for k in seen if len({json.dumps(c.get(k, NA), default=str) for c in configs}) > 1]
        keys = varying or seen
    axes = [_axis(key, [c.get(key) if key in c else NA for c in configs]) for key in keys]
    axes.append(_axis(metric, [v if _finite(v) else NA for v in values]))
    rows = [[axis.position(c.get(axis.key) if axis.key in c else NA) for axis in axes[:-1]] for c in configs]
    for row, value in zip(rows, values, strict=True):
        row.append(axes[-1].position(value if _finite(value) else NA))
    return axes, rows


def _axis(key: str, column: Sequence[Any]) -> Axis:
    present = [v for v in column if v is not None and v != NA]
    has_na = len(present) < len(column)
    if present and all(_finite(v) for v in present):
        low, high = float(min(present)), float(max(present))
        log = low > 0 and high / low >= 20
        return Axis(key, "numeric", low=low, high=high, log=log, has_na=has_na)
    labels = sorted({_text(v) for v in present}, key=_natural)
    return Axis(key, "categorical", labels=labels, has_na=has_na)


def _natural(text: str) -> tuple[int, float, str]:
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return _number(value)
    return "none" if value is None else str(value)


def _number(value: float) -> str:
    return f"{value:.3g}"


def _check_mode(mode: str) -> None:
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', but got {mode!r}")


def _check_lengths(configs: Sequence[Any], values: Sequence[Any]) -> None:
    if len(configs) != len(values):
        raise ValueError(f"one value per config is needed, but got {len(configs)} configs and {len(values)} values")


# =========================================================================== plots


def _figure(width: float, height: float, nrows: int = 1, height_ratios: Sequence[float] | None = None) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, list(figure.subplots(nrows, 1, squeeze=False, height_ratios=height_ratios)[:, 0])


def _save(figure: Any, path: str | Path, data: Mapping[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, metadata={DATA_KEY: json.dumps(data, default=str), "Software": "search"})
    return path


def plot_data(path: str | Path) -> dict[str, Any]:
    """The numbers a plot of this module drew, read back from its PNG."""
    for keyword, text in png_text(path).items():
        if keyword == DATA_KEY:
            return json.loads(text)
    raise ValueError(f"{path} holds no {DATA_KEY} data; was it written by search.plots?")


def png_text(path: str | Path) -> dict[str, str]:
    """The ``tEXt``/``zTXt``/``iTXt`` chunks of a PNG; a ``ValueError`` if it is not a whole PNG."""
    raw = Path(path).read_bytes()
    if not raw.startswith(PNG_MAGIC):
        raise ValueError(f"{path} is not a PNG file")
    out: dict[str, str] = {}
    at, seen_end = len(PNG_MAGIC), False
    while at + 8 <= len(raw):
        (length,) = struct.unpack(">I", raw[at : at + 4])
        kind, body = raw[at + 4 : at + 8], raw[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", raw[at + 8 + length : at + 12 + length] or b"\0\0\0\0")
        if len(body) != length or zlib.crc32(kind + body) != crc:
            raise ValueError(f"{path}: chunk {kind!r} is truncated or corrupt")
        if kind == b"tEXt":
            keyword, _, text = body.partition(b"\0")
            out[keyword.decode("latin-1")] = text.decode("latin-1")
        elif kind == b"zTXt":
            keyword, _, rest = body.partition(b"\0")
            out[keyword.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
        elif kind == b"iTXt":
            keyword, _, rest = body.partition(b"\0")
            compressed, rest = rest[0], rest[2:]
            _lang, _, rest = rest.partition(b"\0")
            _translated, _, text = rest.partition(b"\0")
            out[keyword.decode("latin-1")] = (zlib.decompress(text) if compressed else text).decode("utf-8")
        elif kind == b"IEND":
            seen_end = True
            break
        at += 12 + length
    if not seen_end:
        raise ValueError(f"{path}: no IEND chunk; the PNG is truncated")
    return out


def _colours(values: Sequence[float | None], mode: str) -> tuple[Any, Any, Any]:
    """(colormap, normalizer, colour of each trial); better is brighter whatever the mode."""
    import matplotlib
    from matplotlib.colors import Normalize

    cmap = matplotlib.colormaps["viridis" if mode == "max" else "viridis_r"]
    finite = [float(v) for v in values if _finite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-9)
    return cmap, norm, [cmap(norm(float(v))) if _finite(v) else (0.6, 0.6, 0.6, 0.8) for v in values]


def plot_parallel_coordinates(
    configs: Sequence[Mapping[str, Any]],
    values: Sequence[float | None],
    path: str | Path,
    *,
    metric: str = "val_accuracy",
    mode: str = "max",
    keys: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Trial configs as lines across one axis per varying key, then the metric, coloured by the metric.

    Failed trials (metric None or not finite) are grey and dashed, at ``n/a`` on the metric axis.
    """
    _check_mode(mode)
    axes, rows = parallel_axes(configs, values, metric=metric, keys=keys)
    cmap, norm, colours = _colours(values, mode)
    figure, (ax,) = _figure(max(6.0, 1.15 * len(axes) + 1.5), 4.6)
    order = sorted(range(len(rows)), key=lambda i: (_finite(values[i]), (1 if mode == "max" else -1) * (values[i] or 0)
                                                     if _finite(values[i]) else 0))
    drawn: list[list[float]] = [[] for _ in rows]
    best_i = order[-1] if order and _finite(values[order[-1]]) else None
    xs = list(range(len(axes)))
    for i in order:  # the best last, on top
        failed = not _finite(values[i])
        (line,) = ax.plot(xs, rows[i], color=colours[i], linewidth=2.6 if i == best_i else 1.4,
                          linestyle="--" if failed else "-", alpha=0.95, zorder=3 if i == best_i else 2)
        drawn[i] = [float(y) for y in line.get_ydata()]
    for x, axis in enumerate(axes):
        ax.axvline(x, color="black", linewidth=0.8, zorder=1)
        for y, label in axis.ticks():
            ax.text(x + 0.04, y, label, fontsize=7, va="center", ha="left", zorder=4,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.75})
    ax.set_xticks(xs, [a.key + (" (log)" if a.log else "") for a in axes], rotation=25, ha="right", fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(axes) - 0.5)
    ax.set_ylim(NA_POSITION - 0.08, 1.08)
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    from matplotlib.cm import ScalarMappable

    figure.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=metric, fraction=0.04, pad=0.01)
    ax.set_title(title or f"{len(rows)} trials: configs coloured by {metric} (best drawn thick)", fontsize=10)
    data = {"kind": "parallel_coordinates", "metric": metric, "mode": mode,
            "axes": [asdict(a) | {"ticks": a.ticks()} for a in axes], "positions": drawn, "values": list(values)}
    return _save(figure, path, data)


def plot_best_so_far(
    values: Sequence[float | None],
    path: str | Path,
    *,
    metric: str = "val_accuracy",
    mode: str = "max",
    labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Each trial's metric in trial start order (dots; failed trials as crosses) and the best so far."""
    _check_mode(mode)
    if labels is not None and len(labels) != len(values):
        raise ValueError(f"one label per value is needed, but got {len(labels)} labels and {len(values)} values")
    best = running_best(values, mode)
    figure, (ax,) = _figure(6.4, 3.8)
    xs = list(range(1, len(values) + 1))
    ok = [(x, float(v)) for x, v in zip(xs, values, strict=True) if _finite(v)]
    finite = [v for _, v in ok]
    if ok:
        ax.scatter([x for x, _ in ok], finite, s=22, color="tab:blue", alpha=0.7, label="trial", zorder=3)
    failed = [x for x, v in zip(xs, values, strict=True) if not _finite(v)]
    if failed:
        bottom = min(finite) if finite else 0.0
        ax.scatter(failed, [bottom] * len(failed), marker="x", color="tab:red", label="failed", zorder=3)
    steps = [(x, b) for x, b in zip(xs, best, strict=True) if b is not None]
    drawn: list[float] = []
    if steps:
        (line,) = ax.step([x for x, _ in steps], [b for _, b in steps], where="post", color="tab:orange",
                          linewidth=2, label="best so far", zorder=2)
        drawn = [float(y) for y in line.get_ydata()]
        if labels is not None and best[-1] is not None:  # name the trial that set the final best
            first = next(i for i, v in enumerate(values) if _finite(v) and float(v) == best[-1])
            ax.annotate(labels[first], (first + 1, best[-1]), textcoords="offset points", xytext=(4, 6), fontsize=7)
    ax.set(xlabel="trial (in start order)", ylabel=metric)
    ax.set_xticks(xs if len(xs) <= 20 else ax.get_xticks())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right" if mode == "max" else "upper right")
    ax.set_title(title or f"best {metric} so far over {len(values)} trials", fontsize=10)
    data = {"kind": "best_so_far", "metric": metric, "mode": mode, "x": xs, "values": list(values),
            "best_so_far": best, "line": drawn}
    return _save(figure, path, data)


def plot_groups(
    configs: Sequence[Mapping[str, Any]],
    values: Sequence[float | None],
    path: str | Path,
    *,
    metric: str = "val_accuracy",
    mode: str = "max",
    groups: Mapping[str, Sequence[str]] | None = None,
    defaults: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> Path:
    """One panel per entry of ``groups`` (default: activation/initializer, batch norm, optimizer).

    One panel under the other; a horizontal bar per group at the mean metric of its trials, best
    on top, the trials as dots; ``n`` and failed trials in the label. A key missing from a config reads its value
    in ``defaults`` (e.g. ``batch_norm: none`` for a space that does not set it).
    """
    _check_mode(mode)
    groups = dict(groups or GROUPS)
    finite = [float(v) for v in values if _finite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    pad = max((hi - lo) * 0.15, abs(hi) * 0.01, 1e-3)
    stats = {title_: group_stats(configs, values, keys, mode=mode, defaults=defaults) for title_, keys in groups.items()}
    rows = [max(1, len(s)) * 0.38 + 0.9 for s in stats.values()]  # inches per panel
    figure, axes = _figure(7.0, sum(rows) + 0.5, nrows=len(groups), height_ratios=rows)
    panels = []
    for ax, (name, stat) in zip(axes, stats.items(), strict=True):
        ys = list(range(len(stat)))[::-1]  # best on top
        means = [g.mean if g.mean is not None else math.nan for g in stat]
        bars = ax.barh(ys, [m - (lo - pad) if m == m else 0.0 for m in means], left=lo - pad, height=0.6,
                       color="tab:blue", alpha=0.35, edgecolor="tab:blue")
        dots: list[list[float]] = []
        for y, g in zip(ys, stat, strict=True):
            jitter = [(k - (len(g.values) - 1) / 2) * min(0.08, 0.4 / max(1, len(g.values))) for k in range(len(g.values))]
            points = ax.scatter(g.values, [y + j for j in jitter], s=16, color="black", zorder=3)
            dots.append([float(p[0]) for p in points.get_offsets()])
        ax.set_yticks(ys, [f"{g.label}  (n={len(g.values)}" + (f", {g.failed} failed)" if g.failed else ")") for g in stat],
                      fontsize=8)
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_xlabel(f"{metric} (bar: mean; dots: trials)", fontsize=8)
        ax.set_title(name, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        drawn_means = [bar.get_x() + bar.get_width() if m == m else None for bar, m in zip(bars, means, strict=True)]
        panels.append({"title": name, "keys": list(groups[name]), "labels": [g.label for g in stat],
                       "means": drawn_means, "counts": [len(g.values) for g in stat], "failed": [g.failed for g in stat],
                       "values": dots})
    figure.suptitle(title or f"{metric} by group ({len(values)} trials)", fontsize=11)
    return _save(figure, path, {"kind": "groups", "metric": metric, "mode": mode, "panels": panels})


def search_plots(
    trials: Sequence[Mapping[str, Any]],
    folder: str | Path,
    *,
    metric: str = "val_accuracy",
    mode: str = "max",
    defaults: Mapping[str, Any] | None = None,
) -> list[Path]:
    """The three plots of a search into ``folder``; ``trials`` in start order, each a dict with
    ``config``, ``value`` (the best metric, None if it failed) and ``name``."""
    folder = Path(folder)
    configs = [dict(t["config"]) for t in trials]
    values = [t.get("value") for t in trials]
    names = [str(t.get("name", "")).split(" ")[0] for t in trials]
    return [
        plot_parallel_coordinates(configs, values, folder / PLOT_FILES["parallel"], metric=metric, mode=mode),
        plot_best_so_far(values, folder / PLOT_FILES["best_so_far"], metric=metric, mode=mode, labels=names),
        plot_groups(configs, values, folder / PLOT_FILES["groups"], metric=metric, mode=mode, defaults=defaults),
    ]


# =========================================================================== the description

SECTIONS = ("Best trial", "Retrain", "Evaluate")


def run_link(experiment_id: str, run_id: str, text: str, artifact: str | None = None) -> str:
    """A markdown link into the MLflow UI, relative to the page (``#/experiments/ID/runs/RUN``)."""
    target = f"#/experiments/{experiment_id}/runs/{run_id}" + (f"/artifacts/{artifact}" if artifact else "")
    return f"[{_md(text)}]({target})"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("[", "\\[").replace("]", "\\]")


def set_section(note: str, heading: str, body: str, order: Sequence[str] = SECTIONS) -> str:
    """``note`` with its ``### heading`` section replaced by ``body`` (or added, in ``order``)."""
    lines = (note or "").rstrip("\n").split("\n") if note else []
    starts = [i for i, line in enumerate(lines) if line.startswith("### ")]

    def end_of(i: int) -> int:
        return next((j for j in starts if j > i), len(lines))

    block = [f"### {heading}", "", *body.strip("\n").split("\n"), ""]
    for i in starts:
        if lines[i][4:].strip() == heading:
            return "\n".join(lines[:i] + block + lines[end_of(i):]).rstrip("\n") + "\n"
    rank = order.index(heading) if heading in order else len(order)
    later = [i for i in starts if lines[i][4:].strip() in order and order.index(lines[i][4:].strip()) > rank]
    at = later[0] if later else len(lines)
    head = lines[:at]
    if head and head[-1].strip():
        head = [*head, ""]
    return "\n".join(head + block + lines[at:]).rstrip("\n") + "\n"


def config_table(config: Mapping[str, Any], keys: Sequence[str] | None = None) -> str:
    """A two-column markdown table of ``config`` (only ``keys``, in that order, when given)."""
    rows = ["| key | value |", "|---|---|"]
    for key in keys if keys is not None else list(config):
        if key in config:
            value = config[key]
            rows.append(f"| `{key}` | {_md(_number(value) if isinstance(value, float) else _text(value))} |")
    return "\n".join(rows)


def best_section(
    *,
    experiment_id: str,
    parent_run_id: str,
    trials: Sequence[Mapping[str, Any]],
    metric: str,
    mode: str,
    wall_time_s: float | None = None,
    plots: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> str:
    """The ``Best trial`` section: the best trial (linked), its config, the plots, and what won."""
    scored = [t for t in trials if _finite(t.get("value"))]
    failed = sum(t.get("state") == "failed" for t in trials)
    stopped = sum(t.get("state") == "stopped_early" for t in trials)
    took = f" in {wall_time_s:.0f} s" if wall_time_s is not None else ""
    counts = f"{len(trials)} trials ({failed} failed, {stopped} stopped early){took}"
    if not scored:
        return f"No trial reported {metric}: {counts}."
    best = (max if mode == "max" else min)(scored, key=lambda t: float(t["value"]))
    link = run_link(experiment_id, best["run_id"], best.get("name") or best["run_id"]) if best.get("run_id") else best.get("name")
    epoch = f" at epoch {best['best_epoch']}" if best.get("best_epoch") is not None else ""
    configs = [t["config"] for t in trials]
    varying = [k for k in best["config"] if len({json.dumps(c.get(k, NA), default=str) for c in configs}) > 1]
    lines = [f"{link}: **{metric} {float(best['value']):.4f}**{epoch}, the best of {counts}.", ""]
    if varying and len(varying) < len(best["config"]):
        lines += ["What the search chose (the keys its trials differed in; the rest is in `best_config.json`):", ""]
        lines += [config_table(best["config"], varying), ""]
    else:
        lines += [config_table(best["config"]), ""]
    if len(trials) > 1:
        values = [t.get("value") for t in trials]
        lines += [f"Mean {metric} by group, best first:", ""]
        for name, keys in GROUPS.items():
            stats = [g for g in group_stats(configs, values, keys, mode=mode, defaults=defaults) if g.mean is not None]
            if len(stats) > 1:
                cells = [f"{_md(g.label)} {g.mean:.4f} (n={len(g.values)})" for g in stats]
                lines.append(f"- {name}: **{cells[0]}**" + "".join(f" · {c}" for c in cells[1:]))
        if lines[-1].startswith("- "):
            lines.append("")
        else:
            del lines[-2:]  # no group had two scored values to compare
    if plots:
        lines.append("Plots: " + " · ".join(run_link(experiment_id, parent_run_id, Path(p).stem.replace("_", " "), p)
                                           for p in plots))
    return "\n".join(lines).strip("\n")


def _mean_std(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def retrain_section(*, experiment_id: str, entries: Sequence[Mapping[str, Any]], verdict: str, model_uri: str,
                    registered: str | None = None) -> str:
    """The ``Retrain`` section: test accuracy mean ± std per retrained config, seed runs linked.

    Each entry: ``label``, ``trial_name``, ``trial_run_id``, ``accuracy_mean``, ``accuracy_std``,
    ``loss_mean``, ``loss_std``, ``epochs`` and ``seeds`` (a list of ``{seed, run_id, test_accuracy}``).
    """
    rows = ["| | trial | test accuracy | test loss | epochs | seed runs |", "|---|---|---|---|---|---|"]
    for e in entries:
        seeds = " ".join(run_link(experiment_id, s["run_id"], f"seed {s['seed']}") for s in e["seeds"])
        trial = run_link(experiment_id, e["trial_run_id"], str(e["trial_name"]).split(" ")[0])
        rows.append(f"| {e['label']} | {trial} | **{_mean_std(e['accuracy_mean'], e['accuracy_std'])}** | "
                    f"{_mean_std(e['loss_mean'], e['loss_std'])} | {e['epochs']} | {seeds} |")
    n = len(entries[0]["seeds"]) if entries else 0
    lines = [f"Retrained on train+valid with {n} seed{'s' if n != 1 else ''}, scored on the test split "
             "(mean ± std over seeds):", "", *rows, "", verdict, "", f"Model: `{model_uri}`"]
    if registered:
        lines[-1] += f", registered as `{registered}`"
    return "\n".join(lines)


EVALUATE_KEYS = (("accuracy", "accuracy"), ("nll", "NLL"), ("ece", "ECE"), ("brier", "Brier"))


def evaluate_section(*, experiment_id: str, run_id: str, model_uri: str, dataset: str, samples: int,
                     metrics: Mapping[str, Mapping[str, float]], artifacts: Sequence[str] = (), note: str = "") -> str:
    """The ``Evaluate`` section: MC dropout vs deterministic accuracy, NLL and ECE, the run and plots linked."""
    head = ["| predictor | " + " | ".join(label for _, label in EVALUATE_KEYS) + " |",
            "|---|" + "---|" * len(EVALUATE_KEYS)]
    names = {"mc": f"MC dropout (T={samples})", "deterministic": "deterministic"}
    for kind in ("mc", "deterministic"):
        if kind in metrics:
            cells = [f"{metrics[kind][k]:.4f}" if _finite(metrics[kind].get(k)) else "" for k, _ in EVALUATE_KEYS]
            head.append(f"| {names[kind]} | " + " | ".join(cells) + " |")
    lines = [f"{run_link(experiment_id, run_id, 'evaluate run')} of `{model_uri}` on the {dataset} test split:", "", *head]
    if note:
        lines += ["", note]
    pngs = [a for a in artifacts if a.endswith(".png")]
    if pngs:
        lines += ["", "Plots: " + " · ".join(run_link(experiment_id, run_id, Path(a).stem, a) for a in pngs)]
    return "\n".join(lines)


def update_note(get_note: Callable[[], str], set_note: Callable[[str], None], heading: str, body: str) -> str:
    """Read the description, replace one section, write it back; returns the new description."""
    note = set_section(get_note() or "", heading, body)
    set_note(note)
    return note
