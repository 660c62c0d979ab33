"""Monte Carlo dropout: fast sampling, uncertainty and calibration metrics, plots.

Three parts, usable on their own:

* **Metrics** (pure numpy): accuracy, NLL, Brier, ECE, predictive entropy, mutual information
  (BALD), AUROC of an uncertainty score for spotting errors, accuracy at a coverage, and
  :func:`summarize`, which puts them together for MC and deterministic predictions.
  Probabilities are ``probs`` of shape ``(T, N, K)`` for ``T`` MC samples, ``p_mean`` of
  shape ``(N, K)``, and labels ``y`` of shape ``(N,)`` holding ints.
* **Sampling**: :func:`mc_predict` draws ``T`` stochastic forward passes of a
  ``keras.Sequential`` cheaply. The layers before the first dropout layer are
  deterministic, so they run once per input; only the rest of the network (the
  *suffix*) runs ``T`` times, on the prefix activations tiled ``T`` times, in one compiled
  call per chunk. Dropout layers (``keras.layers.Dropout``, ``AlphaDropout``,
  ``GaussianDropout`` and their subclasses, such as ``search.model.MCDropout``) are called
  with ``training=True``, every other layer with ``training=False``, so batch norm uses its
  moving statistics and never updates them. :func:`mc_predict_naive` is the loop the
  notebooks used (``model(x, training=True)`` ``T`` times): the baseline of the benchmark.
* **Plots** (matplotlib, Agg canvas, imported lazily): reliability diagram, accuracy
  against coverage, histograms of an uncertainty score for right and wrong predictions.

Keras and TensorFlow are imported inside the sampling functions, so the metrics and plots
work without them.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines import subnetworks  # TF is imported inside its functions only

if TYPE_CHECKING:  # pragma: no cover
    import keras

logger = logging.getLogger(__name__)

EPS = 1e-12
COVERAGES = (0.5, 0.8, 0.9, 0.95)

__all__ = [
    "MCResult",
    "auroc",
    "binary_to_two_class",
    "brier",
    "coverage_accuracy",
    "deterministic_predict",
    "ece",
    "entropy",
    "first_dropout_index",
    "has_dropout",
    "mc_predict",
    "mc_predict_naive",
    "mutual_information",
    "nll",
    "plot_coverage",
    "plot_reliability",
    "plot_uncertainty_hist",
    "rejection_curve",
    "save_predictions",
    "summarize",
]


# =========================================================================== metrics


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


def _reliability_table(p_mean: np.ndarray, y: Any, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
    count, accuracy, mean_conf = _reliability_table(p_mean, y, n_bins)
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


def _two_class_if_binary(probs: np.ndarray) -> np.ndarray:
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
    probs = _as_samples(_two_class_if_binary(probs_samples))
    labels = _as_labels(y, probs.shape[1])
    result = {"mc": _metrics(probs, labels, mc=True)}
    if deterministic_probs is not None:
        det = _as_samples(_two_class_if_binary(deterministic_probs))
        if det.shape[0] != 1:
            raise ValueError(f"deterministic_probs must have shape (N, K), but got {det.shape[1:]}")
        result["deterministic"] = _metrics(det, labels, mc=False)
    return result


# =========================================================================== sampling


@dataclass
class MCResult:
    """``T`` Monte Carlo samples of class probabilities, ``(T, N, K)`` (K = 2 for sigmoid)."""

    samples: np.ndarray

    @property
    def mean(self) -> np.ndarray:
        """Predictive distribution ``(N, K)``: the mean over samples."""
        return self.samples.mean(axis=0)

    @property
    def std(self) -> np.ndarray:
        """Spread of the samples per class ``(N, K)`` (0 when T = 1)."""
        return self.samples.std(axis=0)

    @property
    def entropy(self) -> np.ndarray:
        """Predictive entropy per example ``(N,)``."""
        return entropy(self.mean)

    @property
    def mutual_info(self) -> np.ndarray:
        """BALD mutual information per example ``(N,)``."""
        return mutual_information(self.samples)


def _stochastic_types() -> tuple[type, ...]:
    import keras

    return (keras.layers.Dropout, keras.layers.AlphaDropout, keras.layers.GaussianDropout)


def _is_stochastic(layer: Any) -> bool:
    return isinstance(layer, _stochastic_types()) and getattr(layer, "rate", 0) > 0


def _flat_layers(model: keras.Model) -> list[Any]:
    """``model.layers``, with nested ``keras.Sequential`` blocks expanded in place."""
    import keras

    if not isinstance(model, keras.Sequential):
        raise TypeError(
            f"MC sampling splits a keras.Sequential at its first dropout layer, "
            f"but got {type(model).__name__}"
        )
    flat: list[Any] = []
    for layer in model.layers:
        flat.extend(_flat_layers(layer) if isinstance(layer, keras.Sequential) else [layer])
    return flat


def _walk(model: Any) -> Iterable[Any]:
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _walk(layer)


def has_dropout(model: keras.Model) -> bool:
    """Whether ``model`` (any Keras model, nested ones searched) holds a dropout layer with a rate above 0."""
    return any(_is_stochastic(layer) for layer in _walk(model))


def first_dropout_index(model: keras.Sequential) -> int | None:
    """Index of the first dropout layer with a rate above 0, or None.

    The index is into ``model.layers`` with nested ``Sequential`` blocks expanded in place
    (the same list for a flat model). Dropout layers are ``keras.layers.Dropout``,
    ``AlphaDropout``, ``GaussianDropout`` and their subclasses.
    """
    for i, layer in enumerate(_flat_layers(model)):
        if _is_stochastic(layer):
            return i
    return None


def _float_inputs(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"inputs must have a batch axis, shape (N, ...), but got {x.shape}")
    return x.astype(np.float32, copy=False)


def _to_probs(out: np.ndarray) -> np.ndarray:
    """Model outputs ``(..., K)`` as float32 probabilities; K = 1 (sigmoid) becomes K = 2."""
    out = np.asarray(out, dtype=np.float32)
    return binary_to_two_class(out) if out.shape[-1] == 1 else out


def _check_samples(samples: int) -> None:
    if int(samples) != samples or samples < 1:
        raise ValueError(f"`samples >= 1` must hold, but got samples={samples}")


def _run_layers(layers: Sequence[Any], h: Any) -> Any:
    """Apply ``layers`` in inference mode, with the dropout layers skipped (identity)."""
    for layer in layers:
        if not _is_stochastic(layer):
            h = layer(h, training=False)
    return h


def deterministic_predict(model: keras.Sequential, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Probabilities ``(N, K)`` with dropout off (K = 2 for sigmoid models).

    Dropout layers are skipped rather than called, so MC layers that ignore ``training``
    (``search.model.MCDropout``) are off too; batch norm runs in inference mode.
    """
    import keras

    x = _float_inputs(x)
    layers = _flat_layers(model)
    outs = [
        keras.ops.convert_to_numpy(_run_layers(layers, x[i : i + batch_size])) for i in range(0, len(x), batch_size)
    ]
    return _to_probs(np.concatenate(outs))


