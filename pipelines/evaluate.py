"""Evaluate a model with Monte-Carlo dropout on the test split, and record it in MLflow.

Which model: a run id (a retrain run with a logged model, a trial run with ``model/model.keras``,
or a search's parent run, which means its best retrain), or any MLflow model URI. The numbers
and plots come from ``pipelines.mc_dropout``; this module finds the model and its data, and
logs the child run tagged ``role=evaluate``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search import scratch, tracking
from search.tracking import tags
from search.tracking.description import evaluate_section
from search.errors import SearchError

log = logging.getLogger(__name__)

NO_DROPOUT = "the model has no dropout layers, so MC sampling has nothing to sample: deterministic metrics only."


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
    verdict: str = ""  # which predictor is best calibrated, in words

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_options(*, mc_samples: int) -> None:
    """Refuse evaluate's bad options (``search pipeline`` asks before its search)."""
    if mc_samples < 1:
        raise SearchError(f"--mc-samples must be at least 1, got {mc_samples}")


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
    from search.data import held_out
    from search.train import prepare_held

    check_options(mc_samples=mc_samples)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_reachable(uri, must_exist=True)
    source = tracking.model_source(uri, run_id=run_id, model_uri=model_uri, experiment=experiment)
    params = source.search.params if source.search is not None else {}
    data = _data(params, dataset, data_dir=data_dir, target=params.get("target", target))
    name = dataset or params.get("dataset") or "digits"
    model = tracking.load_keras_model(source.model_uri, uri)
    # The model was retrained on train+valid less its calibration slice.
    test, calibration = prepare_held(_input_config(source.config, model), *held_out(data, source.held_out))
    check_fits(model, data, source.model_uri)
    job = Job(uri, source, data, test, model, mc_samples, seed, progress, calibration=calibration)
    with scratch.folder("evaluate-") as folder:
        done = evaluator(data.task)(job, Path(folder))
        if done.note:
            log.info(done.note)
        said = " ".join(filter(None, [done.note, done.verdict]))  # the run's and the description's words
        eval_run = _log(uri, source, done.metrics, done.files, samples=done.samples, seed=seed, dataset=name, note=said,
                        extra=done.extra)
    artifacts = [Path(f).name for f in done.files]
    if source.search is not None and eval_run:
        source.search.update_section("Evaluate", evaluate_section(
            experiment_id=source.search.experiment_id, run_id=eval_run, model_uri=source.model_uri, dataset=name,
            samples=done.samples, metrics=done.metrics, artifacts=artifacts, note=said))
    return EvaluateResult(
        model_uri=source.model_uri, run_id=eval_run, parent_run_id=source.search.run_id if source.search else None,
        dataset=name, samples=done.samples, metrics=done.metrics, artifacts=artifacts, note=done.note,
        verdict=done.verdict,
    )


@dataclass
class Job:
    """What an evaluator works on: the model, its search's record, the data and the test split."""

    uri: str
    source: tracking.ModelSource
    data: Any
    test: Any
    model: Any
    mc_samples: int
    seed: int
    progress: Callable[[int, int, str], None] | None
    calibration: Any = None  # the retrain's calibration slice, prepared as the test split is; None without one


@dataclass
class Evaluated:
    """What an evaluator found: each predictor's metrics, the files it wrote, and its words."""

    metrics: dict[str, dict[str, float]]
    files: list[Path]
    samples: int
    note: str = ""
    verdict: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # more params of the evaluate run


def _classification(job: Job, out: Path) -> Evaluated:
    """Deterministic, MC dropout and (for a seed of the search's ensemble) the deep ensemble with and
    without MC dropout, each also with its own temperature: probabilities, calibration, reliability plots."""
    from pipelines import uncertainty as unc
    from pipelines.predictors import calibration_verdict, predict_all, with_temperatures

    single, ensemble = _single_and_ensemble(job)
    temperature = _temperatures(job, single, ensemble)
    predictions = with_temperatures(predict_all(single, job.test.x, mc_samples=job.mc_samples, seed=job.seed,
                                                ensemble=ensemble, progress=job.progress), temperature)
    metrics = unc.summarize_predictors(predictions, job.test.y)
    extra: dict[str, Any] = {"ensemble_members": len(ensemble) if len(ensemble) > 1 else 0}
    if temperature is not None:
        extra |= {tags.SCALED[k]: t for k, t in temperature.values.items()}
    return Evaluated(metrics, _artifacts(out, predictions, job.test.y, metrics),
                     int(predictions.get("mc", predictions["deterministic"]).shape[0]),
                     note="" if "mc" in predictions else NO_DROPOUT, verdict=calibration_verdict(metrics, temperature),
                     extra=extra)


