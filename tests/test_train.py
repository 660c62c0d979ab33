"""Tests for search.train: real Keras fits on tiny data, checked against numbers computed
here (numpy accuracy and cross-entropy from ``model.predict``, the learning-rate schedule in
closed form, Keras's early-stopping rule replayed on the history), not against the code under test."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from search import train as T
from search.data import Dataset, load_dataset, load_npz
from search.errors import TrialFailed

# A config that always diverges on digits: plain SGD with an absurd step overflows float32
# within the first few batches, whatever the seed (checked by hand over seeds 0-3).
DIVERGING = {"n_hidden": 1, "n_neurons": 32, "optimizer": "sgd", "learning_rate": 1e12, "batch_norm": "none",
             "activation": "relu", "initializer": "he_normal", "batch_size": 32}
NAN_MESSAGE = r"loss became NaN at epoch \d+"


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def predict_metrics(model, split) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on ``split``, in numpy.

    Two classes have one sigmoid unit (P(class 1)), more classes a softmax over all of them.
    """
    probs = np.asarray(model.predict(split.x, batch_size=512, verbose=0), dtype=np.float64)
    if probs.shape[1] == 1:
        probs = np.concatenate([1.0 - probs, probs], axis=1)
    accuracy = float(np.mean(np.argmax(probs, axis=1) == split.y))
    picked = np.clip(probs[np.arange(len(split.y)), split.y], 1e-7, 1.0)  # Keras clips at epsilon 1e-7
    return accuracy, float(-np.mean(np.log(picked)))


# --------------------------------------------------------------------------- one fit, in detail


@pytest.fixture(scope="module")
def exp_fit(digits):
    """A 3-epoch fit with an exponential schedule, every report call recorded."""
    config = {"n_hidden": 1, "n_neurons": 32, "optimizer": "adam", "learning_rate": 0.01, "batch_size": 64,
              "lr_schedule": "exponential", "schedule_epochs": 2.0}
    calls: list[tuple[dict, object]] = []
    result = T.fit(config, digits, epochs=3, seed=0, report=lambda row, model: calls.append((dict(row), model)))
    return config, result, calls


def test_history_has_one_row_per_epoch_with_every_metric(exp_fit):
    _, result, _ = exp_fit
    assert result.epochs == 3
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    for row in result.history:
        assert set(T.METRICS) | {"epoch"} <= set(row)
        assert all(isinstance(row[k], float) and math.isfinite(row[k]) for k in T.METRICS)
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["val_accuracy"] <= 1.0
        assert row["epoch_time_s"] > 0
        assert row["epochs_planned"] == 3
    assert not result.stopped_early
    # It learned something: 10 balanced classes start near 0.1 accuracy.
    assert result.history[-1]["val_accuracy"] > 0.5


def test_final_flag_only_on_the_last_epoch(exp_fit):
    _, result, _ = exp_fit
    assert [row["final"] for row in result.history] == [0.0, 0.0, 1.0]


def test_report_is_called_once_per_epoch_with_the_rows(exp_fit):
    _, result, calls = exp_fit
    assert [row for row, _ in calls] == result.history
    assert all(model is result.model for _, model in calls)


def test_validation_metrics_match_numpy_on_the_returned_model(exp_fit, digits):
    # EarlyStopping(restore_best_weights=True) puts back the weights of the epoch with the lowest
    # val_loss at the end of training, even when it never stopped early (Keras 3). So the returned
    # model is the one of the min-val_loss row (the first such row, as Keras only moves on a strict
    # improvement); with a decaying rate over 3 epochs that is usually the last row, but it need not be.
    _, result, _ = exp_fit
    restored = min(result.history, key=lambda row: row["val_loss"])
    accuracy, loss = predict_metrics(result.model, digits.valid)
    n = len(digits.valid)
    assert abs(accuracy - restored["val_accuracy"]) <= 1.5 / n  # at most one borderline argmax may differ
    assert loss == pytest.approx(restored["val_loss"], rel=1e-4)


def test_logged_lr_follows_the_exponential_schedule(exp_fit, digits):
    config, result, _ = exp_fit
    steps_per_epoch = math.ceil(len(digits.train) / config["batch_size"])  # 1078 / 64 -> 17
    decay_steps = config["schedule_epochs"] * steps_per_epoch
    for row in result.history:
        t = row["epoch"] * steps_per_epoch  # optimizer steps taken by the end of this epoch
        expected = config["learning_rate"] * 0.1 ** (t / decay_steps)
        assert row["lr"] == pytest.approx(expected, rel=1e-5)
    assert int(result.model.optimizer.iterations.numpy()) == 3 * steps_per_epoch


# --------------------------------------------------------------------------- NaN guard


