"""Monte Carlo dropout sampling: many stochastic forward passes of a Keras model, cheaply.

The metrics of the samples are in ``pipelines.uncertainty``, their plots in ``pipelines.mc_plots``.

* **Sampling**: :func:`mc_predict` draws ``T`` stochastic forward passes of a
  ``keras.Sequential`` cheaply. The layers before the first dropout layer are
  deterministic, so they run once per input; only the rest of the network (the
  *suffix*) runs ``T`` times, on the prefix activations tiled ``T`` times, in one compiled
  call per chunk. Dropout layers (``keras.layers.Dropout``, ``AlphaDropout``,
  ``GaussianDropout`` and their subclasses, such as ``search.model.MCDropout``) are called
  with ``training=True``, every other layer with ``training=False``, so batch norm uses its
  moving statistics and never updates them. :func:`mc_predict_naive` is the loop the
  notebooks used (``model(x, training=True)`` ``T`` times): the baseline of the benchmark.
Keras and TensorFlow are imported inside the sampling functions.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from pipelines import subnetworks  # TF is imported inside its functions only
from pipelines.uncertainty import binary_to_two_class, entropy, mutual_information

if TYPE_CHECKING:  # pragma: no cover
    import keras

logger = logging.getLogger(__name__)

__all__ = [
    "MCResult",
    "deterministic_predict",
    "first_dropout_index",
    "has_dropout",
    "mc_predict",
    "mc_predict_naive",
]


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


def deterministic_predict(model: keras.Sequential, x: np.ndarray, batch_size: int = 1024, *, raw: bool = False) -> np.ndarray:
    """Probabilities ``(N, K)`` with dropout off (K = 2 for sigmoid models; ``raw``: the outputs as
    they are, as for a regressor).

    Dropout layers are skipped rather than called, so MC layers that ignore ``training``
    (``search.model.MCDropout``) are off too; batch norm runs in inference mode.
    """
    import keras

    x = _float_inputs(x)
    layers = _flat_layers(model)
    outs = [
        keras.ops.convert_to_numpy(_run_layers(layers, x[i : i + batch_size])) for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outs).astype(np.float32) if raw else _to_probs(np.concatenate(outs))


def mc_predict_naive(model: keras.Model, x: np.ndarray, *, samples: int = 100, batch_size: int | None = None) -> MCResult:
    """The notebooks' MC dropout: ``T`` times ``model(x, training=True)``.

    The baseline :func:`mc_predict` is benchmarked against. ``batch_size=None`` feeds the
    whole array at once, as the notebooks did. Note that ``training=True`` also puts batch
    norm in training mode (batch statistics, and moving statistics updated), so for models
    with batch norm (or shifted image inputs, ``augment_shift``) this samples a different
    distribution than :func:`mc_predict`.
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
    raw: bool = False,
) -> MCResult:
    """
    # One function on purpose: the chunk loop shares the compiled prefix/suffix, the seeded generators
    # and the progress count, and reads best top to bottom as the algorithm the docstring states.``samples`` MC dropout forward passes of ``model`` over ``x``, fast.

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
    The model must output probabilities (softmax or sigmoid), shape ``(N, K)``; with ``raw`` the
    outputs are returned as they are (a regressor's mean, and log variance).
    """
    import tensorflow as tf

    _check_samples(samples)
    x = _float_inputs(x)
    if len(x) == 0:
        raise ValueError("inputs must hold at least one example, but got none")
    split = first_dropout_index(model)
    if split is None:
        logger.info("model has no dropout layer: MC sampling needs dropout, returning deterministic probabilities (T=1)")
        return MCResult(deterministic_predict(model, x, batch_size=batch_size, raw=raw)[None])

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
    return MCResult(out if raw else _to_probs(out))