def _regression(job: Job, out: Path) -> Evaluated:
    """A regressor's Gaussian predictive, deterministic and with MC dropout (and the deep ensemble of the
    search's seeds): RMSE, MAE, R², NLL, CRPS, interval coverage and width; three plots."""
    from pipelines import mc_dropout as mc
    from pipelines import regression as reg
    from pipelines.predictors import LABELS

    single, ensemble = _single_and_ensemble(job)
    det = mc.deterministic_predict(single, job.test.x, raw=True)[None]
    noise, noise_note = (None, "") if det.shape[-1] == 2 else _noise_variance(job, single)
    outputs = {"deterministic": det}
    if mc.has_dropout(single):
        outputs["mc"] = mc.mc_predict(single, job.test.x, samples=job.mc_samples, seed=job.seed, shared_masks=True,
                                      progress=job.progress, raw=True).samples
    if len(ensemble) > 1:
        outputs["ensemble"] = np.stack([mc.deterministic_predict(m, job.test.x, raw=True) for m in ensemble])
    predictives = {k: reg.predictive(v, noise) for k, v in outputs.items()}
    metrics = {k: reg.summarize(p, job.test.y) for k, p in predictives.items()}
    files = _regression_artifacts(out, predictives, job.test.y, metrics)
    note = " ".join(filter(None, [noise_note, "" if "mc" in outputs else NO_DROPOUT]))
    return Evaluated(metrics, files, int(outputs.get("mc", det).shape[0]), note=note,
                     verdict=reg.verdict({LABELS[k]: v for k, v in metrics.items()}),
                     extra={"noise_std": float(np.sqrt(noise)) if noise is not None else None,
                            "ensemble_members": len(ensemble) if len(ensemble) > 1 else 0})


def _single_and_ensemble(job: Job) -> tuple[Any, list[Any]]:
    """The one model to evaluate, and the members of its deep ensemble: the model's own when it is one
    (the first member is the single model), else the search's ensemble it belongs to (or none)."""
    from pipelines.ensemble import is_ensemble, members

    if is_ensemble(job.model):
        found = members(job.model)
        return found[0], found
    return job.model, _ensemble_of(job.uri, job.source)


EVALUATORS: dict[str, Callable[[Job, Path], Evaluated]] = {"classification": _classification,
                                                          "regression": _regression}


def evaluator(task: str) -> Callable[[Job, Path], Evaluated]:
    """The task's evaluator: its own entry, else the regression one for a numeric target, the classification one
    for classes."""
    from search.tasks import get_task

    return EVALUATORS.get(task) or EVALUATORS["regression" if get_task(task).numeric else "classification"]


def _noise_variance(job: Job, model: Any) -> tuple[float, str]:
    """The target's noise variance for a one-output regressor, and where it came from, in words: the
    model's residuals on its retrain's calibration slice, else the validation residuals of the search's
    best trial model (trained on train only), else the model's own training residuals (optimistic)."""
    from pipelines import mc_dropout as mc
    from pipelines.regression import noise_variance
    from search.data import held_out
    from search.train import prepare

    held = job.calibration
    if held is not None:
        return (noise_variance(mc.deterministic_predict(model, held.x, raw=True)[:, 0], held.y),
                f"Aleatoric noise: the model's residual variance on the {len(held.y)} examples of train+valid its "
                "retrain held out.")
    trial = _best_trial_model(job.uri, job.source)
    if trial is not None:
        valid = prepare(job.source.config, job.data).valid
        return (noise_variance(mc.deterministic_predict(trial[1], valid.x, raw=True)[:, 0], valid.y),
                f"Aleatoric noise: the residual variance of the best trial model {trial[0]} on the "
                f"{len(valid.y)} validation examples.")
    train = prepare(_input_config(job.source.config, model), held_out(job.data, job.source.held_out)[0]).train
    return (noise_variance(mc.deterministic_predict(model, train.x, raw=True)[:, 0], train.y),
            "Aleatoric noise: the model's own residual variance on the data it was trained on (no trial model of the "
            "same config to measure it on held-out data), so the intervals are likely too narrow.")


