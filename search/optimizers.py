"""Optimizers and learning-rate schedules, as registries: one entry per name of the vocabulary.

``OPTIMIZERS`` maps each ``optimizer`` of ``search.config.OPTIMIZERS`` to a factory, and
``SCHEDULES`` each ``lr_schedule`` of ``search.config.SCHEDULES`` to the learning rate it gives
the optimizer (a float, or a Keras schedule over optimizer steps). A new one is an entry in
``OPTIMIZERS`` (or a function decorated ``@schedule("name")``) and its name in the vocabulary.
Imports Keras and nothing heavier.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import keras

from search.config import TrialConfig
from search.errors import ConfigError

# Fractions of the run for the 1cycle phases (Smith 2018, as in Géron ch. 11): warm up over
# the first 45%, come back down over the next 45%, annihilate over the last 10%.
_ONE_CYCLE_UP = 0.45
_ONE_CYCLE_DOWN = 0.90


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


Schedule = Callable[["TrialConfig", float, int], "float | keras.optimizers.schedules.LearningRateSchedule"]
SCHEDULES: dict[str, Schedule] = {}  # lr_schedule -> (config, lr0, steps_per_epoch) -> learning rate


def schedule(name: str) -> Callable[[Schedule], Schedule]:
    """Register a learning-rate schedule under ``name`` (one of ``config.SCHEDULES``)."""

    def register(fn: Schedule) -> Schedule:
        SCHEDULES[name] = fn
        return fn

    return register


@schedule("constant")
@schedule("plateau")  # plateau's drops come from a callback, see ``schedule_callbacks``
def _constant(cfg: TrialConfig, lr0: float, steps_per_epoch: int) -> float:
    return lr0


@schedule("power")
def _power(cfg: TrialConfig, lr0: float, steps_per_epoch: int) -> Any:
    return keras.optimizers.schedules.InverseTimeDecay(lr0, decay_steps=cfg.schedule_epochs * steps_per_epoch, decay_rate=1.0)


@schedule("exponential")
def _exponential(cfg: TrialConfig, lr0: float, steps_per_epoch: int) -> Any:
    return keras.optimizers.schedules.ExponentialDecay(lr0, decay_steps=cfg.schedule_epochs * steps_per_epoch, decay_rate=0.1)


@schedule("piecewise")
def _piecewise(cfg: TrialConfig, lr0: float, steps_per_epoch: int) -> Any:
    s = float(cfg.schedule_epochs) * steps_per_epoch
    n_drops = max(1, math.ceil(cfg.epochs / float(cfg.schedule_epochs)) - 1)
    boundaries = [max(math.ceil(k * s) - 1, 0) for k in range(1, n_drops + 1)]
    values = [lr0 * float(cfg.schedule_factor) ** k for k in range(n_drops + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries=boundaries, values=values)


@schedule("one_cycle")
def _one_cycle(cfg: TrialConfig, lr0: float, steps_per_epoch: int) -> Any:
    return OneCycle(initial_lr=lr0, max_lr=float(cfg.schedule_max_lr), total_steps=int(cfg.epochs) * steps_per_epoch)


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
    cfg = TrialConfig.of(config)
    if steps_per_epoch < 1:
        raise ConfigError(f"steps_per_epoch >= 1 must hold, but got {steps_per_epoch}")
    return SCHEDULES[cfg.lr_schedule](cfg, float(cfg.learning_rate), steps_per_epoch)


def schedule_callbacks(config: Mapping[str, Any]) -> list[keras.callbacks.Callback]:
    """Callbacks the schedule needs: ``ReduceLROnPlateau`` for ``plateau``, else none."""
    cfg = TrialConfig.of(config)
    if cfg.lr_schedule != "plateau":
        return []
    return [
        keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=float(cfg.schedule_factor), patience=int(cfg.schedule_patience)
        )
    ]


# --------------------------------------------------------------------------- optimizers


@dataclass(frozen=True)
class OptimizerEntry:
    """An optimizer: its Keras class, and the keyword arguments its own knobs give it."""

    cls: Callable[..., keras.optimizers.Optimizer]
    knobs: Callable[[TrialConfig], dict[str, Any]] = lambda cfg: {}


def _betas(cfg: TrialConfig) -> dict[str, Any]:
    return {"beta_1": float(cfg.beta_1), "beta_2": float(cfg.beta_2)}


# optimizer -> its entry; the learning rate (or schedule) and clipping are added to every one.
OPTIMIZERS: dict[str, OptimizerEntry] = {
    "sgd": OptimizerEntry(keras.optimizers.SGD),
    "momentum": OptimizerEntry(keras.optimizers.SGD, lambda cfg: {"momentum": float(cfg.momentum)}),
    "nesterov": OptimizerEntry(keras.optimizers.SGD, lambda cfg: {"momentum": float(cfg.momentum), "nesterov": True}),
    "adagrad": OptimizerEntry(keras.optimizers.Adagrad),
    "rmsprop": OptimizerEntry(keras.optimizers.RMSprop, lambda cfg: {"rho": float(cfg.rho)}),
    "adam": OptimizerEntry(keras.optimizers.Adam, _betas),
    "adamax": OptimizerEntry(keras.optimizers.Adamax, _betas),
    "nadam": OptimizerEntry(keras.optimizers.Nadam, _betas),
    "adamw": OptimizerEntry(keras.optimizers.AdamW,
                            lambda cfg: {"weight_decay": float(cfg.weight_decay), **_betas(cfg)}),
}


def build_optimizer(config: Mapping[str, Any], *, steps_per_epoch: int = 1) -> keras.optimizers.Optimizer:
    """The configured optimizer, with the configured schedule as its learning rate."""
    cfg = TrialConfig.of(config)
    clip = {k: float(cfg[k]) for k in ("clipnorm", "clipvalue") if cfg.get(k) is not None}
    entry = OPTIMIZERS[cfg.optimizer]
    return entry.cls(learning_rate=build_schedule(cfg, steps_per_epoch=steps_per_epoch), **entry.knobs(cfg), **clip)
