"""Build a compiled Keras classifier from one trial config.

``build_model`` turns a flat trial config (the canonical keys of ``search.config``) into a
``keras.Sequential`` MLP: input, ``Flatten``, optional input batch norm, ``n_hidden`` hidden
layers and a classification head, compiled with the configured optimizer and learning-rate
schedule. The techniques it covers are the ones of Géron's *Hands-On Machine Learning*,
chapters 10 and 11: activations and initializers, batch normalization before or after the
activation, dropout and alpha dropout, l1/l2 regularization, max-norm, the SGD/momentum/
Nesterov/AdaGrad/RMSProp/Adam family, and power/exponential/piecewise/plateau/1cycle
schedules. It also holds the Monte Carlo dropout layers (``MCDropout``, ``MCAlphaDropout``)
and ``to_mc``, which turns a trained model into one whose dropout stays on at inference.

This module imports Keras and nothing heavier: no Ray, no MLflow, so a config can be built
and trained in a notebook with Keras alone.

Layer names, in order (``i`` counts hidden layers from 1)::

    flatten, [input_bn],
    per hidden layer:
      batch_norm none:   dense_i, [prelu_i], [dropout_i]
      batch_norm before: dense_i (no bias, no activation), bn_i, act_i | prelu_i, [dropout_i]
      batch_norm after:  dense_i (activation), [prelu_i], bn_i, [dropout_i]
    output
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras

from search import config as config_module
from search.errors import ConfigError

__all__ = [
    "MCAlphaDropout",
    "MCDropout",
    "OneCycle",
    "build_model",
    "build_optimizer",
    "build_schedule",
    "has_dropout",
    "hidden_widths",
    "schedule_callbacks",
    "to_mc",
]

_DEFAULTS = config_module.DEFAULTS

# Fractions of the run for the 1cycle phases (Smith 2018, as in Géron ch. 11): warm up over
# the first 45%, come back down over the next 45%, annihilate over the last 10%.
_ONE_CYCLE_UP = 0.45
_ONE_CYCLE_DOWN = 0.90


def _get(cfg: Mapping[str, Any], key: str) -> Any:
    """``cfg[key]``, or the key's default where ``resolve`` dropped it as not applying."""
    value = cfg.get(key)
    return _DEFAULTS[key] if value is None else value


# --------------------------------------------------------------------------- schedules


@keras.saving.register_keras_serializable(package="search")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Smith's 1cycle learning rate, counted in optimizer steps.

    With ``L = max(total_steps - 1, 1)`` the index of the run's last step:

    * steps ``0 .. 0.45 L``: linear warm-up from ``initial_lr`` to ``max_lr``;
    * steps ``0.45 L .. 0.9 L``: linear back down from ``max_lr`` to ``initial_lr``;
    * steps ``0.9 L .. L``: linear annihilation from ``initial_lr`` to ``final_lr``
      (``initial_lr / 1000`` unless given), which the last step uses; later steps stay there.

    Written with ``keras.ops`` so it runs inside a compiled train step.
    """

    def __init__(
        self,
        initial_lr: float,
        max_lr: float,
        total_steps: int,
        final_lr: float | None = None,
        name: str = "OneCycle",
    ):
        super().__init__()
        if total_steps < 1:
            raise ValueError(f"OneCycle: total_steps >= 1 must hold, but got {total_steps}")
        self.initial_lr = float(initial_lr)
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.final_lr = float(initial_lr) / 1000.0 if final_lr is None else float(final_lr)
        self.name = name

    def __call__(self, step):
        ops = keras.ops
        last = float(max(self.total_steps - 1, 1))
        up_end = _ONE_CYCLE_UP * last
        down_end = _ONE_CYCLE_DOWN * last
        t = ops.minimum(ops.cast(step, "float32"), last)
        lr0, peak, final = self.initial_lr, self.max_lr, self.final_lr
        # each phase is written from the end it lands on, so that end is exact in float32
        up = lr0 + (peak - lr0) * t / up_end
        down = lr0 + (peak - lr0) * (down_end - t) / (down_end - up_end)
        anneal = final + (lr0 - final) * (last - t) / (last - down_end)
        return ops.where(t <= up_end, up, ops.where(t <= down_end, down, anneal))

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_lr": self.initial_lr,
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "final_lr": self.final_lr,
            "name": self.name,
        }


def build_schedule(
    config: Mapping[str, Any], *, steps_per_epoch: int = 1
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The learning rate the optimizer gets: a float, or a schedule over optimizer steps.

    ``t`` counts optimizer steps and ``s = schedule_epochs * steps_per_epoch``:

    * ``constant`` and ``plateau``: ``learning_rate`` (plateau adds a callback, see
      ``schedule_callbacks``);
    * ``power``: ``lr0 / (1 + t/s)`` (``InverseTimeDecay``);
    * ``exponential``: ``lr0 * 0.1 ** (t/s)`` (``ExponentialDecay``);
    * ``piecewise``: ``lr0 * schedule_factor ** floor(t/s)``, with drops listed up to the
      run's ``epochs`` (``PiecewiseConstantDecay``; Keras keeps a value while
      ``step <= boundary``, so the boundaries are ``ceil(k*s) - 1``);
    * ``one_cycle``: ``OneCycle`` over ``epochs * steps_per_epoch`` steps, peaking at
      ``schedule_max_lr``.
    """
    cfg = config_module.resolve(config)
    if steps_per_epoch < 1:
        raise ConfigError(f"steps_per_epoch >= 1 must hold, but got {steps_per_epoch}")
    lr0 = float(cfg["learning_rate"])
    kind = cfg["lr_schedule"]
    schedules = keras.optimizers.schedules
    if kind in ("constant", "plateau"):
        return lr0
    if kind in ("power", "exponential", "piecewise"):
        s = float(_get(cfg, "schedule_epochs")) * steps_per_epoch
        if kind == "power":
            return schedules.InverseTimeDecay(lr0, decay_steps=s, decay_rate=1.0)
        if kind == "exponential":
            return schedules.ExponentialDecay(lr0, decay_steps=s, decay_rate=0.1)
        factor = float(_get(cfg, "schedule_factor"))
        n_drops = max(1, math.ceil(cfg["epochs"] / float(_get(cfg, "schedule_epochs"))) - 1)
        boundaries = [max(math.ceil(k * s) - 1, 0) for k in range(1, n_drops + 1)]
        values = [lr0 * factor**k for k in range(n_drops + 1)]
        return schedules.PiecewiseConstantDecay(boundaries=boundaries, values=values)
    if kind == "one_cycle":
        return OneCycle(
            initial_lr=lr0,
            max_lr=float(_get(cfg, "schedule_max_lr")),
            total_steps=int(cfg["epochs"]) * steps_per_epoch,
        )
    raise ConfigError(f"lr_schedule={kind!r}: lr_schedule must be one of {', '.join(config_module.SCHEDULES)}")