def _input_config(config: dict[str, Any], model: Any) -> dict[str, Any]:
    """The config to prepare ``model``'s inputs with: a logged retrain model (or ensemble) standardizes its own
    inputs (``retrain.served``), so it reads them raw; a trial's model, or one logged before, does not."""
    from pipelines.ensemble import members
    from search.model import standardizes_inputs

    return {**config, "standardize": False} if any(standardizes_inputs(m) for m in members(model)) else config


def _without_epochs(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k != "epochs"}


def _ensemble_of(uri: str, source: tracking.ModelSource) -> list[Any]:
    """The members of the search's deep ensemble when the model is one of them; else none."""
    from pipelines.ensemble import members

    ensemble_run = source.search.tags.get(tags.ENSEMBLE_RUN_ID) if source.search is not None else None
    run = tracking.get_run(uri, ensemble_run) if ensemble_run else None
    if run is None or tracking.run_id_of(source.model_uri) not in run.data.tags.get(tags.ENSEMBLE_OF, "").split(","):
        return []
    return members(tracking.load_keras_model(f"runs:/{ensemble_run}/{tags.MODEL_FOLDER}", uri))


def _best_trial_model(uri: str, source: tracking.ModelSource) -> tuple[str, Any] | None:
    """The search's best trial (run id, model) when it has the model's config (trained on the train split
    only, so the validation split is new to it); None for another config or a model from elsewhere."""
    best = source.search.tags.get(tags.BEST_RUN_ID) if source.search is not None else None
    trial = tracking.get_run(uri, best) if best else None
    if trial is None or _without_epochs(tracking.config_of(trial)) != _without_epochs(source.config):
        return None
    try:
        return best, tracking.load_keras_model(f"runs:/{best}/{tags.MODEL_FOLDER}/model.keras", uri)
    except SearchError:
        return None


def _temperatures(job: Job, single: Any, ensemble: list[Any]) -> Any:
    """Each predictor's temperature, fitted where its models never looked: the retrain's calibration
    slice, with the models themselves (every predictor: deterministic, MC dropout, the ensemble with and
    without MC dropout); else the validation split with the search's best trial model (same config,
    trained on the train split only; the single-model predictors). None with neither."""
    from pipelines.predictors import fit_temperatures, predict_all
    from search.train import prepare

    held = job.calibration
    if held is not None:
        # Other dropout masks than the test split's, so that no sample is reused between fit and score.
        seen = predict_all(single, held.x, mc_samples=job.mc_samples, seed=job.seed + 7919, ensemble=ensemble)
        return fit_temperatures(seen, held.y, f"the {len(held.y)} examples of train+valid the retrain held out "
                                f"({job.source.held_out:.0%}), with the retrained models themselves")
    trial = _best_trial_model(job.uri, job.source)
    if trial is None:
        return None
    best, trial_model = trial
    valid = prepare(job.source.config, job.data).valid
    seen = predict_all(trial_model, valid.x, mc_samples=job.mc_samples, seed=job.seed)
    return fit_temperatures(seen, valid.y, f"the {len(valid.y)} validation examples, with the best trial's model "
                            f"{best} (trained on the train split only, so those examples are new to it)")