def mc_predict_naive(model: keras.Model, x: np.ndarray, *, samples: int = 100, batch_size: int | None = None) -> MCResult:
    """The notebooks' MC dropout: ``T`` times ``model(x, training=True)``.

    The baseline :func:`mc_predict` is benchmarked against. ``batch_size=None`` feeds the
    whole array at once, as the notebooks did. Note that ``training=True`` also puts batch
    norm in training mode (batch statistics, and moving statistics updated), so for models
    with batch norm this samples a different distribution than :func:`mc_predict`.
    """
    import keras

    _check_samples(samples)
    x = _float_inputs(x)
    step = len(x) if batch_size is None else batch_size
    draws = []
    for _ in range(samples):
        outs = [keras.ops.convert_to_numpy(model(x[i : i + step], training=True)) for i in range(0, len(x), step)]
        draws.append(_to_probs(np.concatenate(outs)))
    return MCResult(np.stack(draws))


# --------------------------------------------------------------------------- fast path

# Compiled prefix/suffix functions per model, so that repeated calls do not retrace.
_COMPILED: weakref.WeakKeyDictionary[Any, dict[tuple, tuple[Callable, Callable]]] = weakref.WeakKeyDictionary()


def _suffix_fn(layers: Sequence[Any], *, shared_masks: bool) -> Callable[[Any, Any], Any]:
    """``f(h, T) -> (T, n, ...)``: the suffix on ``h`` tiled T times, dropout on."""
    import tensorflow as tf

    def run(h: Any, samples: Any) -> Any:
        n = tf.shape(h)[0]
        tiled = False  # rows t*n + i hold sample t of example i once tiled
        for layer in layers:
            shared = shared_masks and _is_stochastic(layer) and _is_multiplicative(layer)
            if shared:
                h = _apply_shared_mask(layer, h, samples, n, tiled=tiled)
            else:
                if not tiled:
                    h = tf.tile(h, tf.concat([[samples], tf.ones_like(tf.shape(h)[1:])], 0))
                h = layer(h, training=_is_stochastic(layer))
            tiled = True
        return tf.reshape(h, tf.concat([[samples, n], tf.shape(h)[1:]], 0))

    return run


