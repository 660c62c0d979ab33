"""Uncertainty and calibration metrics for MC-dropout predictions (pure numpy).

Accuracy, NLL, Brier, ECE, predictive entropy, mutual information (BALD), AUROC of an
uncertainty score for spotting errors, accuracy at a coverage, and :func:`summarize`, which
puts them together for MC and deterministic predictions. Probabilities are ``probs`` of shape
``(T, N, K)`` for ``T`` MC samples, ``p_mean`` of shape ``(N, K)``, and labels ``y`` of shape
``(N,)`` holding ints. ``save_predictions`` writes them to ``predictions.npz``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

EPS = 1e-12
COVERAGES = (0.5, 0.8, 0.9, 0.95)


def _as_samples(probs: np.ndarray) -> np.ndarray:
    """``(T, N, K)`` from ``(T, N, K)`` or a deterministic ``(N, K)`` (then T = 1)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 2:
        return probs[None]
    if probs.ndim != 3:
        raise ValueError(f"probabilities must have shape (T, N, K) or (N, K), but got {probs.shape}")
    return probs


def _as_labels(y: Any, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), but got {y.shape}")
    return y.astype(np.int64)


def binary_to_two_class(p: np.ndarray) -> np.ndarray:
    """Sigmoid probabilities ``(..., 1)`` or ``(...,)`` as two-class ``(..., 2)``: ``[1 - p, p]``."""
    p = np.asarray(p)
    if p.ndim >= 1 and p.shape[-1] == 1:
        p = p[..., 0]
    return np.stack([1.0 - p, p], axis=-1)


def nll(probs_samples: np.ndarray, y: Any) -> float:
    """Mean negative log-likelihood of the MC predictive distribution.

    Per example: ``-log(mean_t p_t(y)) = -logsumexp_t log p_t(y) + log T``, computed in log
    space with probabilities clipped at 1e-12, so it stays finite. A deterministic
    ``(N, K)`` array is the case T = 1.
    """
    probs = _as_samples(probs_samples)
    t, n, _ = probs.shape
    y = _as_labels(y, n)
    log_p = np.log(np.clip(probs[:, np.arange(n), y], EPS, 1.0))  # (T, N)
    top = log_p.max(axis=0)
    lse = top + np.log(np.exp(log_p - top).sum(axis=0))
    return float(np.mean(math.log(t) - lse))