def test_nan_guard_raises_trial_failed(digits, capsys):
    reported: list[dict] = []
    with pytest.raises(TrialFailed, match=NAN_MESSAGE) as info:
        T.fit(DIVERGING, digits, epochs=3, seed=0, report=lambda row, _m: reported.append(row))
    assert str(info.value) == "loss became NaN at epoch 1"
    assert reported == []  # a diverged epoch is not handed to report
    assert capsys.readouterr().out == ""  # stdout is for results (`search trial --json`), not for Keras's notices


def test_nan_guard_counts_epochs_after_initial_epoch(digits):
    with pytest.raises(TrialFailed, match=r"^loss became NaN at epoch 3$"):
        T.fit(DIVERGING, digits, epochs=5, seed=0, initial_epoch=2)


@pytest.fixture(scope="module")
def huge_npz(tmp_path_factory) -> Path:
    """Features of order 1e30: the first SGD step overflows float32 unless they are standardized."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("huge") / "huge.npz"
    x = rng.normal(size=(60, 4)) * 1e30
    np.savez(path, x=x.astype(np.float32), y=np.arange(60) % 2)
    return path


def test_nan_guard_on_huge_inputs(huge_npz):
    config = {"n_hidden": 1, "n_neurons": 8, "optimizer": "sgd", "learning_rate": 0.01, "batch_size": 8}
    with pytest.raises(TrialFailed, match=NAN_MESSAGE):
        T.fit(config, load_npz(huge_npz), epochs=3, seed=0)


# --------------------------------------------------------------------------- early stopping


@pytest.fixture(scope="module")
def anti_npz(tmp_path_factory) -> Path:
    """Train labels follow x0 > 0; valid labels are the opposite rule. Whatever the network
    learns on train makes val_loss worse, so val_loss rises from the second epoch on."""
    rng = np.random.default_rng(0)

    def part(n: int) -> tuple[np.ndarray, np.ndarray]:
        x = rng.normal(size=(n, 4)).astype(np.float32)
        return x, (x[:, 0] > 0).astype(np.int64)

    (xt, yt), (xv, yv), (xs, ys) = part(200), part(100), part(20)
    path = tmp_path_factory.mktemp("anti") / "anti.npz"
    np.savez(path, x_train=xt, y_train=yt, x_valid=xv, y_valid=1 - yv, x_test=xs, y_test=ys)
    return path


def test_early_stopping_with_patience_one(anti_npz):
    data = load_npz(anti_npz)
    config = {"n_hidden": 1, "n_neurons": 16, "optimizer": "adam", "learning_rate": 0.01, "batch_size": 16, "patience": 1}
    result = T.fit(config, data, epochs=10, seed=0)
    assert result.stopped_early
    assert result.epochs < 10
    # Replay Keras's rule on the history: with patience 1 training ends at the first epoch after
    # the first whose val_loss is not strictly below the best so far.
    losses = [row["val_loss"] for row in result.history]
    best, expected_last = losses[0], len(losses)
    for i, value in enumerate(losses[1:], start=2):
        if value >= best:
            expected_last = i
            break
        best = value
    assert result.epochs == expected_last
    assert [row["final"] for row in result.history] == [0.0] * (result.epochs - 1) + [1.0]
    assert result.history[-1]["epochs_planned"] == 10
    # The best weights were restored: the model scores the lowest val_loss of the history.
    _, loss = predict_metrics(result.model, data.valid)
    assert loss == pytest.approx(min(losses), rel=1e-4)
    assert loss < losses[-1]


# --------------------------------------------------------------------------- standardize


def test_prepare_standardizes_with_training_statistics(digits):
    raw_train = digits.train.x.copy()
    seen = T.prepare({"standardize": True}, digits)
    mean = digits.train.x.mean(axis=0, dtype=np.float64)
    std = digits.train.x.std(axis=0, dtype=np.float64)
    scale = np.where(std < 1e-7, 1.0, std)  # constant pixels (digits' corners) are only centred
    assert (std < 1e-7).any()
    for split, original in ((seen.train, digits.train), (seen.valid, digits.valid), (seen.test, digits.test)):
        np.testing.assert_allclose(split.x, (original.x - mean) / scale, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(split.y, original.y)
    varying = std >= 1e-7
    np.testing.assert_allclose(seen.train.x.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(seen.train.x.std(axis=0)[varying], 1.0, rtol=1e-4)
    # valid is scaled with train's statistics, not its own, so its mean is not exactly zero
    assert np.abs(seen.valid.x.mean(axis=0)).max() > 1e-3
    np.testing.assert_array_equal(digits.train.x, raw_train)  # the input dataset is untouched
    assert T.prepare({"standardize": False}, digits) is digits
    assert T.prepare({}, digits) is digits  # the default is off


def test_fit_trains_on_standardized_inputs(huge_npz):
    # The same data and config that diverge above train fine once standardized...
    config = {"n_hidden": 1, "n_neurons": 8, "optimizer": "sgd", "learning_rate": 0.01, "batch_size": 8, "standardize": True}
    raw = load_npz(huge_npz)
    result = T.fit(config, raw, epochs=1, seed=0)
    # ...and the reported validation metrics are those of the standardized valid split.
    accuracy, loss = predict_metrics(result.model, T.prepare(config, raw).valid)
    assert abs(accuracy - result.history[0]["val_accuracy"]) <= 1.5 / len(raw.valid)
    assert loss == pytest.approx(result.history[0]["val_loss"], rel=1e-4)


# --------------------------------------------------------------------------- continuation


CONTINUE = {"n_hidden": 1, "n_neurons": 32, "optimizer": "adam", "learning_rate": 0.005, "batch_size": 64}


@pytest.fixture(scope="module")
def first_two(digits):
    return T.fit(CONTINUE, digits, epochs=2, seed=0)


def test_continue_from_initial_model(first_two, digits):
    weights_before = [w.copy() for w in first_two.model.get_weights()]
    steps = math.ceil(len(digits.train) / CONTINUE["batch_size"])
    assert int(first_two.model.optimizer.iterations.numpy()) == 2 * steps
    result = T.fit(CONTINUE, digits, epochs=4, seed=0, initial_model=first_two.model, initial_epoch=2)
    assert [row["epoch"] for row in result.history] == [3, 4]
    assert [row["final"] for row in result.history] == [0.0, 1.0]
    assert not result.stopped_early
    assert result.model is first_two.model  # trained on, optimizer state and all
    assert int(result.model.optimizer.iterations.numpy()) == 4 * steps
    assert any(not np.array_equal(a, b) for a, b in zip(weights_before, result.model.get_weights()))


def test_continue_from_initial_weights(first_two, digits):
    result = T.fit(CONTINUE, digits, epochs=4, seed=1, initial_weights=first_two.model.get_weights(), initial_epoch=2)
    assert [row["epoch"] for row in result.history] == [3, 4]
    assert [row["final"] for row in result.history] == [0.0, 1.0]
    assert result.model is not first_two.model  # a new model of this config...
    # ...that starts from the trained weights: its first epoch is far ahead of a first epoch from
    # scratch, and about where the two epochs it continues left off (or better).
    assert result.history[0]["val_loss"] < first_two.history[0]["val_loss"]
    assert result.history[0]["val_loss"] < first_two.history[-1]["val_loss"] * 1.2


def test_constant_rate_is_logged_unchanged(first_two):
    assert [row["lr"] for row in first_two.history] == pytest.approx([CONTINUE["learning_rate"]] * 2, rel=1e-6)


# --------------------------------------------------------------------------- runtime


@pytest.mark.slow  # a fresh interpreter imports TensorFlow, Ray or MLflow
def test_configure_runtime_sets_threads_in_a_fresh_interpreter():
    script = textwrap.dedent(
        """
        import json, os
        from search.train import configure_runtime
        configure_runtime(cpu_threads=1)
        import tensorflow as tf
        before = [tf.config.threading.get_intra_op_parallelism_threads(),
                  tf.config.threading.get_inter_op_parallelism_threads()]
        float(tf.reduce_sum(tf.ones((4, 4))))  # the first op initialises the runtime
        configure_runtime(cpu_threads=3)       # too late now: a no-op, not an error
        after = [tf.config.threading.get_intra_op_parallelism_threads(),
                 tf.config.threading.get_inter_op_parallelism_threads()]
        print(json.dumps({"before": before, "after": after, "omp": os.environ.get("OMP_NUM_THREADS")}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"before": [1, 1], "after": [1, 1], "omp": "1"}


# --------------------------------------------------------------------------- steps per execution


@pytest.mark.parametrize("cfg", [
    {"n_hidden": 2, "n_neurons": 32, "dropout": 0.2, "batch_norm": "after", "optimizer": "adam",
     "learning_rate": 3e-3, "batch_size": 64},
    {"n_hidden": 1, "n_neurons": 48, "optimizer": "nesterov", "momentum": 0.9, "lr_schedule": "one_cycle",
     "schedule_max_lr": 0.05, "batch_size": 32},
    {"n_hidden": 1, "n_neurons": 32, "dropout": 0.1, "augment_shift": "auto", "batch_size": 64},
], ids=["dropout-bn-adam", "nesterov-1cycle", "shifted-images"])
def test_auto_steps_per_execution_changes_no_number(digits, cfg):
    """One compiled call per epoch (auto) trains exactly what one step per call trains."""
    from search.model import execution_steps

    one = T.fit({**cfg, "steps_per_execution": 1}, digits, epochs=3, seed=11)
    auto = T.fit({**cfg, "steps_per_execution": "auto"}, digits, epochs=3, seed=11)
    steps = -(-len(digits.train.y) // cfg["batch_size"])
    assert one.model.steps_per_execution == 1 and auto.model.steps_per_execution == steps
    assert execution_steps(cfg, steps) == steps  # auto is the default
    for a, b in zip(one.history, auto.history, strict=True):
        for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key
    for wa, wb in zip(one.model.get_weights(), auto.model.get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cfg", [
    {"n_hidden": 2, "n_neurons": 32, "dropout": 0.2, "batch_norm": "after", "optimizer": "adam",
     "learning_rate": 3e-3, "batch_size": 64},
    {"n_hidden": 1, "n_neurons": 48, "optimizer": "nesterov", "momentum": 0.9, "lr_schedule": "one_cycle",
     "schedule_max_lr": 0.05, "batch_size": 32, "clipnorm": 1.0},
], ids=["dropout-bn-adam", "nesterov-1cycle-clipped"])
def test_optimizer_built_before_the_first_step_trains_what_keras_lazy_build_trains(digits, cfg):
    """compile_model builds the optimizer at once (one trace less); Keras, left alone, builds it in the
    first traced step. Same seed, same batches: the same weights and optimizer state after 3 epochs."""
    import keras

    from search.model import build_model

    steps = -(-len(digits.train.y) // cfg["batch_size"])
    eager = build_model(cfg, digits.input_shape, digits.n_classes, steps_per_epoch=steps, seed=5)
    lazy = build_model(cfg, digits.input_shape, digits.n_classes, steps_per_epoch=steps, seed=5)
    assert eager.optimizer.built
    optimizer = keras.optimizers.deserialize(keras.optimizers.serialize(lazy.optimizer))
    lazy.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                 steps_per_execution=lazy.steps_per_execution)
    assert not lazy.optimizer.built
    for model in (eager, lazy):
        model.fit(digits.train.x, digits.train.y, batch_size=cfg["batch_size"], epochs=3, shuffle=False, verbose=0)
    for wa, wb in zip(eager.get_weights(), lazy.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert int(eager.optimizer.iterations) == int(lazy.optimizer.iterations) == 3 * steps
    for va, vb in zip(eager.optimizer.variables, lazy.optimizer.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(va), np.asarray(vb))


@pytest.mark.parametrize("spe", [1, 7, "auto"])
def test_nan_guard_stops_in_the_right_epoch_whatever_the_steps_per_call(digits, spe):
    """The NaN guard runs once per compiled call; a call never spans epochs, so the epoch is exact."""
    cfg = {"n_hidden": 1, "n_neurons": 16, "optimizer": "sgd", "learning_rate": 1e12, "batch_size": 64,
           "steps_per_execution": spe}
    with pytest.raises(TrialFailed, match=r"^loss became NaN at epoch 5$"):
        T.fit(cfg, digits, epochs=8, initial_epoch=4, seed=3)


def test_hidden_imports_fail_inside_and_work_after():
    from search.tune.trainable import hidden

    sys.modules.pop("tabnanny", None)
    with hidden(("tabnanny", "json")):  # json is imported already: left as it is
        with pytest.raises(ModuleNotFoundError, match="tabnanny"):
            import tabnanny
        import json as again

        assert again is json
    import tabnanny

    assert tabnanny.__name__ == "tabnanny" and not any(type(f).__name__ == "hidden" for f in sys.meta_path)


@pytest.mark.slow  # a fresh interpreter imports TensorFlow and Ray
def test_a_trial_worker_imports_keras_without_its_extras_and_keeps_its_thread_settings():
    script = textwrap.dedent(
        """
        import json, sys
        from search.tune.trainable import KERAS_EXTRAS, _configure_worker
        _configure_worker(1)
        import keras, tensorflow as tf
        loaded = [name for name in KERAS_EXTRAS if name in sys.modules]
        y = keras.layers.Dense(3)(tf.ones((2, 4)))
        threads = [tf.config.threading.get_intra_op_parallelism_threads(),
                   tf.config.threading.get_inter_op_parallelism_threads()]
        import sklearn.metrics, matplotlib  # importable again once Keras is in
        print(json.dumps({"loaded": loaded, "shape": list(y.shape), "threads": threads,
                          "sklearn": sklearn.metrics.accuracy_score([1, 0], [1, 1])}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"loaded": [], "shape": [2, 3], "threads": [1, 1], "sklearn": 0.5}
