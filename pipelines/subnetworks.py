"""MC dropout for dense nets as T sampled sub-networks: compute only the units dropout keeps.

With one dropout mask per MC sample, shared by a chunk of examples (``mc_predict(...,
shared_masks=True)``), sample t is a fixed, thinner network. The units a dropout layer drops
contribute nothing: the Dense layer after it needs only the kernel rows of the kept inputs, and
the Dense layer before it only the kernel columns of the units that will be kept. For
Dropout(0.2) on both sides of a Dense layer that is 0.8 × 0.8 of its multiply-adds, and no
masked copy of the activations is ever written. Activations are held transposed, (features,
examples), so that taking the kept features copies whole contiguous rows.

The result is the same, up to float rounding, as running the suffix with the same masks.

Supported suffixes (the layers from the first dropout layer on): ``Dropout`` (no
``noise_shape``), ``Dense``, ``BatchNormalization`` (inference mode, last axis), ``PReLU`` with
one alpha per feature, and elementwise activations (``Activation``, ``ReLU``, ``LeakyReLU``,
``ELU``, or a Dense layer's own activation), up to the first Dense layer after the last dropout
layer; what comes after that runs as usual. ``supports`` says whether a suffix qualifies;
anything else (``AlphaDropout``, ``GaussianDropout``, convolutions, a softmax before the last
dropout) takes the general path in :mod:`pipelines.mc_dropout`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# Activations that act on each feature alone, so that they commute with taking a subset of features.
ELEMENTWISE = frozenset({
    "linear", "relu", "relu6", "elu", "selu", "gelu", "silu", "swish", "tanh", "sigmoid", "softplus", "softsign",
    "leaky_relu", "hard_sigmoid", "hard_silu", "hard_swish", "exponential", "mish", "celu", "hard_tanh", "tanh_shrink",
})  # fmt: skip


def _elementwise(fn: Any) -> bool:
    return getattr(fn, "__name__", None) in ELEMENTWISE


def _kind(layer: Any, width: int) -> str | None:
    """What the sub-network path does with ``layer`` (input ``width`` features), or None if it cannot."""
    import keras

    L = keras.layers
    if isinstance(layer, (L.AlphaDropout, L.GaussianDropout, L.GaussianNoise)):
        return None
    if isinstance(layer, L.Dropout):
        return "dropout" if getattr(layer, "noise_shape", None) is None else None
    if isinstance(layer, L.Dense):
        return "dense" if getattr(layer, "kernel", None) is not None and len(layer.kernel.shape) == 2 else None
    if isinstance(layer, L.BatchNormalization):
        return "batch_norm" if layer.axis in (-1, 1) else None
    if isinstance(layer, L.PReLU):
        return "prelu" if tuple(layer.alpha.shape) == (width,) else None
    if isinstance(layer, L.Activation):
        return "elementwise" if _elementwise(layer.activation) else None
    if isinstance(layer, (L.ReLU, L.LeakyReLU, L.ELU)):
        return "elementwise"
    return None


@dataclass(frozen=True)
class _Step:
    layer: Any
    kind: str
    mask: int | None = None  # dropout: its mask's number; dense: the mask that picks its output units
    last: bool = False  # the Dense layer after the last dropout: its output is whole, in (examples, features)


def _plan(layers: Sequence[Any], width: int) -> tuple[list[_Step], list[Any]] | None:
    """The sparse steps and the plain tail of ``layers``, or None if the suffix is not supported."""
    dropouts = [i for i, layer in enumerate(layers) if _kind(layer, 0) == "dropout"]
    if not dropouts or dropouts[0] != 0:
        return None
    after_last = next((i for i in range(dropouts[-1] + 1, len(layers)) if _kind(layers[i], 0) == "dense"), None)
    if after_last is None:
        return None
    kinds = []
    for layer in layers[: after_last + 1]:
        kind = _kind(layer, width)
        if kind is None:
            return None
        kinds.append(kind)
        if kind == "dense":
            width = int(layer.kernel.shape[1])
    for i in dropouts[1:]:  # each later dropout must follow a Dense layer, which computes only its kept units
        if next(kinds[j] for j in range(i - 1, -1, -1) if kinds[j] in ("dropout", "dense")) != "dense":
            return None
    mask_of = {i: n for n, i in enumerate(dropouts)}
    steps = []
    for i, (layer, kind) in enumerate(zip(layers[: after_last + 1], kinds, strict=True)):
        if kind == "dropout":
            steps.append(_Step(layer, kind, mask=mask_of[i]))
        elif kind == "dense":
            last = i == after_last
            # the dropout layer this Dense layer's units reach through elementwise layers only, if any
            nxt = next((j for j in range(i + 1, after_last + 1) if kinds[j] in ("dropout", "dense")), None)
            mask = mask_of[nxt] if nxt is not None and kinds[nxt] == "dropout" else None
            if not last and not _elementwise(layer.activation):
                return None
            steps.append(_Step(layer, kind, mask=mask, last=last))
        else:
            steps.append(_Step(layer, kind))
    return steps, list(layers[after_last + 1 :])


def supports(layers: Sequence[Any], width: int) -> bool:
    """Whether the suffix ``layers`` (from the first dropout on), fed ``width`` features, can run as sub-networks."""
    return _plan(layers, width) is not None


def _affine(layer: Any) -> tuple[Any, Any]:
    """Batch norm in inference mode as ``x * scale + shift``, per feature."""
    import tensorflow as tf

    scale = tf.math.rsqrt(tf.convert_to_tensor(layer.moving_variance) + layer.epsilon)
    if layer.gamma is not None:
        scale = scale * tf.convert_to_tensor(layer.gamma)
    shift = -tf.convert_to_tensor(layer.moving_mean) * scale
    if layer.beta is not None:
        shift = shift + tf.convert_to_tensor(layer.beta)
    return scale, shift


def _take(v: Any, idx: Any, axis: int = 0) -> Any:
    import tensorflow as tf

    return v if idx is None else tf.gather(v, idx, axis=axis)


def suffix_fn(layers: Sequence[Any], width: int) -> Callable[[Any, Any], Any]:
    """``f(h, T) -> (T, n, K)``: T sampled sub-networks applied to the prefix activations ``h`` (n, width)."""
    import tensorflow as tf

    planned = _plan(layers, width)
    if planned is None:
        raise ValueError("this suffix cannot run as sub-networks; check supports() first")
    steps, tail = planned

    def one_sample(h_t: Any, masks: list[Any]) -> Any:
        """Sample t: ``h_t`` is (width, n); ``masks`` hold this sample's (values, kept indices) per dropout."""
        x, idx = h_t, None  # idx: which features x holds, None for all
        for step in steps:
            layer = step.layer
            if step.kind == "dropout":
                values, kept = masks[step.mask]
                if idx is None:
                    x = tf.gather(x, kept)
                x = x * tf.gather(values, kept)[:, None]  # 1 / (1 - rate) on the kept units
                idx = kept
            elif step.kind == "dense":
                out = None if step.mask is None else masks[step.mask][1]
                kernel = _take(_take(tf.convert_to_tensor(layer.kernel), idx), out, axis=1)
                bias = None if layer.bias is None else _take(tf.convert_to_tensor(layer.bias), out)
                if step.last:  # back to (examples, features) for the tail
                    x = tf.matmul(x, kernel, transpose_a=True)
                    x = layer.activation(x if bias is None else x + bias)
                else:
                    x = tf.matmul(kernel, x, transpose_a=True)
                    x = layer.activation(x if bias is None else x + bias[:, None])
                idx = out
            elif step.kind == "batch_norm":
                scale, shift = _affine(layer)
                x = x * _take(scale, idx)[:, None] + _take(shift, idx)[:, None]
            elif step.kind == "prelu":
                alpha = _take(tf.convert_to_tensor(layer.alpha), idx)
                x = tf.nn.relu(x) + alpha[:, None] * tf.minimum(x, 0.0)
            else:  # elementwise
                x = layer(x)
        for layer in tail:
            x = layer(x, training=False)
        return x

    widths = _dropout_widths(steps, width)

    def run(h: Any, samples: Any) -> Any:
        hT = tf.transpose(h)
        # one mask per sample and dropout layer: 0 or 1 / (1 - rate) per unit, drawn by the layer itself
        drawn = [layer(tf.ones(tf.stack([samples, w]), dtype=h.dtype), training=True) for layer, w in widths]
        out = tf.TensorArray(h.dtype, size=samples)
        for t in tf.range(samples):
            masks = [(m[t], tf.where(m[t] > 0)[:, 0]) for m in drawn]
            out = out.write(t, one_sample(hT, masks))
        return out.stack()

    return run


def _dropout_widths(steps: Sequence[_Step], width: int) -> list[tuple[Any, int]]:
    """Each dropout layer, in order, with the number of features it sees."""
    widths = []
    for step in steps:
        if step.kind == "dropout":
            widths.append((step.layer, width))
        elif step.kind == "dense":
            width = int(step.layer.kernel.shape[1])
    return widths
