"""Deep ensembles and temperature scaling: the ensemble model averages its members, retrain logs it, evaluate
compares the predictors, and `mlflow models serve` answers a real request with it on loopback."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipelines.calibration import fit_temperature, scaled


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_temperature_recovers_the_true_temperature_and_minimizes_the_nll() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(20000, 4))
    y = np.array([rng.choice(4, p=p) for p in _softmax(logits / 2.0)])  # labels drawn at temperature 2
    probs = _softmax(logits)  # an over-confident model: it believes temperature 1
    t = fit_temperature(probs, y)
    assert t == pytest.approx(2.0, rel=0.05)
    grid = np.linspace(0.5, 4.0, 701)
    nll = [-np.mean(np.log(_softmax(logits / g)[np.arange(len(y)), y])) for g in grid]  # straight from the logits
    assert t == pytest.approx(grid[int(np.argmin(nll))], abs=0.01)
    np.testing.assert_allclose(scaled(probs, 1.0), probs, atol=1e-9)
    assert (scaled(probs, t).argmax(axis=1) == probs.argmax(axis=1)).all()  # accuracy never changes


def test_a_held_out_slice_with_no_errors_gets_a_finite_temperature_from_the_prior() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=2.0, size=(144, 10))
    y = logits.argmax(axis=1)  # every held-out example right, as a near-perfect model's often are
    probs = _softmax(logits)
    grid = np.exp(np.linspace(-4, 2, 2401))
    nll = np.array([-np.mean(np.log(_softmax(logits / g)[np.arange(len(y)), y])) for g in grid])
    assert np.all(np.diff(nll) > 0)  # the NLL alone only falls as T -> 0: no finite minimum
    t = fit_temperature(probs, y)
    posterior = len(y) * nll + np.log(grid) ** 2 / (2 * 0.5 ** 2)  # log T ~ N(0, 0.5²)
    assert 0.05 < t < 1.0 and t == pytest.approx(grid[int(np.argmin(posterior))], rel=0.01)


def test_the_ensemble_model_is_the_mean_of_its_members_and_saves_as_one_file(tmp_path: Path) -> None:
    import keras

    from pipelines.ensemble import ensemble_model, is_ensemble, members

    def member(seed: int) -> Any:
        keras.utils.set_random_seed(seed)
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dropout(0.3),
                                 keras.layers.Dense(3, activation="softmax", name="output")])

    parts = [member(s) for s in range(3)]
    x = np.random.default_rng(1).normal(size=(7, 6)).astype("float32")
    want = np.mean([m.predict(x, verbose=0) for m in parts], axis=0)
    model = ensemble_model(parts)
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-5, atol=1e-6)
    model.save(tmp_path / "e.keras")
    back = keras.saving.load_model(tmp_path / "e.keras")
    assert is_ensemble(back) and [m.name for m in members(back)] == ["member_0", "member_1", "member_2"]
    np.testing.assert_allclose(back.predict(x, verbose=0), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 members"):
        ensemble_model(parts[:1])


@pytest.fixture(scope="module")
def retrained(search_store: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A copy of the session's search store, retrained with 2 seeds and evaluated (MC T=5)."""
    from pipelines.evaluate import evaluate
    from pipelines.retrain import retrain

    folder = tmp_path_factory.mktemp("ensemble")
    shutil.copy(search_store["root"] / "mlflow.db", folder / "mlflow.db")
    uri = f"sqlite:///{folder}/mlflow.db"
    result = retrain(tracking_uri=uri, parent_run=search_store["parent"], seeds=2)
    evaluated = evaluate(tracking_uri=uri, run_id=result.best_seed_run_id, mc_samples=5)
    return {"uri": uri, "retrain": result, "evaluate": evaluated, "folder": folder}


def test_retrain_logs_every_seed_and_the_ensemble(retrained: dict[str, Any]) -> None:
    from search import tracking
    from search.data import held_out, load_subset
    from search.tracking import tags

    uri, result = retrained["uri"], retrained["retrain"]
    ens = tracking.get_run(uri, result.ensemble.run_id)
    seed_ids = [s.run_id for s in result.best.seeds]
    assert ens.data.tags[tags.ENSEMBLE_OF].split(",") == seed_ids and ens.data.tags[tags.RANK] == "ensemble"
    parent = tracking.get_run(uri, result.parent_run_id)
    assert parent.data.tags[tags.ENSEMBLE_RUN_ID] == ens.info.run_id
    # Independently: each seed's own logged model, averaged.
    test = held_out(load_subset("digits"), 0.1)[0].test  # raw: a logged model standardizes its own inputs
    probs = np.mean([tracking.load_keras_model(f"runs:/{r}/model", uri).predict(test.x, verbose=0) for r in seed_ids], axis=0)
    accuracy = float(np.mean(probs.argmax(axis=1) == test.y))
    loss = float(-np.mean(np.log(probs[np.arange(len(test.y)), test.y])))
    assert ens.data.metrics["test_accuracy"] == pytest.approx(accuracy)
    assert ens.data.metrics["test_loss"] == pytest.approx(loss, rel=1e-4)
    assert sum(r.data.tags.get(tags.BEST_SEED) == "true" for r in map(lambda i: tracking.get_run(uri, i), seed_ids)) == 1
    # Every seed, and the ensemble, records the calibration slice it was not trained on (the default 10%).
    assert all(tracking.get_run(uri, i).data.params[tags.HELD_OUT] == "0.1" for i in [*seed_ids, ens.info.run_id])


