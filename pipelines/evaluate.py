"""Evaluate a model with Monte-Carlo dropout on the test split, and record it in MLflow.

Which model: a run id (a retrain run with a logged model, a trial run with ``model/model.keras``,
or a search's parent run, which means its best retrain), or any MLflow model URI. The numbers
and plots come from ``pipelines.mc_dropout``; this module finds the model and its data, and
logs the child run tagged ``role=evaluate``.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search import tracking
from search.errors import SearchError

log = logging.getLogger(__name__)

NO_DROPOUT = "the model has no dropout layers, so MC sampling has nothing to sample: deterministic metrics only"


@dataclass
class EvaluateResult:
    model_uri: str
    run_id: str | None
    parent_run_id: str | None
    dataset: str
    samples: int
    metrics: dict[str, dict[str, float]]
    artifacts: list[str] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Source:
    model_uri: str
    parent: Any | None  # the search's parent run, where known
    config: dict[str, Any]


def _source(uri: str, run_id: str | None, model_uri: str | None, experiment: str) -> _Source:
    """Where the model comes from: a run (of any role) or a model URI; default the newest search's best retrain."""
    from mlflow.exceptions import MlflowException

    mlc = tracking.client(uri)
    if model_uri:
        run = None
        if model_uri.startswith("runs:/"):
            try:
                run = mlc.get_run(model_uri[len("runs:/") :].split("/")[0])
            except MlflowException:
                raise SearchError(f"model URI {model_uri} names a run that does not exist in {uri}") from None
        parent = _parent_of(mlc, run) if run is not None else None
        return _Source(model_uri, parent, tracking.config_of(run) if run is not None else {})
    if run_id is None:
        parent = tracking.find_parent(uri, experiment)
        run_id = parent.data.tags.get("search.best_retrain_run_id") or parent.data.tags.get("search.best_run_id")
        if not run_id:
            raise SearchError(f"search {parent.info.run_name} has no retrained or best model; run `search retrain` first")
    try:
        run = mlc.get_run(run_id)
    except MlflowException:
        raise SearchError(f"no run {run_id} in {uri}; list searches with `search runs`") from None
    role = run.data.tags.get(tracking.ROLE)
    if role == "search":
        best = run.data.tags.get("search.best_retrain_run_id") or run.data.tags.get("search.best_run_id")
        if not best:
            raise SearchError(f"search {run.info.run_name} has no model yet; run `search retrain` first")
        return _source(uri, best, None, experiment)
    if role == "retrain":
        return _Source(f"runs:/{run_id}/model", _parent_of(mlc, run), tracking.config_of(run))
    if role == "trial":
        names = {a.path for a in mlc.list_artifacts(run_id, "model")}
        if "model/model.keras" not in names:
            raise SearchError(f"trial run {run_id} has no logged model (only the best trial of a search keeps one)")
        return _Source(f"runs:/{run_id}/model/model.keras", _parent_of(mlc, run), tracking.config_of(run))
    raise SearchError(f"run {run_id} holds no model that search made (role: {role or 'none'}); pass --model-uri instead")


def _parent_of(mlc: Any, run: Any) -> Any | None:
    parent_id = run.data.tags.get(tracking.PARENT)
    return mlc.get_run(parent_id) if parent_id else None


def load_model(model_uri: str, tracking_uri: str) -> Any:
    """A Keras model from an MLflow model URI, or from a logged ``.keras`` file."""
    import mlflow

    import search.model  # noqa: F401 (registers the custom layers and schedules with Keras)

    mlflow.set_tracking_uri(tracking_uri)
    try:
        if model_uri.endswith(".keras"):
            import keras

            local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, tracking_uri=tracking_uri)
            return keras.saving.load_model(local)
        return mlflow.keras.load_model(model_uri)
    except SearchError:
        raise
    except Exception as err:  # noqa: BLE001 (mlflow and keras raise many types for a bad model)
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise SearchError(f"cannot load a Keras model from {model_uri}: {first}") from None


