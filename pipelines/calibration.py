"""Temperature scaling (Guo et al., 2017): one scalar T that divides the logits, fitted on held-out data.

The models end in a softmax (or a sigmoid), so the logits are ``log p`` up to a constant per
example, and ``softmax(log p / T)`` is ``p ** (1/T)`` renormalized. ``fit_temperature`` fits
T > 0 to held-out labels by their NLL; T > 1 softens an over-confident model,
T < 1 sharpens an under-confident one. Accuracy never changes: the arg-max is the same.

A model that gets every held-out example right would have its NLL fall forever as T -> 0, and a
near-perfect classifier on a small held-out slice often does (0 errors in 144 examples). So T is
the maximum a posteriori estimate under a log-normal prior, log T ~ N(0, 0.5²): with errors in the
slice the NLL decides; with none, the prior stops T short of 0 (at 0.49-0.64 in the digits runs
measured, where the NLL alone hit the bound, 0.018: docs/benchmarks.md).
Pure numpy and scipy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

EPS = 1e-12
LOG_T_BOUNDS = (-4.0, 4.0)  # T in [0.018, 55]
PRIOR_SIGMA = 0.5  # of log T: T within [0.37, 2.7] at two sigmas


def scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``probs`` (N, K) with their logits divided by ``temperature``."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def nll_at(probs: np.ndarray, y: Any, temperature: float) -> float:
    """The mean negative log-likelihood of ``y`` under ``probs`` (N, K) with their logits divided by ``temperature``."""
    p = scaled(probs, temperature)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(p)), np.asarray(y, dtype=np.int64)], EPS, 1.0))))


def log_posterior_loss(probs: np.ndarray, y: Any, temperature: float) -> float:
    """What ``fit_temperature`` minimizes: the summed NLL plus the prior's ``(log T)² / (2 σ²)``."""
    return len(probs) * nll_at(probs, y, temperature) + math.log(temperature) ** 2 / (2 * PRIOR_SIGMA ** 2)


def fit_temperature(probs: np.ndarray, y: Any) -> float:
    """The MAP temperature of ``y`` under ``probs`` (N, K): bounded search over log T."""
    from scipy.optimize import minimize_scalar

    if len(probs) == 0:
        raise ValueError("no held-out examples to fit a temperature on")
    result = minimize_scalar(lambda log_t: log_posterior_loss(probs, y, math.exp(log_t)), bounds=LOG_T_BOUNDS,
                             method="bounded", options={"xatol": 1e-4})
    return float(math.exp(result.x))