def _calibration_slice(fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independently of ``search.data.held_out``: the documented rule (train+valid, a stratified fraction
    carved with scikit-learn at seed 0) gives the slice, and the rest's statistics standardize it."""
    from sklearn.model_selection import train_test_split

    from search.data import load_subset

    data = load_subset("digits")
    x = np.concatenate([data.train.x, data.valid.x])
    y = np.concatenate([data.train.y, data.valid.y])
    rest_x, held_x, _, held_y = train_test_split(x, y, test_size=round(len(y) * fraction), stratify=y, random_state=0)
    return rest_x, held_x, held_y


def _standardized_slice(config: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The calibration slice as the retrained models see it (standardized by the rest, if the config says so)."""
    from search.config import DEFAULTS

    rest_x, held_x, held_y = _calibration_slice(0.1)
    if config.get("standardize", DEFAULTS["standardize"]):
        mean, std = rest_x.mean(axis=0), rest_x.std(axis=0)
        held_x = (held_x - mean) / np.where(std > 1e-7, std, 1.0)
    return held_x.astype("float32"), held_y


def test_the_searchs_model_is_the_seed_that_scores_best_on_the_calibration_slice(retrained: dict[str, Any]) -> None:
    """Picked on the slice no seed trained on, never on the test split: the seed's accuracy there, ties to
    its NLL there, then to the lower seed; computed here from each seed's own logged model."""
    from search import tracking
    from search.tracking import tags

    uri, result = retrained["uri"], retrained["retrain"]
    held_x, held_y = _standardized_slice(result.best.config)
    ranked = []
    for seed in result.best.seeds:
        run = tracking.get_run(uri, seed.run_id)
        probs = tracking.load_keras_model(f"runs:/{seed.run_id}/model", uri).predict(held_x, verbose=0)
        accuracy = float(np.mean(probs.argmax(axis=1) == held_y))
        # Keras's cross-entropy clips each probability to [1e-7, 1 - 1e-7] (its epsilon) before the log.
        nll = float(-np.mean(np.log(np.clip(probs[np.arange(len(held_y)), held_y], 1e-7, 1 - 1e-7))))
        assert run.data.metrics["calibration_accuracy"] == pytest.approx(accuracy)
        assert run.data.metrics["calibration_loss"] == pytest.approx(nll, rel=1e-4)
        ranked.append((-accuracy, nll, int(run.data.tags[tags.SEED]), seed.run_id))
    picked = min(ranked)[-1]
    assert result.best_seed_run_id == picked
    assert tracking.get_run(uri, picked).data.tags[tags.BEST_SEED] == "true"
    parent = tracking.get_run(uri, result.parent_run_id)
    assert parent.data.tags[tags.MODEL_URI] == f"runs:/{picked}/model"
    assert (f"Model: `runs:/{picked}/model` (the seed with the best accuracy on the calibration slice; the test split "
            "picked nothing)") in parent.data.tags["mlflow.note.content"]


def test_evaluate_fits_each_predictors_temperature_on_the_held_out_slice(retrained: dict[str, Any]) -> None:
    from search import tracking
    from search.tracking import tags

    out = retrained["evaluate"]
    assert set(out.metrics) == {"deterministic", "mc", "temperature", "mc_temperature", "ensemble", "ensemble_mc",
                                "ensemble_temperature", "ensemble_mc_temperature"}
    assert out.metrics["ensemble"]["accuracy"] == pytest.approx(tracking.get_run(
        retrained["uri"], retrained["retrain"].ensemble.run_id).data.metrics["test_accuracy"])
    for kind, twin in tags.SCALED.items():  # a temperature never changes the arg-max
        assert out.metrics[twin]["accuracy"] == out.metrics[kind]["accuracy"]
    params = tracking.get_run(retrained["uri"], out.run_id).data.params
    assert "144 examples of train+valid the retrain held out" in out.verdict
    # The ensemble's temperature is the one that minimizes its NLL on the slice: by a grid, from the members.
    held_x, held_y = _standardized_slice(retrained["retrain"].best.config)
    members = [tracking.load_keras_model(f"runs:/{s.run_id}/model", retrained["uri"]) for s in retrained["retrain"].best.seeds]
    probs = np.mean([m.predict(held_x, verbose=0) for m in members], axis=0)
    grid = np.exp(np.linspace(-3, 3, 1201))
    logp = np.log(np.clip(probs, 1e-12, 1))
    # The MAP under log T ~ N(0, 0.5²): summed NLL plus (log T)² / (2 · 0.25).
    loss = [-np.sum(np.log(_softmax(logp / t)[np.arange(len(held_y)), held_y])) + np.log(t) ** 2 / 0.5 for t in grid]
    assert float(params["ensemble_temperature"]) == pytest.approx(grid[int(np.argmin(loss))], rel=0.01)
    assert math.isfinite(float(params["ensemble_mc_temperature"]))
    uri = retrained["uri"]
    local = tracking.client(uri).download_artifacts(out.run_id, "predictions.npz", str(retrained["folder"]))
    with np.load(local) as f:
        for kind in ("ensemble", "ensemble_mc", "temperature", "mc_temperature", "ensemble_temperature"):
            probs = f[f"{kind}_probs"]
            assert out.metrics[kind]["accuracy"] == pytest.approx(float(np.mean(probs.argmax(1) == f["labels"])))
        # MC dropout's own temperature, applied by hand to the MC predictive mean: p ** (1/T), renormalized.
        sharpened = f["probs_mean"] ** (1.0 / float(params["mc_temperature"]))
        sharpened /= sharpened.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(f["mc_temperature_probs"], sharpened, rtol=1e-4, atol=1e-6)
    ece = {k: v["ece"] for k, v in out.metrics.items()}
    best = min(ece, key=ece.__getitem__)
    from pipelines.predictors import LABELS

    assert f"Best calibrated on the test split: **{LABELS[best]}** (ECE {ece[best]:.4f})" in out.verdict


@pytest.mark.slow  # mlflow models serve in a real process, a real request on loopback
def test_the_ensemble_serves_with_mlflow_models_serve(retrained: dict[str, Any], free_port: Any) -> None:
    import os

    from search import tracking
    from search.data import held_out, load_subset

    uri, model_uri = retrained["uri"], retrained["retrain"].ensemble.model_uri
    port = free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([str(mlflow), "models", "serve", "-m", model_uri, "--env-manager", "local", "--host",
                             "127.0.0.1", "-p", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    x = held_out(load_subset("digits"), 0.1)[0].test.x[:4].astype("float32")  # raw, as a user sends them
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "mlflow models serve did not answer in 180 s"
                time.sleep(1)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(
            {"inputs": x.tolist()}).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            served = np.asarray(json.loads(response.read())["predictions"])
    finally:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    want = tracking.load_keras_model(model_uri, uri).predict(x, verbose=0)
    np.testing.assert_allclose(served, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(served.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow  # a 1-trial search, a 2-seed retrain and an evaluate on a real Ray and store
def test_a_standardize_config_is_logged_and_evaluated_on_raw_inputs(tmp_path: Path) -> None:
    """With ``standardize: true`` the data is standardized outside the model while it trains; the logged models
    carry the training statistics as their first layer, so they take raw inputs (as their signature and
    `mlflow models serve` say). Checked against what retrain measured on the in-memory models with the data
    standardized: each seed's logged model on the raw calibration slice (carved here independently) scores what
    retrain recorded, and evaluate reproduces the recorded test accuracies."""
    from conftest import STORE_SPACE, random_search
    from pipelines.evaluate import evaluate
    from pipelines.retrain import retrain
    from search import tracking
    from search.model import standardizes_inputs

    space = STORE_SPACE.replace("  epochs: 3", "  epochs: 2\n  standardize: true")
    searched = random_search(tmp_path, space, num_samples=1, name="std")
    uri = searched.tracking_uri
    result = retrain(tracking_uri=uri, parent_run=searched.parent_run_id, seeds=2)
    assert result.best.config["standardize"] is True
    _, held_x, held_y = _calibration_slice(0.1)  # raw
    for seed in result.best.seeds:
        model = tracking.load_keras_model(f"runs:/{seed.run_id}/model", uri)
        assert standardizes_inputs(model)
        accuracy = float(np.mean(model.predict(held_x.astype("float32"), verbose=0).argmax(axis=1) == held_y))
        assert tracking.get_run(uri, seed.run_id).data.metrics["calibration_accuracy"] == pytest.approx(accuracy)
    evaluated = evaluate(tracking_uri=uri, run_id=result.best_seed_run_id, mc_samples=5)
    best = tracking.get_run(uri, result.best_seed_run_id).data.metrics
    assert evaluated.metrics["deterministic"]["accuracy"] == pytest.approx(best["test_accuracy"])
    ensemble = tracking.get_run(uri, result.ensemble.run_id).data.metrics
    assert evaluated.metrics["ensemble"]["accuracy"] == pytest.approx(ensemble["test_accuracy"])