def evaluate(
    *,
    tracking_uri: str | None = None,
    experiment: str = "search",
    run_id: str | None = None,
    model_uri: str | None = None,
    mc_samples: int = 100,
    dataset: str | None = None,
    data_dir: str | None = None,
    target: str = "label",
    seed: int = 0,
    progress: Callable[[int, int, str], None] | None = None,
) -> EvaluateResult:
    """MC-dropout evaluation of a model on the test split, logged as a ``role=evaluate`` child run."""
    import numpy as np

    from pipelines import mc_dropout as mc
    from search.data import load_dataset, merge_train_valid
    from search.train import prepare

    if mc_samples < 1:
        raise SearchError(f"--mc-samples must be at least 1, got {mc_samples}")
    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_reachable(uri)
    source = _source(uri, run_id, model_uri, experiment)
    params = source.parent.data.params if source.parent is not None else {}
    name = dataset or params.get("dataset") or "digits"
    data = load_dataset(name, data_dir=data_dir or params.get("data_dir") or None, target=params.get("target", target))
    # The model was retrained on train+valid; its inputs are standardized with those statistics if its config says so.
    test = prepare(source.config, merge_train_valid(data)).test
    model = load_model(source.model_uri, uri)

    det = mc.deterministic_predict(model, test.x)
    note = ""
    if mc.has_dropout(model):
        # One mask per MC sample shared by a chunk's examples: T sampled networks, each applied to
        # the inputs (the Bayesian reading of MC dropout). Each example's predictive distribution is
        # the same as with per-example masks, at a fraction of the random numbers (bench/).
        result = mc.mc_predict(model, test.x, samples=mc_samples, seed=seed, shared_masks=True, progress=progress)
        samples = result.samples
    else:
        note = NO_DROPOUT
        log.info(note)
        samples = det[None]
    metrics = mc.summarize(samples, test.y, deterministic_probs=det)
    if note:
        metrics.pop("mc", None)  # a single deterministic "sample" is not an MC estimate
    p_mean = samples.mean(axis=0)
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        files = [
            mc.save_predictions(out / "predictions.npz", labels=test.y, probs_mean=p_mean, probs_std=samples.std(axis=0),
                                entropy=mc.entropy(p_mean), mutual_info=mc.mutual_information(samples),
                                deterministic_probs=det),
            mc.plot_reliability(p_mean, test.y, out / "reliability.png", deterministic_probs=det),
            mc.plot_coverage({"MC dropout": p_mean.max(axis=1), "deterministic": det.max(axis=1)},
                             {"MC dropout": p_mean.argmax(axis=1) == test.y, "deterministic": det.argmax(axis=1) == test.y},
                             out / "coverage.png"),
            mc.plot_uncertainty_hist(mc.entropy(p_mean), p_mean.argmax(axis=1) == test.y, out / "uncertainty.png"),
        ]
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        files.append(out / "metrics.json")
        eval_run = _log(uri, source, metrics, files, samples=samples.shape[0], seed=seed, dataset=name, note=note)
    if source.parent is not None and eval_run:
        _describe(uri, source, eval_run, metrics, samples=int(samples.shape[0]), dataset=name,
                  artifacts=[Path(f).name for f in files], note=note)
    return EvaluateResult(
        model_uri=source.model_uri, run_id=eval_run, parent_run_id=source.parent.info.run_id if source.parent else None,
        dataset=name, samples=int(samples.shape[0]), metrics=metrics, artifacts=[Path(f).name for f in files], note=note,
    )


def _describe(uri: str, source: _Source, run_id: str, metrics: dict[str, dict[str, float]], *, samples: int,
              dataset: str, artifacts: list[str], note: str) -> None:
    """The "Evaluate" section of the search's description: MC vs deterministic accuracy, NLL and ECE, linked."""
    from search import plots

    parent = source.parent
    body = plots.evaluate_section(experiment_id=parent.info.experiment_id, run_id=run_id, model_uri=source.model_uri,
                                  dataset=dataset, samples=samples, metrics=metrics, artifacts=artifacts, note=note)
    mlc = tracking.client(uri)
    tracker = tracking.Tracker(uri, mlc.get_experiment(parent.info.experiment_id).name)
    plots.update_note(lambda: mlc.get_run(parent.info.run_id).data.tags.get(tracking.NOTE, ""),
                      lambda text: tracker.set_tags(parent.info.run_id, {tracking.NOTE: text}), "Evaluate", body)


def _log(uri: str, source: _Source, metrics: dict[str, dict[str, float]], files: list[Path], *, samples: int,
         seed: int, dataset: str, note: str) -> str | None:
    """The evaluate child run: metrics for both predictors, the artifacts, and the model it read."""
    mlc = tracking.client(uri)
    if source.parent is not None:
        tracker = tracking.Tracker(uri, mlc.get_experiment(source.parent.info.experiment_id).name)
        tracker.parent_run_id = source.parent.info.run_id
        run_id = tracker.start_child("evaluate (MC dropout)", {"model_uri": source.model_uri, "mc_samples": samples,
                                                               "seed": seed, "dataset": dataset},
                                     {tracking.ROLE: "evaluate"})
    else:
        tracker = tracking.Tracker(uri, "search")
        exp_id = tracker.experiment_id()
        run_id = mlc.create_run(exp_id, run_name="evaluate (MC dropout)", tags={tracking.ROLE: "evaluate"}).info.run_id
        tracker.log_params(run_id, {"model_uri": source.model_uri, "mc_samples": samples, "seed": seed, "dataset": dataset})
    flat = {f"{kind}_{k}": v for kind, values in metrics.items() for k, v in values.items() if v == v}  # drop NaN
    tracker.final_metrics(run_id, flat)
    for path in files:
        tracker.log_artifact(run_id, path)
    if note:
        tracker.set_tags(run_id, {tracking.NOTE: note})
    tracker.end_run(run_id, "FINISHED")
    if source.parent is not None:
        tracker.set_tags(source.parent.info.run_id, {"search.evaluate_run_id": run_id})
    return run_id
