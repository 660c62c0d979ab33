"""Plots of an MC-dropout evaluation (matplotlib on an Agg canvas, imported inside the functions):
a reliability diagram, accuracy against coverage, and histograms of an uncertainty score for
right and wrong predictions. Each returns the path of the PNG it wrote."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.uncertainty import ece, rejection_curve, reliability_table, two_class_if_binary


def _canvas(ncols: int = 1, *, width: float = 5.0, height: float = 4.2) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, ncols, squeeze=False)[0]


def _save(figure: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    return path


def _reliability_panel(ax: Any, p_mean: np.ndarray, y: Any, n_bins: int, label: str) -> None:
    count, accuracy, mean_conf = reliability_table(p_mean, y, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    filled = count > 0
    ax.bar(centers[filled], accuracy[filled], width=1.0 / n_bins, edgecolor="black", label="accuracy")
    ax.bar(
        centers[filled], (mean_conf - accuracy)[filled], bottom=accuracy[filled], width=1.0 / n_bins,
        color="tab:red", alpha=0.3, edgecolor="tab:red", label="gap to confidence",
    )  # fmt: skip
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    for center, acc, n in zip(centers[filled], accuracy[filled], count[filled], strict=True):
        ax.text(center, min(acc, 0.93) + 0.02, f"{int(n)}", ha="center", fontsize=6, rotation=90)
    ax.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="confidence (top-label probability)", ylabel="accuracy")
    ax.set_title(f"{label}: ECE = {ece(p_mean, y, n_bins):.3f}", fontsize=10)
    ax.legend(loc="upper left", fontsize=7)


def plot_reliability(
    p_mean: np.ndarray,
    y: Any,
    path: str | Path,
    n_bins: int = 15,
    title: str = "Reliability diagram",
    *,
    deterministic_probs: np.ndarray | None = None,
    others: Mapping[str, np.ndarray] | None = None,
) -> Path:
    """Accuracy per confidence bin against the diagonal, with bin counts over the bars.

    One panel for the MC predictive mean and, when ``deterministic_probs`` is given, a
    second one beside it; then one per entry of ``others`` (label -> probabilities). Returns the PNG's path.
    """
    panels = [("MC dropout", two_class_if_binary(p_mean))]
    if deterministic_probs is not None:
        panels.append(("deterministic", two_class_if_binary(deterministic_probs)))
    panels += [(label, two_class_if_binary(p)) for label, p in (others or {}).items()]
    if len(panels) <= 3:
        figure, axes = _canvas(len(panels))
    else:  # rows of three (four from seven panels on), so each panel stays readable
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        cols = 4 if len(panels) > 6 else 3
        rows = -(-len(panels) // cols)
        figure = Figure(figsize=(5.0 * cols, 4.2 * rows), layout="constrained")
        FigureCanvasAgg(figure)
        grid = figure.subplots(rows, cols, squeeze=False).ravel()
        for ax in grid[len(panels):]:
            ax.set_visible(False)
        axes = grid[: len(panels)]
    for ax, (label, probs) in zip(axes, panels, strict=True):
        _reliability_panel(ax, probs, y, n_bins, label)
    figure.suptitle(title)
    return _save(figure, path)


def plot_coverage(
    confidence_by_name: Mapping[str, np.ndarray], correct_by_name: Mapping[str, np.ndarray], path: str | Path
) -> Path:
    """Accuracy on the most confident examples against the fraction kept, one curve per name."""
    figure, (ax,) = _canvas()
    for name, confidence in confidence_by_name.items():
        coverage, accuracy = rejection_curve(confidence, correct_by_name[name])
        ax.plot(coverage, accuracy, label=name)
    ax.set(xlim=(0, 1), xlabel="coverage (fraction of examples kept)", ylabel="accuracy on kept examples")
    ax.set_title("Accuracy vs coverage", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(figure, path)


def plot_uncertainty_hist(
    score: np.ndarray, correct: np.ndarray, path: str | Path, name: str = "predictive entropy"
) -> Path:
    """Histograms of an uncertainty score for the right and the wrong predictions."""
    score = np.asarray(score, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=bool).ravel()
    bins = np.histogram_bin_edges(score, bins=40)
    figure, (ax,) = _canvas()
    for mask, label, color in ((correct, "correct", "tab:green"), (~correct, "wrong", "tab:red")):
        ax.hist(score[mask], bins=bins, alpha=0.55, color=color, label=f"{label} ({int(mask.sum())})", density=True)
    ax.set(xlabel=name, ylabel="density")
    ax.set_title(f"{name}: correct vs wrong", fontsize=10)
    ax.legend(fontsize=8)
    return _save(figure, path)
