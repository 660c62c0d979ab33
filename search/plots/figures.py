"""The search's figures: matplotlib on an Agg canvas, imported inside the functions.

Each figure is a pure function of plain lists and dicts and a path, and returns the path of
the PNG it wrote (with its numbers inside, see ``search.plots.png``):

* :func:`plot_parallel_coordinates`: one line per trial across the keys the trials differ
  in, coloured by the metric (numeric axes for numbers, log where the range spans decades;
  categorical axes for the rest, one tick label per value; ``n/a`` where a key did not apply);
* :func:`plot_best_so_far`: each trial's metric in trial start order and the best so far;
* :func:`plot_groups`: the metric by activation/initializer pair, by batch-norm placement and
  by optimizer: a bar per group at the mean of its trials, the trials as dots.

No MLflow here: ``search.tune`` logs the files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from search.plots.numbers import (
    GROUPS,
    NA_POSITION,
    check_mode,
    group_stats,
    is_finite,
    parallel_axes,
    running_best,
)
from search.plots.png import save_png

PLOT_FILES = {"parallel": "parallel_coordinates.png", "best_so_far": "best_so_far.png", "groups": "by_group.png"}


def _figure(width: float, height: float, nrows: int = 1, height_ratios: Sequence[float] | None = None) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, list(figure.subplots(nrows, 1, squeeze=False, height_ratios=height_ratios)[:, 0])


def _colours(values: Sequence[float | None], mode: str) -> tuple[Any, Any, Any]:
    """(colormap, normalizer, colour of each trial); better is brighter whatever the mode."""
    import matplotlib
    from matplotlib.colors import Normalize

    cmap = matplotlib.colormaps["viridis" if mode == "max" else "viridis_r"]
    finite = [float(v) for v in values if is_finite(v)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    norm = Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1e-9)
    return cmap, norm, [cmap(norm(float(v))) if is_finite(v) else (0.6, 0.6, 0.6, 0.8) for v in values]


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
    check_mode(mode)
    axes, rows = parallel_axes(configs, values, metric=metric, keys=keys)
    cmap, norm, colours = _colours(values, mode)
    figure, (ax,) = _figure(max(6.0, 1.15 * len(axes) + 1.5), 4.6)
    order = sorted(range(len(rows)), key=lambda i: (is_finite(values[i]), (1 if mode == "max" else -1) * (values[i] or 0)
                                                     if is_finite(values[i]) else 0))
    drawn: list[list[float]] = [[] for _ in rows]
    best_i = order[-1] if order and is_finite(values[order[-1]]) else None
    xs = list(range(len(axes)))
    for i in order:  # the best last, on top
        failed = not is_finite(values[i])
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
    return save_png(figure, path, data)


def plot_best_so_far(
    values: Sequence[float | None], path: str | Path, *, labels: Sequence[str] | None = None,
    metric: str = "val_accuracy", mode: str = "max", title: str | None = None,
) -> Path:
    """Each trial's metric in trial start order (dots; failed trials as crosses) and the best so far."""
    check_mode(mode)
    if labels is not None and len(labels) != len(values):
        raise ValueError(f"one label per value is needed, but got {len(labels)} labels and {len(values)} values")
    best = running_best(values, mode)
    figure, (ax,) = _figure(6.4, 3.8)
    xs = list(range(1, len(values) + 1))
    ok = [(x, float(v)) for x, v in zip(xs, values, strict=True) if is_finite(v)]
    finite = [v for _, v in ok]
    if ok:
        ax.scatter([x for x, _ in ok], finite, s=22, color="tab:blue", alpha=0.7, label="trial", zorder=3)
    failed = [x for x, v in zip(xs, values, strict=True) if not is_finite(v)]
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
            first = next(i for i, v in enumerate(values) if is_finite(v) and float(v) == best[-1])
            ax.annotate(labels[first], (first + 1, best[-1]), textcoords="offset points", xytext=(4, 6), fontsize=7)
    ax.set(xlabel="trial (in start order)", ylabel=metric)
    ax.set_xticks(xs if len(xs) <= 20 else ax.get_xticks())
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right" if mode == "max" else "upper right")
    ax.set_title(title or f"best {metric} so far over {len(values)} trials", fontsize=10)
    data = {"kind": "best_so_far", "metric": metric, "mode": mode, "x": xs, "values": list(values),
            "best_so_far": best, "line": drawn}
    return save_png(figure, path, data)


def plot_groups(
    configs: Sequence[Mapping[str, Any]], values: Sequence[float | None], path: str | Path, *,
    groups: Mapping[str, Sequence[str]] | None = None, defaults: Mapping[str, Any] | None = None,
    metric: str = "val_accuracy", mode: str = "max", title: str | None = None,
) -> Path:
    """One panel per entry of ``groups`` (default: activation/initializer, batch norm, optimizer).

    One panel under the other; a horizontal bar per group at the mean metric of its trials, best
    on top, the trials as dots; ``n`` and failed trials in the label. A key missing from a config reads its value
    in ``defaults`` (e.g. ``batch_norm: none`` for a space that does not set it).
    """
    check_mode(mode)
    groups = dict(groups or GROUPS)
    finite = [float(v) for v in values if is_finite(v)]
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
    return save_png(figure, path, {"kind": "groups", "metric": metric, "mode": mode, "panels": panels})


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


def plot_importance(scores: Mapping[str, float], path: str | Path, *, metric: str = "val_accuracy",
                    evaluator: str = "fanova", trials: int = 0) -> Path:
    """Each key's share of the metric's variance, largest on top (a bar per key, its share written on it)."""
    keys = list(scores)
    figure, (ax,) = _figure(6.4, 0.45 * max(len(keys), 2) + 1.3)
    ys = list(range(len(keys)))[::-1]
    bars = ax.barh(ys, [scores[k] for k in keys], color="tab:blue", alpha=0.6)
    ax.set_yticks(ys, keys, fontsize=9)
    ax.set_xlim(0, max([*scores.values(), 0.05]) * 1.15)
    for y, k in zip(ys, keys, strict=True):
        ax.text(scores[k], y, f" {scores[k]:.2f}", va="center", fontsize=8)
    ax.set_xlabel(f"share of the variance of {metric} ({evaluator}, {trials} trials)")
    ax.set_title("Hyperparameter importance", fontsize=10)
    drawn = {k: float(b.get_width()) for k, b in zip(keys, bars, strict=True)}
    return save_png(figure, path, {"kind": "importance", "metric": metric, "evaluator": evaluator, "scores": drawn})
