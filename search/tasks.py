"""Tasks: what a model predicts and how it is scored. A new task is one entry in ``TASKS``.

- ``classification``: class ids; a softmax head (one sigmoid unit for two classes),
  cross-entropy, ``accuracy``; the default search metric is ``val_accuracy`` (max).
- ``regression``: a number; a linear head whose output is in the target's own units, the
  ``loss`` key (``mse``, ``huber``, ``gaussian_nll``), ``rmse`` and ``mae`` per epoch; the default
  search metric is ``val_rmse`` (min).

Targets are standardized with training statistics inside the model: the head predicts the
standardized target and a ``Rescaling`` layer turns it back into the target's units, so
predictions, metrics and a served model all speak the target's units, while the loss is the
standardized one (``loss_weights`` 1/std², Huber's ``delta`` one std): the learning rates mean
the same whatever the target's scale. ``gaussian_nll`` has two outputs, the mean and the log
variance (in the target's units), and its loss is the Gaussian negative log-likelihood.

Only the standard library at import time; Keras is imported inside the functions that build.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from search.config import AUTO, KEYS
from search.errors import ConfigError

CLASSIFICATION = "classification"
REGRESSION = "regression"
REGRESSION_LOSSES: tuple[str, ...] = KEYS["loss"].choices or ()  # the first is what auto means


@dataclass(frozen=True)
class Output:
    """What the model predicts: the task, the classes (0 for regression), and the training
    targets' mean and standard deviation (regression)."""

    task: str = CLASSIFICATION
    n_classes: int = 0
    mean: float = 0.0
    std: float = 1.0


@dataclass(frozen=True)
class Task:
    """One task: its default search metric, mode and space, its per-epoch metrics, its model head, and
    what its target is (class ids, or numbers) and the test score a retrain ranks seeds by."""

    name: str
    metric: str  # the default search metric
    mode: str
    space: str  # the default search space (a built-in name)
    scores: tuple[str, ...]  # per-epoch metrics besides the loss, on train (and val_ on valid)
    losses: tuple[str, ...]  # values of the ``loss`` key it accepts (besides auto)
    head: Callable[[Output, str, dict[str, Any]], list[Any]]  # (output, loss, Dense kwargs) -> layers after the hidden ones
    compile_args: Callable[[Output, str], dict[str, Any]]  # (output, loss) -> loss, loss_weights, metrics
    numeric: bool = False  # the target is a number (float32), not class ids
    test_score: str = "accuracy"  # the retrain's test score; better is ``mode``'s way

    @property
    def epoch_metrics(self) -> tuple[str, ...]:
        """What each epoch's row holds, besides ``lr`` and ``epoch_time_s``."""
        return ("loss", *self.scores, "val_loss", *(f"val_{s}" for s in self.scores))

    def loss_of(self, loss: str) -> str:
        """The loss a config's ``loss`` key means for this task, or a ConfigError saying why none."""
        if loss == AUTO:
            return self.losses[0] if self.losses else AUTO
        if loss not in self.losses:
            allowed = ", ".join(self.losses) if self.losses else "only auto (cross-entropy)"
            raise ConfigError(f"loss={loss!r} does not fit a {self.name} task: it takes {allowed}")
        return loss


# --------------------------------------------------------------------------- classification


def _classification_head(output: Output, loss: str, dense: dict[str, Any]) -> list[Any]:
    import keras

    units, activation = (1, "sigmoid") if output.n_classes == 2 else (output.n_classes, "softmax")
    return [keras.layers.Dense(units, activation=activation, name="output", **dense)]


def _classification_compile(output: Output, loss: str) -> dict[str, Any]:
    import keras

    if output.n_classes == 2:
        return {"loss": "binary_crossentropy", "metrics": [keras.metrics.BinaryAccuracy(name="accuracy")]}
    return {"loss": "sparse_categorical_crossentropy", "metrics": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]}


# --------------------------------------------------------------------------- regression


def _regression_head(output: Output, loss: str, dense: dict[str, Any]) -> list[Any]:
    import keras

    std = float(output.std)
    if loss == "gaussian_nll":  # (mean, log variance), both back in the target's units
        return [keras.layers.Dense(2, name="output", **dense),
                keras.layers.Rescaling(scale=[std, 1.0], offset=[float(output.mean), 2 * math.log(std)], name="target_units")]
    return [keras.layers.Dense(1, name="output", **dense),
            keras.layers.Rescaling(scale=std, offset=float(output.mean), name="target_units")]


def _regression_compile(output: Output, loss: str) -> dict[str, Any]:
    import keras

    from search.losses import GaussianNLL, MeanMAE, MeanRMSE

    std = float(output.std)
    metrics = [MeanRMSE(name="rmse"), MeanMAE(name="mae")]
    if loss == "gaussian_nll":
        return {"loss": GaussianNLL(), "metrics": metrics}
    chosen = keras.losses.Huber(delta=std) if loss == "huber" else keras.losses.MeanSquaredError()
    return {"loss": chosen, "loss_weights": [1.0 / std**2], "metrics": metrics}


TASKS: dict[str, Task] = {
    CLASSIFICATION: Task(CLASSIFICATION, "val_accuracy", "max", "default", ("accuracy",), (), _classification_head,
                         _classification_compile),
    REGRESSION: Task(REGRESSION, "val_rmse", "min", "regression", ("rmse", "mae"), REGRESSION_LOSSES,
                     _regression_head, _regression_compile, numeric=True, test_score="rmse"),
}


def get_task(name: str) -> Task:
    """The task called ``name``, or a ConfigError that lists them."""
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r}: give one of {', '.join(TASKS)}") from None


def all_epoch_metrics() -> tuple[str, ...]:
    """Every per-epoch metric of every task, once each, in a stable order."""
    seen: dict[str, None] = {}
    for task in TASKS.values():
        seen.update(dict.fromkeys(task.epoch_metrics))
    return tuple(seen)


def recorded_epoch_keys() -> tuple[str, ...]:
    """What MLflow records of each epoch's row: every task's metrics, the learning rate and the epoch's time."""
    return (*all_epoch_metrics(), "lr", "epoch_time_s")