def _data(params: Any, dataset: str | None, *, data_dir: str | None, target: str) -> Any:
    """``--dataset`` if given (said loudly when it is not the data the search ran on), else the search's
    own, by its recorded path and checked against its fingerprint."""
    from search.data import load_searched, load_subset

    if dataset is None:
        return load_searched(params, data_dir=data_dir, target=target, what="the model's search")
    column = target if dataset.strip().lower().endswith(".csv") else "label"  # the search's column names a CSV's only
    data = load_subset(dataset, data_dir=data_dir or params.get("data_dir") or None, target=column,
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
    regressor = "target_units" in _layer_names(model)  # search.tasks: a regressor's last layer
    if data.task in ("classification", "regression") and regressor != (data.task == "regression"):
        raise SearchError(f"{model_uri} is a {'regressor' if regressor else 'classifier'}, but {data.name} has a "
                          f"{data.task} target; evaluate it on the data it was trained for (--dataset)")
    if regressor or data.n_classes == 0:  # a number, not classes
        return
    classes = 2 if units == 1 else units
    if classes != data.n_classes:
        raise SearchError(f"{model_uri} predicts {classes} classes, but {data.name} has {data.n_classes}; "
                          "evaluate it on the data it was trained for (--dataset)")


def _layer_names(model: Any) -> set[str]:
    """The names of a model's layers, nested models' (an ensemble's members) included."""
    names: set[str] = set()
    for layer in getattr(model, "layers", []):
        names |= {layer.name} | _layer_names(layer)
    return names


def _artifacts(out: Path, predictions: dict[str, Any], y: Any, metrics: dict[str, dict[str, float]]) -> list[Path]:
    """predictions.npz, the plots and metrics.json, written into ``out``."""
    from pipelines import mc_plots
    from pipelines import uncertainty as unc
    from pipelines.predictors import LABELS

    det = predictions["deterministic"][0]
    samples = predictions.get("mc", predictions["deterministic"])
    p_mean = samples.mean(axis=0)
    means = {LABELS[k]: unc.two_class_if_binary(v.mean(axis=0)) for k, v in predictions.items()}
    right = {label: p.argmax(axis=1) == y for label, p in means.items()}
    others = {f"{k}_probs": v.mean(axis=0) for k, v in predictions.items() if k not in ("deterministic", "mc")}
    files = [
        unc.save_predictions(out / "predictions.npz", labels=y, probs_mean=p_mean, probs_std=samples.std(axis=0),
                             entropy=unc.entropy(p_mean), mutual_info=unc.mutual_information(samples),
                             deterministic_probs=det, **others),
        mc_plots.plot_reliability(p_mean, y, out / "reliability.png", deterministic_probs=det,
                                  others={k: v for k, v in means.items() if k not in (LABELS["mc"], LABELS["deterministic"])}),
        mc_plots.plot_coverage({label: p.max(axis=1) for label, p in means.items()}, right, out / "coverage.png"),
        mc_plots.plot_uncertainty_hist(unc.entropy(p_mean), right[LABELS["mc" if "mc" in predictions else "deterministic"]],
                                       out / "uncertainty.png"),
    ]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return [*files, out / "metrics.json"]


def _log(uri: str, source: tracking.ModelSource, metrics: dict[str, dict[str, float]], files: list[Path], *, samples: int,
         seed: int, dataset: str, note: str, extra: dict[str, Any]) -> str | None:
    """The evaluate run: metrics for both predictors, the artifacts, and the model it read; nested
    under the model's search where it has one."""
    params = {"model_uri": source.model_uri, "mc_samples": samples, "seed": seed, "dataset": dataset,
              **{k: v for k, v in extra.items() if v is not None}}
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


def _regression_artifacts(out: Path, predictives: dict[str, Any], y: Any, metrics: dict[str, dict[str, float]]) -> list[Path]:
    """predictions.npz (each predictor's mean and std; MC dropout's epistemic and aleatoric parts), the
    coverage, predicted-vs-actual and residual plots, and metrics.json."""
    from pipelines import regression_plots as plots
    from pipelines.predictors import LABELS

    main = "mc" if "mc" in predictives else "deterministic"
    p = predictives[main]
    arrays = {"y": np.asarray(y), "mean": p.mean, "std": p.std, "epistemic_std": np.sqrt(p.epistemic),
              "aleatoric_std": np.sqrt(p.aleatoric),
              **{f"{k}_{part}": getattr(v, part) for k, v in predictives.items() for part in ("mean", "std")}}
    np.savez(out / "predictions.npz", **arrays)
    files = [out / "predictions.npz",
             plots.plot_interval_coverage({LABELS[k]: v for k, v in predictives.items()}, y, out / "interval_coverage.png"),
             plots.plot_predicted_vs_actual(p, y, out / "predicted_vs_actual.png", name=LABELS[main]),
             plots.plot_residuals(p, y, out / "residuals.png", name=LABELS[main])]
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return [*files, out / "metrics.json"]