def _is_multiplicative(layer: Any) -> bool:
    """Noise that multiplies the input (Dropout, GaussianDropout), unlike AlphaDropout's."""
    import keras

    return isinstance(layer, (keras.layers.Dropout, keras.layers.GaussianDropout))


def _apply_shared_mask(layer: Any, h: Any, samples: Any, n: Any, *, tiled: bool) -> Any:
    """One noise draw per sample, shared by the ``n`` examples: the layer applied to ones.

    ``h`` is ``(T * n, ...)`` when ``tiled``, else the ``(n, ...)`` prefix activations, which
    the mask then broadcasts over (no separate tiling pass).
    """
    import tensorflow as tf

    feature_shape = tf.shape(h)[1:]
    mask = layer(tf.ones(tf.concat([[samples], feature_shape], 0), dtype=h.dtype), training=True)
    grouped = tf.reshape(h, tf.concat([[samples, n], feature_shape], 0)) if tiled else tf.expand_dims(h, 0)
    grouped = grouped * tf.expand_dims(mask, 1)  # (T, n, ...)
    return tf.reshape(grouped, tf.concat([[samples * n], feature_shape], 0))


def _compiled(model: keras.Sequential, split: int, *, suffix_kind: str, width: int, jit_compile: bool) -> tuple[Callable, Callable]:
    """The compiled (prefix, suffix) pair for ``model`` split at ``split``, cached.

    ``suffix_kind``: "tiled" (per-example masks), "shared" (one mask per sample, tiled
    activations) or "subnetworks" (one mask per sample, only the kept units computed).
    """
    import tensorflow as tf

    layers = _flat_layers(model)
    key = (tuple(id(layer) for layer in layers), split, suffix_kind, width, jit_compile)  # stale if layers change
    per_model = _COMPILED.setdefault(model, {})
    if key not in per_model:
        if suffix_kind == "subnetworks":
            run = subnetworks.suffix_fn(layers[split:], width)
        else:
            run = _suffix_fn(layers[split:], shared_masks=suffix_kind == "shared")
        prefix = tf.function(lambda x: _run_layers(layers[:split], x), reduce_retracing=True, jit_compile=jit_compile)
        suffix = tf.function(run, reduce_retracing=True, jit_compile=jit_compile)
        per_model[key] = (prefix, suffix)
    return per_model[key]


