"""Transfer learning: a new model reuses the lower hidden layers of an earlier one.

``source_layers(model)`` takes the hidden layers' weights of a trained model (by the layer names
``search.model`` gives: ``dense_i``, ``bn_i``, ``prelu_i``), as plain arrays that travel to Ray's
workers. ``copy_layers(model, source, n)`` puts the first ``n`` hidden layers' weights into a new
model built for the new task, after checking that the input and the widths fit; the output
layer is always new (sized for the new task's classes). ``search.train.fit`` then trains the
copied layers frozen for ``freeze_epochs`` epochs, and all layers after that at the learning
rate times ``unfreeze_lr_factor`` (Géron, ch. 11). Keras only: no Ray, no MLflow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from search.errors import ConfigError

Weights = dict[str, list[Any]]  # layer name -> its weights (numpy arrays)
_HIDDEN = re.compile(r"(dense|bn|prelu)_(\d+)$")


def source_layers(model: Any) -> Weights:
    """The weights of every hidden layer of ``model`` (a ``search.model`` MLP), by layer name."""
    out: Weights = {}
    for layer in model.layers:
        if _HIDDEN.match(layer.name) and layer.get_weights():
            out[layer.name] = [w.copy() for w in layer.get_weights()]
    if "dense_1" not in out:
        raise ConfigError("the source model has no hidden layer named dense_1: transfer needs a model that search built")
    return out


def source_depth(source: Mapping[str, list[Any]]) -> int:
    """How many hidden layers the source has."""
    return max(int(m.group(2)) for name in source if (m := _HIDDEN.match(name)))


def copy_layers(model: Any, source: Mapping[str, list[Any]], n: int) -> list[str]:
    """Copy the first ``n`` hidden layers of ``source`` into ``model``; returns the copied layers' names."""
    if n > source_depth(source):
        raise ConfigError(f"reuse_layers={n}, but the source model has {source_depth(source)} hidden layers")
    copied = []
    for layer in model.layers:
        match = _HIDDEN.match(layer.name)
        if not match or int(match.group(2)) > n:
            continue
        if layer.name not in source:
            raise ConfigError(f"the source model has no layer {layer.name}: reuse_layers needs the same batch-norm "
                              "placement and activation family (prelu) as the source")
        shapes = [tuple(w.shape) for w in layer.get_weights()]
        given = [tuple(w.shape) for w in source[layer.name]]
        if shapes != given:
            what = "inputs" if layer.name == "dense_1" and shapes and given and shapes[0][0] != given[0][0] else "widths"
            raise ConfigError(f"layer {layer.name} does not fit: the source's weights have shapes {given}, the new "
                              f"model's {shapes}; the {what} must match (same input features and n_neurons)")
        layer.set_weights(source[layer.name])
        copied.append(layer.name)
    return copied


def hidden_layers(model: Any, n: int) -> list[str]:
    """The names of the layers of hidden layers 1..``n`` of a ``search.model`` MLP."""
    return [layer.name for layer in model.layers if (m := _HIDDEN.match(layer.name)) and int(m.group(2)) <= n]


def set_frozen(model: Any, names: list[str], frozen: bool) -> None:
    for layer in model.layers:
        if layer.name in names:
            layer.trainable = not frozen
