"""Plots of a regressor's evaluation (matplotlib on an Agg canvas, imported inside the functions):
observed against nominal interval coverage, predicted against actual with intervals, and the
residuals. Each returns the path of the PNG it wrote."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pipelines.mc_plots import _canvas, _save
from pipelines.regression import Predictive, coverage_curve, z_of

NOMINAL = np.linspace(0.05, 0.95, 19)


def plot_interval_coverage(predictives: Mapping[str, Predictive], y: np.ndarray, path: str | Path) -> Path:
    """Observed coverage of the central intervals against their nominal level, one line per predictor."""
    figure, (ax,) = _canvas()
    ax.plot([0, 1], [0, 1], color="gray", linestyle="--", label="ideal")
    for name, p in predictives.items():
        ax.plot(NOMINAL, coverage_curve(p, y, NOMINAL), marker="o", markersize=3, label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="nominal coverage of the central interval",
           ylabel="observed coverage on the test split")
    ax.set_title("Interval calibration (below the line: over-confident)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(figure, path)


def plot_predicted_vs_actual(p: Predictive, y: np.ndarray, path: str | Path, *, name: str, level: float = 0.9) -> Path:
    """Each test example's predicted mean against its actual target, with the ``level`` interval."""
    y = np.asarray(y, dtype=np.float64)
    inside = np.abs(y - p.mean) <= z_of(level) * p.std
    figure, (ax,) = _canvas()
    for mask, label, color in ((inside, "target inside", "tab:blue"), (~inside, "target outside", "tab:red")):
        ax.errorbar(y[mask], p.mean[mask], yerr=z_of(level) * p.std[mask], fmt="o", markersize=3, alpha=0.6,
                    elinewidth=0.8, color=color, label=f"{label} ({int(mask.sum())})")
    low, high = float(min(y.min(), p.mean.min())), float(max(y.max(), p.mean.max()))
    ax.plot([low, high], [low, high], color="gray", linestyle="--")
    ax.set(xlabel="actual target", ylabel=f"predicted mean ({round(level * 100)}% interval)")
    ax.set_title(f"{name}: predicted vs actual", fontsize=10)
    ax.legend(fontsize=8)
    return _save(figure, path)


def plot_residuals(p: Predictive, y: np.ndarray, path: str | Path, *, name: str) -> Path:
    """Residuals against the predicted mean, and their histogram beside the predicted spread."""
    residual = np.asarray(y, dtype=np.float64) - p.mean
    figure, (scatter, hist) = _canvas(2, width=4.6)
    scatter.scatter(p.mean, residual, s=8, alpha=0.6)
    scatter.axhline(0, color="gray", linestyle="--")
    scatter.set(xlabel="predicted mean", ylabel="residual (actual - predicted)")
    scatter.set_title(f"{name}: residuals", fontsize=10)
    hist.hist(residual / p.std, bins=30, density=True, alpha=0.6, label="residual / predicted std")
    grid = np.linspace(-4, 4, 200)
    hist.plot(grid, np.exp(-0.5 * grid**2) / np.sqrt(2 * np.pi), color="black", label="N(0, 1)")
    hist.set(xlabel="standardized residual", ylabel="density")
    hist.set_title("calibrated: close to N(0, 1)", fontsize=10)
    hist.legend(fontsize=8)
    return _save(figure, path)