def _widths(layers: Sequence[Any], h: Any) -> tuple[int, int]:
    """Largest number of features per example among ``h`` and the outputs of ``layers``, and the output's."""
    widest = int(np.prod(h.shape[1:]))
    for layer in layers:
        if not _is_stochastic(layer):
            h = layer(h, training=False)
            widest = max(widest, int(np.prod(h.shape[1:])))
    return widest, int(np.prod(h.shape[1:]))


def _seed_generators(layers: Iterable[Any]) -> list[Any]:
    found: dict[int, Any] = {}
    for layer in layers:
        for generator in [getattr(layer, "seed_generator", None), *getattr(layer, "_seed_generators", [])]:
            if generator is not None and hasattr(generator, "state"):
                found[id(generator)] = generator
    return list(found.values())


class _Seeded:
    """Set the dropout layers' seed generators from ``seed`` for a block; restore them after."""

    def __init__(self, layers: Sequence[Any], seed: int | None) -> None:
        self.seed = seed
        self.generators = _seed_generators(layer for layer in layers if _is_stochastic(layer))
        self.saved: list[np.ndarray] = []

    def __enter__(self) -> _Seeded:
        if self.seed is None:
            return self
        if not self.generators:
            logger.warning("seed=%s not applied: the dropout layers have no keras SeedGenerator", self.seed)
        self.saved = [np.array(g.state.value) for g in self.generators]
        streams = np.random.SeedSequence(self.seed).generate_state(len(self.generators), dtype=np.uint32)
        for generator, stream, state in zip(self.generators, streams, self.saved, strict=True):
            generator.state.assign(np.array([int(stream) >> 1, 0], dtype=state.dtype))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.seed is None:
            return
        for generator, state in zip(self.generators, self.saved, strict=True):
            generator.state.assign(state)


