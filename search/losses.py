"""A regressor's Keras loss and metrics: the Gaussian NLL of a (mean, log variance) head, and RMSE and
MAE of the predicted mean (the first output column). Registered with Keras (package ``search``), so
a saved model that uses them loads wherever this module is imported (``search.model`` imports it).

Imports Keras and nothing else of this project.
"""

from __future__ import annotations

from typing import Any

import keras

LOG_2PI = 1.8378770664093453  # log(2 pi)


@keras.saving.register_keras_serializable(package="search")
class GaussianNLL(keras.losses.Loss):
    """Gaussian negative log-likelihood of the target under (mean, log variance), the two outputs."""

    def __init__(self, name: str = "gaussian_nll", reduction: str = "sum_over_batch_size", dtype: Any = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        ops = keras.ops
        y = ops.reshape(ops.cast(y_true, y_pred.dtype), (-1,))
        mean, log_var = y_pred[:, 0], y_pred[:, 1]
        return 0.5 * (LOG_2PI + log_var + ops.square(y - mean) * ops.exp(-log_var))


@keras.saving.register_keras_serializable(package="search")
class MeanRMSE(keras.metrics.RootMeanSquaredError):
    """RMSE of the predicted mean: the first output column (with gaussian_nll, the second is the log variance)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        return super().update_state(ops.reshape(y_true, (-1, 1)), y_pred[:, :1], sample_weight)


@keras.saving.register_keras_serializable(package="search")
class MeanMAE(keras.metrics.MeanAbsoluteError):
    """MAE of the predicted mean (the first output column)."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        return super().update_state(ops.reshape(y_true, (-1, 1)), y_pred[:, :1], sample_weight)
