"""Regression metrics and MC-dropout predictive distributions, in the target's own units. NumPy only.

A predictor gives each test example a Gaussian: mean ``mu`` and variance ``var``. With MC dropout,
``mu`` is the mean of the T sampled means, and ``var`` = epistemic + aleatoric: the variance of the
sampled means (what the weights do not know), plus the noise the target has anyway: the mean of
the sampled variances where the net has a Gaussian NLL head, else a noise variance estimated on the
validation split. Metrics: RMSE, MAE, R², Gaussian NLL, CRPS, and the coverage and mean width of
the central 50/80/90/95% intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

LEVELS = (0.5, 0.8, 0.9, 0.95)  # nominal coverage of the central intervals reported
VAR_FLOOR = 1e-12


@dataclass(frozen=True)
class Predictive:
    """Per example: the predictive mean and its variance, split into epistemic and aleatoric parts."""

    mean: np.ndarray
    epistemic: np.ndarray
    aleatoric: np.ndarray

    @property
    def var(self) -> np.ndarray:
        return np.maximum(self.epistemic + self.aleatoric, VAR_FLOOR)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)


def predictive(samples: np.ndarray, noise_var: float | None = None) -> Predictive:
    """The Gaussian predictive of ``samples`` ``(T, N, 1)`` (means) or ``(T, N, 2)`` (mean, log variance).

    Two columns: aleatoric = the mean over T of ``exp(log variance)``; one column: ``noise_var``
    (required). Epistemic = the variance over T of the means (0 for T = 1).
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 3 or samples.shape[-1] not in (1, 2):
        raise ValueError(f"samples must have shape (T, N, 1) or (T, N, 2), got {samples.shape}")
    means = samples[..., 0]
    if samples.shape[-1] == 2:
        aleatoric = np.exp(samples[..., 1]).mean(axis=0)
    elif noise_var is None:
        raise ValueError("a model with one output needs noise_var: the target's noise variance")
    else:
        aleatoric = np.full(means.shape[1], float(noise_var))
    return Predictive(means.mean(axis=0), means.var(axis=0), aleatoric)


def point_scores(predicted: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² of point predictions."""
    predicted, y = np.asarray(predicted, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    error = predicted - y
    total = float(np.sum((y - y.mean()) ** 2))
    return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error))),
            "r2": float(1.0 - np.sum(error**2) / total) if total > 0 else math.nan}


def gaussian_nll(mean: np.ndarray, var: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of ``y`` under N(mean, var)."""
    var = np.maximum(np.asarray(var, dtype=np.float64), VAR_FLOOR)
    return float(np.mean(0.5 * (np.log(2 * np.pi * var) + (np.asarray(y) - mean) ** 2 / var)))


def crps(mean: np.ndarray, std: np.ndarray, y: np.ndarray) -> float:
    """Mean continuous ranked probability score of N(mean, std²) at ``y`` (Gneiting & Raftery 2007)."""
    std = np.maximum(np.asarray(std, dtype=np.float64), math.sqrt(VAR_FLOOR))
    z = (np.asarray(y, dtype=np.float64) - mean) / std
    unit = NormalDist()
    cdf = np.vectorize(unit.cdf)(z)
    pdf = np.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    return float(np.mean(std * (z * (2 * cdf - 1) + 2 * pdf - 1 / math.sqrt(math.pi))))


def z_of(level: float) -> float:
    """The half-width, in standard deviations, of the central interval holding ``level`` of a Gaussian."""
    return NormalDist().inv_cdf(0.5 + level / 2)


def coverage(mean: np.ndarray, std: np.ndarray, y: np.ndarray, level: float) -> float:
    """The fraction of ``y`` inside the central ``level`` interval."""
    return float(np.mean(np.abs(np.asarray(y) - mean) <= z_of(level) * np.asarray(std)))


def summarize(p: Predictive, y: np.ndarray, levels: Sequence[float] = LEVELS) -> dict[str, float]:
    """Every metric of one predictor: point scores, NLL, CRPS, coverage and mean width per level."""
    out = {**point_scores(p.mean, y), "nll": gaussian_nll(p.mean, p.var, y), "crps": crps(p.mean, p.std, y),
           "epistemic_std": float(np.sqrt(p.epistemic.mean())), "aleatoric_std": float(np.sqrt(p.aleatoric.mean()))}
    for level in levels:
        pct = round(level * 100)
        out[f"coverage_{pct}"] = coverage(p.mean, p.std, y, level)
        out[f"width_{pct}"] = float(np.mean(2 * z_of(level) * p.std))
    return out


def coverage_curve(p: Predictive, y: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Observed coverage at each nominal level (for the calibration plot)."""
    return np.array([coverage(p.mean, p.std, y, float(level)) for level in levels])


def noise_variance(predicted: np.ndarray, y: np.ndarray) -> float:
    """The target's noise variance, as the mean squared residual of ``predicted`` on held-out ``y``."""
    return float(np.mean((np.asarray(predicted, dtype=np.float64).ravel() - np.asarray(y, dtype=np.float64)) ** 2))


def verdict(metrics: dict[str, dict[str, float]], level: float = 0.9) -> str:
    """Plain words: how close each predictor's ``level`` interval comes to its nominal coverage."""
    pct = round(level * 100)
    parts = [f"{name} {values[f'coverage_{pct}']:.0%}" for name, values in metrics.items() if f"coverage_{pct}" in values]
    if not parts:
        return ""
    best = min(metrics, key=lambda k: abs(metrics[k].get(f"coverage_{pct}", math.inf) - level))
    return (f"The {pct}% intervals cover {', '.join(parts)} of the test targets; **{best}** comes closest to "
            f"{pct}% (NLL {metrics[best]['nll']:.3f}, CRPS {metrics[best]['crps']:.3f}).")
