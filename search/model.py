"""Build a compiled Keras model (a classifier or a regressor) from one trial config.

``build_model`` turns a flat trial config (the canonical keys of ``search.config``) into a
``keras.Sequential`` MLP: input, optional random shifts of image inputs (training only),
``Flatten``, optional input batch norm, ``n_hidden`` hidden layers and the task's head
(``search.tasks``), compiled with the configured optimizer and learning-rate schedule. The
techniques it covers are the ones of Géron's *Hands-On Machine Learning*, chapters 10 and 11:
activations and initializers, batch normalization before or after the activation, dropout and
alpha dropout, l1/l2 regularization, max-norm, the SGD/momentum/Nesterov/AdaGrad/RMSProp/Adam
family, and power/exponential/piecewise/plateau/1cycle schedules. It also holds the Monte Carlo
dropout layers (``MCDropout``, ``MCAlphaDropout``) and ``to_mc``, which turns a trained model
into one whose dropout stays on at inference.

This module imports Keras and nothing heavier: no Ray, no MLflow, so a config can be built
and trained in a notebook with Keras alone.

Layer names, in order (``i`` counts hidden layers from 1)::

    [augment_channels, augment_shift] (image inputs with augment_shift), flatten, [input_bn],
    per hidden layer:
      batch_norm none:   dense_i, [prelu_i], [dropout_i]
      batch_norm before: dense_i (no bias, no activation), bn_i, act_i | prelu_i, [dropout_i]
      batch_norm after:  dense_i (activation), [prelu_i], bn_i, [dropout_i]
    output, [target_units] (regression: back to the target's units)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from search.config import AUTO, TrialConfig, image_inputs
from search.errors import ConfigError
from search.losses import GaussianNLL, MeanMAE, MeanRMSE  # registered, so saved regressors load
from search.tasks import CLASSIFICATION, Output, get_task
from search.optimizers import (
    OneCycle,
    build_optimizer,
    build_schedule,
    schedule_callbacks,
)

__all__ = [
    "GaussianNLL",
    "MCAlphaDropout",
    "MCDropout",
    "MeanMAE",
    "MeanRMSE",
    "OneCycle",
    "augment_fraction",
    "build_model",
    "build_optimizer",
    "build_schedule",
    "compile_model",
    "execution_steps",
    "has_dropout",
    "hidden_widths",
    "inference_copy",
    "standardizes_inputs",
    "with_input_standardization",
    "schedule_callbacks",
    "to_mc",
]

# --------------------------------------------------------------------------- the model


def hidden_widths(config: Mapping[str, Any], n_classes: int) -> list[int]:
    """Units of each hidden layer.

    ``constant``: every layer has ``n_neurons``. ``funnel``: each layer halves the one
    before (``n_neurons // 2**i``: 300-150-75, in the spirit of Géron's 300-100), but never
    drops below the number of classes (nor below 1); the first layer is always ``n_neurons``.
    """
    cfg = TrialConfig.of(config)
    n, width = cfg.n_hidden, cfg.n_neurons
    if cfg.width_shape == "constant":
        return [width] * n
    floor = max(1, min(width, n_classes))
    return [max(width // 2**i, floor) for i in range(n)]


def _kernel_regularizer(l1: float, l2: float) -> keras.regularizers.Regularizer | None:
    if l1 > 0 and l2 > 0:
        return keras.regularizers.L1L2(l1=l1, l2=l2)
    if l1 > 0:
        return keras.regularizers.L1(l1)
    if l2 > 0:
        return keras.regularizers.L2(l2)
    return None


def as_output(output: int | Output) -> Output:
    """``output`` as an ``Output``: a number of classes means a classifier."""
    return output if isinstance(output, Output) else Output(CLASSIFICATION, int(output))


def build_model(
    config: Mapping[str, Any],
    input_shape: tuple[int, ...],
    output: int | Output,
    *,
    steps_per_epoch: int = 1,
    seed: int | None = None,
) -> keras.Sequential:
    """A compiled ``keras.Sequential`` for ``config``, ready to fit.

    ``output`` is the number of classes (a classifier) or an ``Output`` (``Dataset.output``).
    A classifier with ``n_classes > 2`` ends in a softmax with ``sparse_categorical_crossentropy``
    (integer labels); with 2, in one sigmoid unit with ``binary_crossentropy``; either way the
    accuracy metric is named ``accuracy``. A regressor's head is described in ``search.tasks``.
    The kernel regularizer (l1, l2 or both) applies to every Dense kernel, the output's included,
    as in Géron; the max-norm constraint applies to the hidden layers. ``steps_per_epoch``
    converts the schedule's epochs to optimizer steps. ``seed`` seeds Python, NumPy and the
    backend before building.
    """
    cfg = TrialConfig.of(config)
    out = as_output(output)
    task = get_task(out.task)
    loss = task.loss_of(cfg.loss)
    if out.task == CLASSIFICATION and out.n_classes < 2:
        raise ConfigError(f"n_classes >= 2 must hold, but got {out.n_classes}")
    if seed is not None:
        keras.utils.set_random_seed(seed)
    model = keras.Sequential(name="mlp")
    model.add(keras.Input(shape=tuple(input_shape)))
    for layer in _augment_layers(cfg, tuple(input_shape), seed):
        model.add(layer)
    model.add(keras.layers.Flatten(name="flatten"))
    if cfg.input_batch_norm:
        model.add(keras.layers.BatchNormalization(momentum=float(cfg.bn_momentum), name="input_bn"))
    for i, units in enumerate(hidden_widths(cfg, max(out.n_classes, 1)), start=1):
        for layer in _hidden_block(cfg, i, units):
            model.add(layer)
    for layer in task.head(out, loss, _kernel_kwargs(cfg, hidden=False)):
        model.add(layer)
    compile_model(model, cfg, out, steps_per_epoch=steps_per_epoch)
    return model


def augment_fraction(config: Mapping[str, Any], input_shape: tuple[int, ...]) -> float:
    """The largest random shift, as a fraction of height and width: ``augment_shift``, or with ``auto``
    one pixel (of the shorter side) for image inputs and 0 for flat features.

    Image inputs are 2-D (height, width) or 3-D (height, width, channels). An explicit shift on
    flat features is a mistake (there is no neighbouring pixel to shift to), so it is refused.
    """
    value = TrialConfig.of(config).augment_shift
    image = image_inputs(input_shape)
    if value == AUTO:
        return 1.0 / min(input_shape[0], input_shape[1]) if image else 0.0
    if value > 0 and not image:
        raise ConfigError(f"augment_shift={value} needs image inputs (height, width[, channels]), but the inputs "
                          f"have shape {tuple(input_shape)}; set augment_shift: 0 (or auto) for flat features")
    return float(value)


def _augment_layers(cfg: TrialConfig, input_shape: tuple[int, ...], seed: int | None) -> list[keras.layers.Layer]:
    """``RandomTranslation`` by up to ``augment_fraction``, on a channels view of 2-D images.

    Keras applies it in training only: ``predict``, ``evaluate``, serving and MC dropout (which
    calls every other layer with ``training=False``) see the images as they are. Like every Keras
    random preprocessing layer, a bare ``model(x)`` with no ``training`` argument counts as
    training. The emptied border repeats the nearest edge pixel, which is right whether or not
    the inputs are standardized.
    """
    fraction = augment_fraction(cfg, input_shape)
    if fraction == 0:
        return []
    layers: list[keras.layers.Layer] = []
    if len(input_shape) == 2:
        layers.append(keras.layers.Reshape((*input_shape, 1), name="augment_channels"))
    layers.append(keras.layers.RandomTranslation(fraction, fraction, fill_mode="nearest", interpolation="nearest",
                                                 seed=seed, name="augment_shift"))
    return layers


def compile_model(model: keras.Model, config: Mapping[str, Any], output: int | Output, *, steps_per_epoch: int = 1,
                  lr_factor: float = 1.0) -> None:
    """(Re)compile ``model`` with the config's optimizer and schedule, its learning rate times ``lr_factor``
    (a transferred model compiles again once its copied layers are unfrozen), and its task's loss and metrics."""
    cfg = TrialConfig.of(config)
    if lr_factor != 1.0:
        cfg = cfg.replace(learning_rate=cfg.learning_rate * lr_factor)
    out = as_output(output)
    task = get_task(out.task)
    model.compile(optimizer=build_optimizer(cfg, steps_per_epoch=steps_per_epoch),
                  **task.compile_args(out, task.loss_of(cfg.loss)),
                  steps_per_execution=execution_steps(cfg, steps_per_epoch))
    # Left to Keras, the optimizer's variables are made inside the first traced train step, and a
    # tf.function that makes variables is traced twice: built here, each new model's first epoch is
    # about 0.3 s shorter on digits (docs/benchmarks.md), with the same variables and the same updates.
    model.optimizer.build(model.trainable_variables)


def inference_copy(model: keras.Model) -> keras.Model:
    """``model`` without its training state: the same layers and weights, not compiled.

    A compiled model saves its optimizer, loss and metrics with it, and loading them needs this
    project's own schedule (1cycle) and a regressor's losses and metrics imported first; Keras
    imports only its own modules, so ``mlflow.keras.load_model`` and ``mlflow models serve`` fail
    on such a model in any other process. The copy loads with Keras alone and predicts the same.
    """
    if not getattr(model, "compiled", False):
        return model
    copy = type(model).from_config(model.get_config())
    copy.set_weights(model.get_weights())
    return copy


STANDARDIZE_LAYER = "input_standardize"


def with_input_standardization(model: keras.Sequential, mean: Any, scale: Any) -> keras.Sequential:
    """An uncompiled copy of ``model`` that standardizes its own inputs first: ``(x - mean) / scale``, the
    statistics the ``standardize`` option applied to its training data outside the model. Logged this way, a
    model trained with ``standardize: true`` takes raw inputs, as its signature and ``mlflow models serve`` say."""
    import numpy as np

    config = model.get_config()
    layers = list(config["layers"])
    first = 1 if layers and layers[0]["class_name"] == "InputLayer" else 0
    mean = np.asarray(mean, dtype="float32")
    norm = keras.layers.Normalization(axis=tuple(range(1, mean.ndim + 1)), mean=mean,  # one statistic per feature
                                      variance=np.square(np.asarray(scale, dtype="float32")), name=STANDARDIZE_LAYER)
    layers.insert(first, keras.saving.serialize_keras_object(norm))
    copy = keras.Sequential.from_config({**config, "layers": layers})
    for layer in model.layers:
        copy.get_layer(layer.name).set_weights(layer.get_weights())
    return copy


def standardizes_inputs(model: Any) -> bool:
    """Whether ``model`` (a logged retrain model or ensemble member) standardizes its own inputs."""
    return any(layer.name == STANDARDIZE_LAYER for layer in getattr(model, "layers", []))


def execution_steps(config: Mapping[str, Any], steps_per_epoch: int) -> int:
    """Training steps per compiled call: ``steps_per_execution``, or with ``auto`` one whole epoch.

    Small nets spend most of an epoch in Keras's per-step dispatch (and, on a GPU, in kernel
    launches); running the epoch's steps in one compiled loop removes it and changes no number:
    the same batches, in the same order, through the same updates. Keras never runs more than an
    epoch per call, and calls the batch callbacks once per call, so the NaN guard still stops in
    the epoch where the loss became NaN.
    """
    value = TrialConfig.of(config).steps_per_execution
    return max(1, int(steps_per_epoch)) if value == AUTO else int(value)


def _kernel_kwargs(cfg: TrialConfig, *, hidden: bool) -> dict[str, Any]:
    """Regularizer on every Dense kernel; the configured initializer and max-norm on the hidden ones."""
    kw: dict[str, Any] = {"kernel_regularizer": _kernel_regularizer(float(cfg.l1), float(cfg.l2))}
    if not hidden:
        return {**kw, "kernel_initializer": "glorot_uniform"}
    kw["kernel_initializer"] = cfg.initializer
    if cfg.max_norm is not None:
        kw["kernel_constraint"] = keras.constraints.MaxNorm(float(cfg.max_norm))
    return kw


def _hidden_block(cfg: TrialConfig, i: int, units: int) -> list[keras.layers.Layer]:
    """Hidden layer ``i``: Dense, its activation and batch norm in the configured order, then dropout."""
    layers, activation, momentum = keras.layers, cfg.activation, float(cfg.bn_momentum)
    prelu = activation == "prelu"
    block: list[keras.layers.Layer] = []
    if cfg.batch_norm == "before":
        block.append(layers.Dense(units, use_bias=False, name=f"dense_{i}", **_kernel_kwargs(cfg, hidden=True)))
        block.append(layers.BatchNormalization(momentum=momentum, name=f"bn_{i}"))
        block.append(layers.PReLU(name=f"prelu_{i}") if prelu else layers.Activation(activation, name=f"act_{i}"))
    else:
        block.append(layers.Dense(units, activation=None if prelu else activation, name=f"dense_{i}",
                                  **_kernel_kwargs(cfg, hidden=True)))
        if prelu:
            block.append(layers.PReLU(name=f"prelu_{i}"))
        if cfg.batch_norm == "after":
            block.append(layers.BatchNormalization(momentum=momentum, name=f"bn_{i}"))
    if cfg.dropout > 0:
        kind = layers.AlphaDropout if cfg.dropout_kind == "alpha" else layers.Dropout
        block.append(kind(float(cfg.dropout), name=f"dropout_{i}"))
    return block


# --------------------------------------------------------------------------- MC dropout


@keras.saving.register_keras_serializable(package="search")
class MCDropout(keras.layers.Dropout):
    """Dropout that stays on at inference, for Monte Carlo dropout (Gal & Ghahramani 2016)."""

    def call(self, inputs, training=None):
        return super().call(inputs, training=True)


@keras.saving.register_keras_serializable(package="search")
class MCAlphaDropout(keras.layers.AlphaDropout):
    """Alpha dropout that stays on at inference, for MC dropout in self-normalizing nets."""

    def call(self, inputs, training=None):
        return super().call(inputs, training=True)


def _dropout_types() -> tuple[type, ...]:
    return (keras.layers.Dropout, keras.layers.AlphaDropout)


def _walk(model: keras.Model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _walk(layer)


def has_dropout(model: keras.Model) -> bool:
    """Whether ``model`` holds a dropout layer (standard, alpha, or MC) with a rate above 0."""
    return any(isinstance(layer, _dropout_types()) and layer.rate > 0 for layer in _walk(model))


def to_mc(model: keras.Model) -> keras.Model:
    """A copy of ``model`` with the same weights whose dropout layers stay on at inference.

    ``Dropout`` becomes ``MCDropout`` and ``AlphaDropout`` becomes ``MCAlphaDropout``;
    every other layer is cloned as it is. Batch norm keeps running in inference mode (its
    moving statistics are used and left alone), so ``mc(x)`` or ``mc.predict(x)`` repeated
    over the same ``x`` samples the dropout posterior only. The copy is not compiled.
    """

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        layer_config = layer.get_config()
        if isinstance(layer, (MCDropout, MCAlphaDropout)):
            return layer.__class__.from_config(layer_config)
        if isinstance(layer, keras.layers.AlphaDropout):
            return MCAlphaDropout.from_config(layer_config)
        if isinstance(layer, keras.layers.Dropout):
            return MCDropout.from_config(layer_config)
        return layer.__class__.from_config(layer_config)

    mc = keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(_walk(model), _walk(mc), strict=True):
        new.set_weights(old.get_weights())
    return mc