def schedule_callbacks(config: Mapping[str, Any]) -> list[keras.callbacks.Callback]:
    """Callbacks the schedule needs: ``ReduceLROnPlateau`` for ``plateau``, else none."""
    cfg = config_module.resolve(config)
    if cfg["lr_schedule"] != "plateau":
        return []
    return [
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss",
            factor=float(_get(cfg, "schedule_factor")),
            patience=int(_get(cfg, "schedule_patience")),
        )
    ]


# --------------------------------------------------------------------------- optimizers


def build_optimizer(config: Mapping[str, Any], *, steps_per_epoch: int = 1) -> keras.optimizers.Optimizer:
    """The configured optimizer, with the configured schedule as its learning rate."""
    cfg = config_module.resolve(config)
    name = cfg["optimizer"]
    clip: dict[str, float] = {}
    if cfg.get("clipnorm") is not None and cfg.get("clipvalue") is not None:
        raise ConfigError(
            f"clipnorm={cfg['clipnorm']!r} and clipvalue={cfg['clipvalue']!r} are both set, "
            "but Keras optimizers accept only one of them"
        )
    if cfg.get("clipnorm") is not None:
        clip["clipnorm"] = float(cfg["clipnorm"])
    if cfg.get("clipvalue") is not None:
        clip["clipvalue"] = float(cfg["clipvalue"])
    lr = build_schedule(cfg, steps_per_epoch=steps_per_epoch)
    opt = keras.optimizers
    betas = {"beta_1": float(_get(cfg, "beta_1")), "beta_2": float(_get(cfg, "beta_2"))}
    if name == "sgd":
        return opt.SGD(learning_rate=lr, **clip)
    if name == "momentum":
        return opt.SGD(learning_rate=lr, momentum=float(_get(cfg, "momentum")), **clip)
    if name == "nesterov":
        return opt.SGD(learning_rate=lr, momentum=float(_get(cfg, "momentum")), nesterov=True, **clip)
    if name == "adagrad":
        return opt.Adagrad(learning_rate=lr, **clip)
    if name == "rmsprop":
        return opt.RMSprop(learning_rate=lr, rho=float(_get(cfg, "rho")), **clip)
    if name == "adam":
        return opt.Adam(learning_rate=lr, **betas, **clip)
    if name == "adamax":
        return opt.Adamax(learning_rate=lr, **betas, **clip)
    if name == "nadam":
        return opt.Nadam(learning_rate=lr, **betas, **clip)
    if name == "adamw":
        return opt.AdamW(learning_rate=lr, weight_decay=float(_get(cfg, "weight_decay")), **betas, **clip)
    raise ConfigError(f"optimizer={name!r}: optimizer must be one of {', '.join(config_module.OPTIMIZERS)}")