def brier(p_mean: np.ndarray, y: Any) -> float:
    """Mean over examples of ``sum_k (p_k - 1[y = k])^2`` (ranges over [0, 2])."""
    p = np.asarray(p_mean, dtype=np.float64)
    y = _as_labels(y, p.shape[0])
    onehot = np.zeros_like(p)
    onehot[np.arange(p.shape[0]), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def _confidence_bins(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index of each confidence; bins ``(i/n, (i+1)/n]``, with 0 in the first bin."""
    index = np.ceil(confidence * n_bins).astype(np.int64) - 1
    return np.clip(index, 0, n_bins - 1)


def reliability_table(p_mean: np.ndarray, y: Any, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per bin: count, accuracy and mean confidence (NaN for empty bins)."""
    if n_bins < 1:
        raise ValueError(f"`n_bins >= 1` must hold, but got n_bins={n_bins}")
    p = np.asarray(p_mean, dtype=np.float64)
    y = _as_labels(y, p.shape[0])
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    bins = _confidence_bins(confidence, n_bins)
    count = np.bincount(bins, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(bins, weights=correct, minlength=n_bins) / count
        mean_conf = np.bincount(bins, weights=confidence, minlength=n_bins) / count
    return count, accuracy, mean_conf


def ece(p_mean: np.ndarray, y: Any, n_bins: int = 15) -> float:
    """Expected calibration error on the top-label confidence.

    Equal-width bins ``(i/n_bins, (i+1)/n_bins]`` over [0, 1];
    ``sum_b |B_b| / N * |accuracy_b - confidence_b|``.
    """
    count, accuracy, mean_conf = reliability_table(p_mean, y, n_bins)
    filled = count > 0
    return float(np.sum(count[filled] / count.sum() * np.abs(accuracy[filled] - mean_conf[filled])))


def entropy(p: np.ndarray) -> np.ndarray:
    """Entropy (nats) over the last axis, per example: ``-sum_k p_k log p_k`` with 0 log 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -np.sum(p * logs, axis=-1)


def mutual_information(probs_samples: np.ndarray) -> np.ndarray:
    """BALD, per example: ``H[mean_t p_t] - mean_t H[p_t]``, clipped at 0 (0 when T = 1)."""
    probs = _as_samples(probs_samples)
    mi = entropy(probs.mean(axis=0)) - entropy(probs).mean(axis=0)
    return np.maximum(mi, 0.0)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given the average of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    average = ends - (counts - 1) / 2.0
    return average[inverse.ravel()]


def auroc(scores: np.ndarray, is_error: np.ndarray) -> float:
    """ROC AUC of ``scores`` (higher = more uncertain) for detecting errors.

    Rank based (Mann-Whitney U), ties averaged. NaN when ``is_error`` holds one class only.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positive = np.asarray(is_error, dtype=bool).ravel()
    if scores.shape != positive.shape:
        raise ValueError(f"scores and is_error must have the same length, but got {scores.shape} and {positive.shape}")
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _by_confidence(confidence: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """``correct`` ordered from the most to the least confident (stable on ties)."""
    confidence = np.asarray(confidence, dtype=np.float64).ravel()
    correct = np.asarray(correct, dtype=np.float64).ravel()
    if confidence.shape != correct.shape or confidence.size == 0:
        raise ValueError(
            f"confidence and correct must be non-empty and of the same length, "
            f"but got {confidence.shape} and {correct.shape}"
        )
    order = np.argsort(-confidence, kind="stable")
    return correct[order]


def coverage_accuracy(
    confidence: np.ndarray, correct: np.ndarray, coverages: Iterable[float] = COVERAGES
) -> dict[float, float]:
    """Accuracy on the most confident fraction ``c`` of the examples, for each coverage ``c``.

    Keeps ``ceil(c * N)`` examples (at least one); ties at the cut are broken by position.
    """
    ordered = _by_confidence(confidence, correct)
    n = ordered.size
    result = {}
    for c in coverages:
        if not 0 < c <= 1:
            raise ValueError(f"`0 < coverage <= 1` must hold, but got {c}")
        keep = min(n, max(1, math.ceil(c * n - 1e-9)))
        result[float(c)] = float(ordered[:keep].mean())
    return result


def rejection_curve(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage ``k/N`` and the accuracy on the ``k`` most confident examples, for k = 1..N."""
    ordered = _by_confidence(confidence, correct)
    kept = np.arange(1, ordered.size + 1)
    return kept / ordered.size, np.cumsum(ordered) / kept


def _metrics(probs: np.ndarray, y: np.ndarray, *, mc: bool) -> dict[str, float]:
    p_mean = probs.mean(axis=0)
    confidence = p_mean.max(axis=1)
    correct = p_mean.argmax(axis=1) == y
    is_error = ~correct
    h = entropy(p_mean)
    out = {
        "accuracy": float(correct.mean()),
        "nll": nll(probs, y),
        "brier": brier(p_mean, y),
        "ece": ece(p_mean, y),
        "entropy": float(h.mean()),
        "mutual_info": 0.0,
        "auroc_max_prob": auroc(1.0 - confidence, is_error),
        "auroc_entropy": auroc(h, is_error),
    }
    if mc:
        mi = mutual_information(probs)
        out["mutual_info"] = float(mi.mean())
        out["auroc_mutual_info"] = auroc(mi, is_error)
    for c, acc in coverage_accuracy(confidence, correct).items():
        out[f"acc_at_{round(c * 100)}"] = acc
    return out


def two_class_if_binary(probs: np.ndarray) -> np.ndarray:
    probs = np.asarray(probs)
    return binary_to_two_class(probs) if probs.shape[-1] == 1 else probs


def summarize(
    probs_samples: np.ndarray, y: Any, *, deterministic_probs: np.ndarray | None = None
) -> dict[str, dict[str, float]]:
    """Every metric, for the MC predictions and (when given) the deterministic ones.

    Returns ``{"mc": {...}, "deterministic": {...}}`` ("deterministic" only when
    ``deterministic_probs`` is given), each with ``accuracy``, ``nll``, ``brier``, ``ece``,
    ``entropy`` (mean predictive entropy), ``mutual_info`` (mean; 0 for deterministic),
    ``auroc_max_prob``, ``auroc_entropy``, ``auroc_mutual_info`` (MC only) and
    ``acc_at_50``/``80``/``90``/``95``. A trailing class axis of size 1 is read as sigmoid
    probabilities.
    """
    probs = _as_samples(two_class_if_binary(probs_samples))
    labels = _as_labels(y, probs.shape[1])
    result = {"mc": _metrics(probs, labels, mc=True)}
    if deterministic_probs is not None:
        det = _as_samples(two_class_if_binary(deterministic_probs))
        if det.shape[0] != 1:
            raise ValueError(f"deterministic_probs must have shape (N, K), but got {det.shape[1:]}")
        result["deterministic"] = _metrics(det, labels, mc=False)
    return result


def summarize_predictors(predictions: dict[str, np.ndarray], y: Any) -> dict[str, dict[str, float]]:
    """Every metric for each named predictor: ``(S, N, K)`` samples (S = 1: a deterministic one)."""
    out = {}
    for name, probs in predictions.items():
        samples = _as_samples(two_class_if_binary(probs))
        out[name] = _metrics(samples, _as_labels(y, samples.shape[1]), mc=samples.shape[0] > 1)
    return out


def save_predictions(
    path: str | Path,
    *,
    labels: np.ndarray,
    probs_mean: np.ndarray,
    probs_std: np.ndarray,
    entropy: np.ndarray,
    mutual_info: np.ndarray,
    deterministic_probs: np.ndarray,
    **others: np.ndarray,
) -> Path:
    """Write the predictions as a compressed ``.npz``: these six keys, and ``others`` (more predictors'
    probabilities, one row per example) beside them."""
    arrays = {
        "labels": np.asarray(labels),
        "probs_mean": np.asarray(probs_mean),
        "probs_std": np.asarray(probs_std),
        "entropy": np.asarray(entropy),
        "mutual_info": np.asarray(mutual_info),
        "deterministic_probs": np.asarray(deterministic_probs),
        **{k: np.asarray(v) for k, v in others.items()},
    }
    lengths = {key: value.shape[0] if value.ndim else None for key, value in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"every array must have one row per example, but got lengths {lengths}")
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path