def _chunk_rows(samples: int, width: int, max_elements: int, batch_size: int) -> int:
    """Rows per suffix call, so that ``samples * rows * width <= max_elements`` (at least 1)."""
    return max(1, min(batch_size, max_elements // max(1, samples * width)))


def mc_predict(
    model: keras.Sequential,
    x: np.ndarray,
    *,
    samples: int = 100,
    batch_size: int = 1024,
    max_elements: int = 2**22,
    seed: int | None = None,
    shared_masks: bool = False,
    subnetworks_ok: bool = True,
    jit_compile: bool = False,
    progress: Callable[[int, int, str], None] | None = None,
) -> MCResult:
    """``samples`` MC dropout forward passes of ``model`` over ``x``, fast.

    The layers before the first dropout layer run once per input, in batches of
    ``batch_size``, in inference mode. For the rest, each chunk of prefix activations is
    tiled ``samples`` times and run in one compiled call, dropout layers with
    ``training=True`` and all others with ``training=False`` (batch norm keeps and uses
    its moving statistics). Chunks are sized so that ``samples * rows * width`` stays
    under ``max_elements``, ``width`` being the widest activation of the suffix.

    ``seed`` sets the dropout layers' seed generators for the call (and restores them
    after), so the same seed, inputs, chunking (``batch_size``, ``max_elements``), device
    and TensorFlow version give the same samples bit for bit. Without a seed the layers'
    generators advance, so two calls differ.

    ``shared_masks=True`` draws one mask per MC sample and chunk for multiplicative
    dropout layers (Dropout, GaussianDropout), shared by the examples of the chunk (the
    "sampled network" view of MC dropout). Each example's predictive distribution is the
    same as with independent masks, and far fewer random numbers are drawn, which is
    where most of the time goes on CPU; but errors are correlated across the examples of
    a chunk. AlphaDropout layers always draw per-example noise. With shared masks, a dense
    suffix (Dropout, Dense, batch norm, PReLU, elementwise activations) runs as T sampled
    sub-networks that compute only the units each mask keeps (:mod:`pipelines.subnetworks`;
    the same numbers up to rounding, and fewer multiply-adds); ``subnetworks_ok=False`` forces
    the general path.

    ``progress(done, total, what)`` is called after each chunk, with examples done.

    ``jit_compile`` compiles with XLA; on CPU that is much slower (XLA's random number
    generation), so it is off by default.

    Returns ``MCResult`` with ``samples`` of shape ``(T, N, K)``, float32, K = 2 for a
    sigmoid output. A model without dropout gives T = 1 deterministic probabilities.
    The model must output probabilities (softmax or sigmoid), shape ``(N, K)``.
    """
    import tensorflow as tf

    _check_samples(samples)
    x = _float_inputs(x)
    if len(x) == 0:
        raise ValueError("inputs must hold at least one example, but got none")
    split = first_dropout_index(model)
    if split is None:
        logger.info("model has no dropout layer: MC sampling needs dropout, returning deterministic probabilities (T=1)")
        return MCResult(deterministic_predict(model, x, batch_size=batch_size)[None])

    layers = _flat_layers(model)
    head = _run_layers(layers[:split], tf.constant(x[:1]))
    widest, out_width = _widths(layers[split:], head)
    kind = "shared" if shared_masks else "tiled"
    if shared_masks and subnetworks_ok and head.shape.rank == 2 and subnetworks.supports(layers[split:], head.shape[1]):
        kind = "subnetworks"
        # one suffix call holds a chunk's activations for one sample at a time, and all samples' outputs
        rows = max(1, max_elements // max(widest, samples * out_width))
        block = max(rows, batch_size)
    else:
        rows = _chunk_rows(samples, widest, max_elements, batch_size)
        block = batch_size
    logger.debug("mc_predict: prefix of %d layers, %s suffix in chunks of %d rows x %d samples", split, kind, rows, samples)
    prefix, suffix = _compiled(model, split, suffix_kind=kind, width=int(np.prod(head.shape[1:])),
                               jit_compile=jit_compile)
    t = tf.constant(samples, dtype=tf.int32)
    out = np.empty((samples, len(x), out_width), dtype=np.float32)
    with _Seeded(layers[split:], seed):
        for start in range(0, len(x), block):
            stop = min(start + block, len(x))
            parts = [prefix(tf.constant(x[i : min(i + batch_size, stop)])) for i in range(start, stop, batch_size)]
            h = parts[0] if len(parts) == 1 else tf.concat(parts, 0)
            for offset in range(0, int(h.shape[0]), rows):
                probs = suffix(h[offset : offset + rows], t).numpy()
                at = start + offset
                out[:, at : at + probs.shape[1]] = probs.reshape(samples, probs.shape[1], out_width)
                if progress is not None:
                    progress(at + probs.shape[1], len(x), f"T={samples}")
    return MCResult(_to_probs(out))


# =========================================================================== plots


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
    count, accuracy, mean_conf = _reliability_table(p_mean, y, n_bins)
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
) -> Path:
    """Accuracy per confidence bin against the diagonal, with bin counts over the bars.

    One panel for the MC predictive mean and, when ``deterministic_probs`` is given, a
    second one beside it. Returns the PNG's path.
    """
    panels = [("MC dropout", _two_class_if_binary(p_mean))]
    if deterministic_probs is not None:
        panels.append(("deterministic", _two_class_if_binary(deterministic_probs)))
    figure, axes = _canvas(len(panels))
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


# =========================================================================== artifact


def save_predictions(
    path: str | Path,
    *,
    labels: np.ndarray,
    probs_mean: np.ndarray,
    probs_std: np.ndarray,
    entropy: np.ndarray,
    mutual_info: np.ndarray,
    deterministic_probs: np.ndarray,
) -> Path:
    """Write the predictions as a compressed ``.npz`` with exactly these six keys."""
    arrays = {
        "labels": np.asarray(labels),
        "probs_mean": np.asarray(probs_mean),
        "probs_std": np.asarray(probs_std),
        "entropy": np.asarray(entropy),
        "mutual_info": np.asarray(mutual_info),
        "deterministic_probs": np.asarray(deterministic_probs),
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