# --------------------------------------------------------------------------- the model


def hidden_widths(config: Mapping[str, Any], n_classes: int) -> list[int]:
    """Units of each hidden layer.

    ``constant``: every layer has ``n_neurons``. ``funnel``: each layer halves the one
    before (``n_neurons // 2**i``: 300-150-75, in the spirit of Géron's 300-100), but never
    drops below the number of classes (nor below 1); the first layer is always ``n_neurons``.
    """
    cfg = config_module.resolve(config)
    n, width = cfg["n_hidden"], cfg["n_neurons"]
    if cfg["width_shape"] == "constant":
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


def build_model(
    config: Mapping[str, Any],
    input_shape: tuple[int, ...],
    n_classes: int,
    *,
    steps_per_epoch: int = 1,
    seed: int | None = None,
) -> keras.Sequential:
    """A compiled ``keras.Sequential`` classifier for ``config``, ready to fit.

    ``n_classes > 2``: a softmax head with ``sparse_categorical_crossentropy`` (integer
    labels); ``n_classes == 2``: one sigmoid unit with ``binary_crossentropy`` (labels 0/1).
    Either way the accuracy metric is named ``accuracy``. The kernel regularizer (l1, l2
    or both) applies to every Dense kernel, the output's included, as in Géron; the max-norm
    constraint applies to the hidden layers. ``steps_per_epoch`` converts the schedule's
    epochs to optimizer steps. ``seed`` seeds Python, NumPy and the backend before building.
    """
    cfg = config_module.resolve(config)
    if n_classes < 2:
        raise ConfigError(f"n_classes >= 2 must hold, but got {n_classes}")
    if seed is not None:
        keras.utils.set_random_seed(seed)

    layers = keras.layers
    activation = cfg["activation"]
    batch_norm = cfg["batch_norm"]
    bn_momentum = float(_get(cfg, "bn_momentum"))
    l1, l2 = float(cfg["l1"]), float(cfg["l2"])
    max_norm = cfg.get("max_norm")
    dropout = float(cfg["dropout"])

    def kernel_kwargs(hidden: bool) -> dict[str, Any]:
        kw: dict[str, Any] = {"kernel_regularizer": _kernel_regularizer(l1, l2)}
        if hidden:
            kw["kernel_initializer"] = cfg["initializer"]
            if max_norm is not None:
                kw["kernel_constraint"] = keras.constraints.MaxNorm(float(max_norm))
        else:
            kw["kernel_initializer"] = "glorot_uniform"
        return kw

    model = keras.Sequential(name="mlp")
    model.add(keras.Input(shape=tuple(input_shape)))
    model.add(layers.Flatten(name="flatten"))
    if cfg["input_batch_norm"]:
        model.add(layers.BatchNormalization(momentum=bn_momentum, name="input_bn"))

    prelu = activation == "prelu"
    for i, units in enumerate(hidden_widths(cfg, n_classes), start=1):
        if batch_norm == "before":
            model.add(layers.Dense(units, use_bias=False, name=f"dense_{i}", **kernel_kwargs(True)))
            model.add(layers.BatchNormalization(momentum=bn_momentum, name=f"bn_{i}"))
            if prelu:
                model.add(layers.PReLU(name=f"prelu_{i}"))
            else:
                model.add(layers.Activation(activation, name=f"act_{i}"))
        else:
            dense_activation = None if prelu else activation
            model.add(layers.Dense(units, activation=dense_activation, name=f"dense_{i}", **kernel_kwargs(True)))
            if prelu:
                model.add(layers.PReLU(name=f"prelu_{i}"))
            if batch_norm == "after":
                model.add(layers.BatchNormalization(momentum=bn_momentum, name=f"bn_{i}"))
        if dropout > 0:
            if cfg["dropout_kind"] == "alpha":
                model.add(layers.AlphaDropout(dropout, name=f"dropout_{i}"))
            else:
                model.add(layers.Dropout(dropout, name=f"dropout_{i}"))

    if n_classes == 2:
        model.add(layers.Dense(1, activation="sigmoid", name="output", **kernel_kwargs(False)))
        loss = "binary_crossentropy"
        metric = keras.metrics.BinaryAccuracy(name="accuracy")
    else:
        model.add(layers.Dense(n_classes, activation="softmax", name="output", **kernel_kwargs(False)))
        loss = "sparse_categorical_crossentropy"
        metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    model.compile(
        optimizer=build_optimizer(cfg, steps_per_epoch=steps_per_epoch),
        loss=loss,
        metrics=[metric],
    )
    return model


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
