"""Temperature scaling (Guo et al., 2017): one scalar T that divides the logits, fitted on held-out data.

The models end in a softmax (or a sigmoid), so the logits are ``log p`` up to a constant per
example, and ``softmax(log p / T)`` is ``p ** (1/T)`` renormalized. ``fit_temperature`` finds
the T > 0 that minimizes the NLL of held-out labels; T > 1 softens an over-confident model,
T < 1 sharpens an under-confident one. Accuracy never changes: the arg-max is the same.
Pure numpy and scipy.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

EPS = 1e-12
LOG_T_BOUNDS = (-4.0, 4.0)  # T in [0.018, 55]


def scaled(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``probs`` (N, K) with their logits divided by ``temperature``."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def nll_at(probs: np.ndarray, y: Any, temperature: float) -> float:
    p = scaled(probs, temperature)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(p)), np.asarray(y, dtype=np.int64)], EPS, 1.0))))


def fit_temperature(probs: np.ndarray, y: Any) -> float:
    """The temperature that minimizes the NLL of ``y`` under ``probs`` (N, K) (bounded search over log T)."""
    from scipy.optimize import minimize_scalar

    if len(probs) == 0:
        raise ValueError("no held-out examples to fit a temperature on")
    result = minimize_scalar(lambda log_t: nll_at(probs, y, math.exp(log_t)), bounds=LOG_T_BOUNDS, method="bounded",
                             options={"xatol": 1e-4})
    return float(math.exp(result.x))
