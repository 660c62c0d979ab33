"""Fit one config on one dataset: callbacks, early stopping, the NaN guard. No Ray, no MLflow.

``fit`` is what a trial runs, what ``search trial`` runs in process, and what a notebook can
call with nothing but Keras installed.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from search import config as vocab
from search.config import TrialConfig
from search.errors import TrialFailed
from search.tasks import get_task

if TYPE_CHECKING:
    import keras

    from search.data import Dataset, Split

log = logging.getLogger(__name__)

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "epoch_time_s")  # a classifier's; see search.tasks
Report = Callable[[dict[str, float], "keras.Model"], None]


@dataclass
class FitResult:
    """What one fit produced: its per-epoch history and the trained model."""

    config: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    model: keras.Model | None = None
    stopped_early: bool = False

    @property
    def epochs(self) -> int:
        return len(self.history)

    def best(self, metric: str = "val_accuracy", mode: str = "max") -> dict[str, float]:
        """The epoch whose ``metric`` is best."""
        pick = max if mode == "max" else min
        return pick(self.history, key=lambda row: row[metric])


def configure_runtime(*, cpu_threads: int | None = None, gpu_memory_growth: bool = True) -> None:
    """Set TF's thread pools and GPU memory growth; call before the first TF op of the process.

    Concurrent 1-CPU trials that each use every core oversubscribe the machine, and a trial that
    maps all GPU memory starves its neighbours on a shared GPU. Both settings only take effect
    before TF initialises its runtime, so a second call is a no-op with a debug message.
    """
    if cpu_threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(cpu_threads))
    import tensorflow as tf

    try:
        if gpu_memory_growth:
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)
        if cpu_threads:
            tf.config.threading.set_intra_op_parallelism_threads(cpu_threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, cpu_threads))
    except RuntimeError as err:  # the runtime was already initialised in this process
        log.debug("TF runtime already configured: %s", err)


def prepare(config: Mapping[str, Any], dataset: Dataset) -> Dataset:
    """The dataset as this config sees it (standardized with training statistics if asked)."""
    from search.data import standardize

    return standardize(dataset) if config.get("standardize", vocab.DEFAULTS["standardize"]) else dataset


def prepare_held(config: Mapping[str, Any], trained_on: Dataset, held: Split | None) -> tuple[Split, Split | None]:
    """The test split and the calibration slice ``held`` (None: none) as a model retrained on ``trained_on``
    sees them: standardized with its training statistics if the config says so."""
    import dataclasses

    if held is None:
        return prepare(config, trained_on).test, None
    # The slice rides in the valid position (merge_train_valid's valid is the test split): one pass for both.
    seen = prepare(config, dataclasses.replace(trained_on, valid=held))
    return seen.test, seen.valid


def make_tf_dataset(split: Split, batch_size: int, *, shuffle: bool, seed: int | None = None) -> Any:
    """A cached, prefetched ``tf.data`` pipeline over a split."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((split.x, split.y)).cache()
    if shuffle:
        ds = ds.shuffle(len(split.y), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _current_lr(model: keras.Model) -> float:
    import keras

    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def _train(model: Any, cfg: TrialConfig, data: Dataset, copied: list[str], epoch_log: Any, nan_epochs: list[int], *,
           first: int, validate: bool, seed: int | None, verbose: int) -> None:
    """``model.fit`` from epoch ``first`` to ``cfg.epochs``: with copied layers, first frozen (no early
    stopping), then every layer at the learning rate times ``unfreeze_lr_factor``."""
    epochs, batch_size = int(cfg.epochs), int(cfg.batch_size)
    steps = max(1, math.ceil(len(data.train.y) / batch_size))

    def run(start: int, last: int, callbacks: list[Any]) -> None:
        model.fit(
            make_tf_dataset(data.train, batch_size, shuffle=True, seed=seed),
            validation_data=make_tf_dataset(data.valid, 1024, shuffle=False) if validate else None,
            epochs=last, initial_epoch=start, callbacks=callbacks, verbose=verbose,
            shuffle=False,  # the tf.data pipeline shuffles
        )

    frozen_until = min(int(cfg.freeze_epochs), epochs) if copied else 0
    if frozen_until > first:
        from search.model import compile_model
        from search.transfer import set_frozen

        set_frozen(model, copied, True)
        compile_model(model, cfg, data.output, steps_per_epoch=steps)
        run(first, frozen_until, [*_callbacks(cfg, validate=False, epoch_log=epoch_log)[:-1], epoch_log])
        set_frozen(model, copied, False)
        compile_model(model, cfg, data.output, steps_per_epoch=steps, lr_factor=float(cfg.unfreeze_lr_factor))
    if not nan_epochs and not model.stop_training and max(first, frozen_until) < epochs:
        run(max(first, frozen_until), epochs, _callbacks(cfg, validate=validate, epoch_log=epoch_log))


def _transferred(model: Any, cfg: TrialConfig, source: Mapping[str, list[Any]] | None, *, fresh: bool) -> list[str]:
    """The hidden layers that come from the source model (copied now into a fresh model)."""
    n = int(cfg.reuse_layers)
    if source is None or n == 0:
        return []
    from search.transfer import copy_layers, hidden_layers

    return copy_layers(model, source, n) if fresh else hidden_layers(model, n)


def _epoch_callback(history: list[dict[str, float]], nan_epochs: list[int], report: Report | None, *,
                    total_epochs: int, keys: tuple[str, ...]) -> Any:
    import keras

    class EpochLog(keras.callbacks.Callback):
        """Times each epoch, reads the learning rate, and hands the row to ``report``."""

        # The NaN check below may run after its batch, in Keras's callback thread: Keras waits for it
        # before on_epoch_end. Without this, a batch-end hook makes Keras turn every batch's logs into
        # Python floats in the training loop, a device sync per batch.
        async_safe = True

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._start = time.perf_counter()
            self._epoch = epoch + 1

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            # Stop mid-epoch on a NaN loss (not keras.callbacks.TerminateOnNaN: it prints to stdout,
            # which is for results); remember where, whether or not on_epoch_end follows.
            if logs and "loss" in logs and not math.isfinite(float(logs["loss"])):
                nan_epochs.append(self._epoch)
                self.model.stop_training = True

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            row = {"epoch": epoch + 1, **{k: float(logs[k]) for k in keys if k in logs}}
            row["lr"] = _current_lr(self.model)
            row["epoch_time_s"] = time.perf_counter() - self._start
            # EarlyStopping runs before this callback, so stop_training already says if this is the last epoch.
            row["epochs_planned"] = float(total_epochs)
            row["final"] = float(bool(self.model.stop_training) or epoch + 1 >= total_epochs)
            history.append(row)
            if not math.isfinite(row.get("loss", 0.0)):
                return  # the NaN guard below ends the run; a diverged epoch is not a result
            if report is not None:
                report(row, self.model)

    return EpochLog()


def fit(
    config: Mapping[str, Any],
    dataset: Dataset,
    epochs: int | None = None,
    report: Report | None = None,
    *,
    seed: int | None = None,
    verbose: int = 0,
    initial_model: keras.Model | None = None,
    initial_weights: list[Any] | None = None,
    initial_epoch: int = 0,
    validate: bool = True,
    source: Mapping[str, list[Any]] | None = None,
) -> FitResult:
    """Train ``config`` on ``dataset.train``, validating on ``dataset.valid``.

    ``report(row, model)`` is called after every epoch with ``epoch``, the task's epoch metrics
    (``search.tasks``: ``METRICS`` for a classifier), ``lr`` and ``epoch_time_s``.
    Training stops early when ``val_loss`` has not improved for ``patience`` epochs (the best
    weights are restored). A loss that becomes NaN raises ``TrialFailed`` with the epoch.

    To continue from a checkpoint, pass ``initial_model`` (trained on, optimizer state and all)
    or ``initial_weights`` (for a new model of this config, as when PBT changed its
    hyperparameters), and the ``initial_epoch`` already done.

    ``validate=False`` trains for exactly ``epochs`` with no validation data: no early
    stopping, and the plateau schedule watches the training loss. Retraining on train+valid
    uses it, so the test split never steers training.

    ``source`` (``search.transfer.source_layers`` of an earlier model) with ``reuse_layers`` > 0
    copies that many hidden layers into the new model; they train frozen for ``freeze_epochs``
    epochs (without early stopping), then with every layer at the learning rate times
    ``unfreeze_lr_factor``.
    """

    from search.model import build_model

    # Resolved once, here: the model builder and the schedules read this TrialConfig as it is.
    # Schedules that span the run (1cycle, piecewise) need the real length, so epochs is part of it.
    full = TrialConfig.of({**config, "epochs": int(epochs)} if epochs else config)
    epochs = int(full.epochs)
    data = prepare(full, dataset)
    batch_size = int(full.batch_size)
    steps = max(1, math.ceil(len(data.train.y) / batch_size))
    if initial_model is not None:
        model = initial_model
    else:
        model = build_model(full, data.input_shape, data.output, steps_per_epoch=steps, seed=seed)
        if initial_weights is not None:
            model.set_weights(initial_weights)
    copied = _transferred(model, full, source, fresh=initial_model is None and initial_weights is None)
    history: list[dict[str, float]] = []
    nan_epochs: list[int] = []
    epoch_log = _epoch_callback(history, nan_epochs, report, total_epochs=epochs, keys=get_task(data.task).epoch_metrics)
    _train(model, full, data, copied, epoch_log, nan_epochs, first=initial_epoch, validate=validate, seed=seed,
           verbose=verbose)
    nan_epochs += [int(r["epoch"]) for r in history if not all(math.isfinite(r.get(k, 0.0)) for k in ("loss", "val_loss"))]
    if nan_epochs:
        raise TrialFailed(f"loss became NaN at epoch {min(nan_epochs)}")
    return FitResult(config=dict(config), history=history, model=model, stopped_early=len(history) < epochs - initial_epoch)


def _callbacks(cfg: TrialConfig, *, validate: bool, epoch_log: Any) -> list[Any]:
    """Early stopping on val_loss (when validating), the schedule's callbacks, then the epoch log."""
    import keras

    from search.model import schedule_callbacks

    callbacks: list[Any] = []
    if validate:
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(cfg.patience),
                                                       restore_best_weights=True))
    schedule = schedule_callbacks(cfg)
    if not validate:  # no validation data: the plateau schedule watches the training loss
        for cb in schedule:
            cb.monitor = "loss"
    return [*callbacks, *schedule, epoch_log]


def evaluate(model: keras.Model, split: Split, batch_size: int = 1024) -> dict[str, float]:
    """The loss and the compiled metrics (accuracy; rmse and mae) of ``model`` on ``split``."""
    values = model.evaluate(split.x, split.y, batch_size=batch_size, verbose=0, return_dict=True)
    return {k: float(v) for k, v in values.items() if k in ("loss", "accuracy", "rmse", "mae")}
