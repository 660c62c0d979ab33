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

import numpy as np

from search import tracking
from search.tracking import tags
from search.tracking.description import evaluate_section
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

    from pipelines import mc_dropout as mc
    from pipelines import uncertainty as unc
    from search.data import merge_train_valid
    from search.train import prepare

    if mc_samples < 1:
        raise SearchError(f"--mc-samples must be at least 1, got {mc_samples}")
    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_reachable(uri, must_exist=True)
    source = tracking.model_source(uri, run_id=run_id, model_uri=model_uri, experiment=experiment)
    params = source.search.params if source.search is not None else {}
    data = _data(params, dataset, data_dir=data_dir, target=params.get("target", target))
    name = dataset or params.get("dataset") or "digits"
    # The model was retrained on train+valid; its inputs are standardized with those statistics if its config says so.
    test = prepare(source.config, merge_train_valid(data)).test
    model = tracking.load_keras_model(source.model_uri, uri)
    check_fits(model, data, source.model_uri)

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
    metrics = unc.summarize(samples, test.y, deterministic_probs=det)
    if note:
        metrics.pop("mc", None)  # a single deterministic "sample" is not an MC estimate
    with tempfile.TemporaryDirectory() as folder:
        files = _artifacts(Path(folder), samples, det, test.y, metrics)
        eval_run = _log(uri, source, metrics, files, samples=samples.shape[0], seed=seed, dataset=name, note=note)
    if source.search is not None and eval_run:
        source.search.update_section("Evaluate", evaluate_section(
            experiment_id=source.search.experiment_id, run_id=eval_run, model_uri=source.model_uri, dataset=name,
            samples=int(samples.shape[0]), metrics=metrics, artifacts=[Path(f).name for f in files], note=note))
    return EvaluateResult(
        model_uri=source.model_uri, run_id=eval_run, parent_run_id=source.search.run_id if source.search else None,
        dataset=name, samples=int(samples.shape[0]), metrics=metrics, artifacts=[Path(f).name for f in files], note=note,
    )


def _data(params: Any, dataset: str | None, *, data_dir: str | None, target: str) -> Any:
    """``--dataset`` if given (said loudly when it is not the data the search ran on), else the search's
    own, by its recorded path and checked against its fingerprint."""
    from search.data import load_searched, load_subset

    if dataset is None:
        return load_searched(params, data_dir=data_dir, target=target, what="the model's search")
    data = load_subset(dataset, data_dir=data_dir or params.get("data_dir") or None, target=target,
                       classes=params.get("classes") or None,
                       train_limit=int(params["train_limit"]) if params.get("train_limit") else None)
    recorded = params.get("dataset_fingerprint")
    if recorded and data.fingerprint() != recorded:
        log.warning("evaluating on %s, which is not the data the model's search used (%s)", dataset,
                    params.get("dataset_source") or params.get("dataset"))
    return data


def check_fits(model: Any, data: Any, model_uri: str) -> None:
    """Refuse data the model cannot read, or whose classes it does not predict, before any work."""
    features = tuple(int(d) for d in model.input_shape[1:])
    if int(np.prod(features)) != int(np.prod(data.input_shape)):
        raise SearchError(f"{model_uri} reads inputs of shape {features}, but {data.name} has {data.input_shape}; "
                          "evaluate it on the data it was trained for (--dataset)")
    units = int(model.output_shape[-1])
    classes = 2 if units == 1 else units
    if classes != data.n_classes:
        raise SearchError(f"{model_uri} predicts {classes} classes, but {data.name} has {data.n_classes}; "
                          "evaluate it on the data it was trained for (--dataset)")


def _artifacts(out: Path, samples: Any, det: Any, y: Any, metrics: dict[str, dict[str, float]]) -> list[Path]:
    """predictions.npz, the three plots and metrics.json, written into ``out``."""
    from pipelines import mc_plots
    from pipelines import uncertainty as unc

    p_mean = samples.mean(axis=0)
    right = {"MC dropout": p_mean.argmax(axis=1) == y, "deterministic": det.argmax(axis=1) == y}
    files = [
        unc.save_predictions(out / "predictions.npz", labels=y, probs_mean=p_mean, probs_std=samples.std(axis=0),
                             entropy=unc.entropy(p_mean), mutual_info=unc.mutual_information(samples),
                             deterministic_probs=det),
        mc_plots.plot_reliability(p_mean, y, out / "reliability.png", deterministic_probs=det),
        mc_plots.plot_coverage({"MC dropout": p_mean.max(axis=1), "deterministic": det.max(axis=1)}, right,
                               out / "coverage.png"),
        mc_plots.plot_uncertainty_hist(unc.entropy(p_mean), right["MC dropout"], out / "uncertainty.png"),
    ]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return [*files, out / "metrics.json"]


def _log(uri: str, source: tracking.ModelSource, metrics: dict[str, dict[str, float]], files: list[Path], *, samples: int,
         seed: int, dataset: str, note: str) -> str | None:
    """The evaluate run: metrics for both predictors, the artifacts, and the model it read; nested
    under the model's search where it has one."""
    params = {"model_uri": source.model_uri, "mc_samples": samples, "seed": seed, "dataset": dataset}
    run_tags = {tags.ROLE: tags.ROLE_EVALUATE}
    if source.search is not None:
        tracker = source.search.writer()
        run_id = tracker.start_child("evaluate (MC dropout)", params, run_tags)
    else:
        tracker = tracking.Tracker(uri, "search")
        run_id = tracker.start_run("evaluate (MC dropout)", params, run_tags)
    flat = {f"{kind}_{k}": v for kind, values in metrics.items() for k, v in values.items() if v == v}  # drop NaN
    with tracker.closing(run_id):
        tracker.final_metrics(run_id, flat)
        for path in files:
            tracker.log_artifact(run_id, path)
        if note:
            tracker.set_tags(run_id, {tags.NOTE: note})
    tracker.end_run(run_id, "FINISHED")
    if source.search is not None:
        tracker.set_tags(source.search.run_id, {tags.EVALUATE_RUN_ID: run_id})
    return run_id
