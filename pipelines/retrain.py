"""Retrain the best configuration of a search, read from MLflow, with several seeds.

The config comes from the best trial's child run, so retraining works in a later shell, on
another machine, or against a tracking server. It trains on train+valid for the epoch at which
the best trial's validation curve, smoothed over 5 epochs, peaked (``retrain_epochs``), then
scores the test split the search never saw. Several seeds give a mean ± std, which says whether
the winner's lead over the runner-up is real.

A calibration slice of train+valid (``held_out``, 10% by default; ``search.data.held_out``) is
left out of every seed's training, so that evaluate can fit temperatures (and a regressor's
noise) on the retrained models themselves, on examples they never saw. The search's model is the
seed that scores best on that slice (``pick_seed``): the test split picks nothing.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from search import tracking
from search.config import TrialConfig
from search.tracking import tags
from search.tracking.description import retrain_section
from search.errors import SearchError
from search.tasks import get_task, recorded_epoch_keys

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]  # (done, total, what)
HELD_OUT = 0.1  # the default calibration slice: 144 of digits' 1,437 train+valid images
SMOOTH_EPOCHS = 5  # the window of retrain_epochs' moving average


def retrain_epochs(history: Sequence[float], mode: str, fallback: int, window: int = SMOOTH_EPOCHS) -> int:
    """How many epochs retrain trains for: where the best trial's validation curve (one value per epoch),
    averaged over a centred window of ``window`` epochs (the ends repeated), peaks; the latest of equal
    peaks, up to the first non-finite value. ``fallback`` (the trial's recorded best epoch) without a history.

    The raw best epoch is one noisy reading: the same config's curve, within 0.958-0.983 from epoch 6
    on, peaked at epoch 10 in one run and at 20 in another (docs/benchmarks.md).
    """
    scores = (1.0 if mode == "max" else -1.0) * np.asarray(history, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(scores))
    scores = scores[: bad[0]] if bad.size else scores  # the curve ends where the trial diverged
    if scores.size == 0:
        return fallback
    half = window // 2
    smooth = np.convolve(np.pad(scores, (half, half), mode="edge"), np.ones(window) / window, mode="valid")
    return int(np.flatnonzero(smooth >= smooth.max() - 1e-9)[-1]) + 1  # 1-based; the latest of equal peaks


def _with_test_keys(run: Any) -> dict[str, Any]:
    """A seed or ensemble run as a dict, its scores also as flat ``test_<score>`` keys (as MLflow has them)."""
    return {**asdict(run), **{f"{tags.TEST_PREFIX}{k}": v for k, v in run.scores.items()}}


@dataclass
class SeedRun:
    """One seed's run and its test scores: ``loss`` and ``accuracy``; or ``loss``, ``rmse``, ``mae``, ``r2``;
    ``held``: its ``loss`` and score on the calibration slice (empty without one)."""

    seed: int
    run_id: str
    scores: dict[str, float]
    held: dict[str, float] = field(default_factory=dict)


@dataclass
class ConfigRetrain:
    """One config retrained with several seeds; ``score`` is the test score it is judged by."""

    trial_run_id: str
    trial_name: str
    search_metric: float
    config: dict[str, Any]
    epochs: int
    seeds: list[SeedRun] = field(default_factory=list)
    score: str = "accuracy"
    mode: str = "max"
    held_out: float = 0.0  # the calibration share of train+valid no seed trained on

    def stats(self, key: str) -> tuple[float, float]:
        """Mean and standard deviation over the seeds of ``key`` (``test_accuracy``, ``test_rmse``, ``test_loss``...)."""
        values = [s.scores[key.removeprefix("test_")] for s in self.seeds]
        return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)

    score_mean = property(lambda self: self.stats(f"test_{self.score}")[0])
    score_std = property(lambda self: self.stats(f"test_{self.score}")[1])
    loss_mean = property(lambda self: self.stats("test_loss")[0])
    loss_std = property(lambda self: self.stats("test_loss")[1])

    def pick_seed(self) -> SeedRun:
        """The seed that becomes the search's model: the best score on the calibration slice, ties (a few
        hundred examples tie often) to the lower loss there, then to the lower seed; without a slice, the
        first seed. Never the test split: a seed picked there would flatter its own test figures."""
        if not all(s.held for s in self.seeds):
            return min(self.seeds, key=lambda s: s.seed)
        sign = -1 if self.mode == "max" else 1
        return min(self.seeds, key=lambda s: (sign * s.held[self.score], s.held["loss"], s.seed))

    def summary(self) -> dict[str, Any]:
        keys = self.seeds[0].scores if self.seeds else {}
        return {**asdict(self), "seeds": [_with_test_keys(s) for s in self.seeds],
                **{f"test_{k}_{part}": value for k in keys
                   for part, value in zip(("mean", "std"), self.stats(f"test_{k}"), strict=True)}}


@dataclass
class EnsembleRun:
    """The deep ensemble of the best config's seeds, as logged."""

    run_id: str
    model_uri: str
    members: int
    scores: dict[str, float]

    def summary(self) -> dict[str, Any]:
        return _with_test_keys(self)


@dataclass
class RetrainResult:
    search: str
    parent_run_id: str
    tracking_uri: str
    metric: str
    best: ConfigRetrain
    model_uri: str
    best_seed_run_id: str
    registered: str | None = None
    runner_up: ConfigRetrain | None = None
    verdict: str = ""
    ensemble: EnsembleRun | None = None  # with --seeds 2 or more

    def to_dict(self) -> dict[str, Any]:
        return {
            "search": self.search, "parent_run_id": self.parent_run_id, "tracking_uri": self.tracking_uri,
            "metric": self.metric, "best": self.best.summary(), "model_uri": self.model_uri,
            "best_seed_run_id": self.best_seed_run_id, "registered": self.registered,
            "runner_up": self.runner_up.summary() if self.runner_up else None, "verdict": self.verdict,
            "ensemble": self.ensemble.summary() if self.ensemble else None,
        }


def verdict(best: ConfigRetrain, runner_up: ConfigRetrain | None, lead: float | None, metric: str) -> str:
    """Plain words on whether the best config's lead survives the seed spread."""
    n, what = len(best.seeds), f"test {best.score}"
    if runner_up is not None:
        diff = best.score_mean - runner_up.score_mean
        gain = diff if best.mode == "max" else -diff
        spread = max(best.score_std, runner_up.score_std)
        if gain <= spread:
            return (
                f"The best config's lead over the runner-up on {what} ({diff:+.4f}) is within the seed spread "
                f"(std up to {spread:.4f} over {n} seeds): the two are not distinguishable; either is a fair pick."
            )
        return (
            f"The best config beats the runner-up by {diff:+.4f} {what}, more than the seed spread "
            f"(std up to {spread:.4f} over {n} seeds)."
        )
    if lead is None:
        return "The search had a single scored trial; there is no runner-up to compare with."
    spread = best.score_std
    if n > 1 and abs(lead) <= spread:
        return (
            f"The best trial led the runner-up by {lead:.4f} {metric}, within the seed spread of {what} "
            f"(std {spread:.4f} over {n} seeds): the lead may be luck. Retrain both with --compare-runner-up to know."
        )
    return f"The best trial led the runner-up by {lead:.4f} {metric} (seed std of {what} {spread:.4f} over {n} seeds)."


def check_options(*, seeds: int, epochs: int | None, held_out: float) -> None:
    """Refuse retrain's bad options, each with its rule and value (``search pipeline`` asks before its search)."""
    if seeds < 1:
        raise SearchError(f"--seeds must be at least 1, got {seeds}")
    if epochs is not None and epochs < 1:
        raise SearchError(f"--epochs must be at least 1, got {epochs}")
    if not 0 <= held_out < 0.5:
        raise SearchError(f"--calibration-fraction must be in [0, 0.5), got {held_out}")


def retrain(
    *,
    tracking_uri: str | None = None,
    experiment: str = "search",
    name: str | None = None,
    parent_run: str | None = None,
    epochs: int | None = None,
    seeds: int = 3,
    register: str | None = None,
    compare_runner_up: bool = False,
    data_dir: str | None = None,
    held_out: float = HELD_OUT,
    progress: Progress | None = None,
) -> RetrainResult:
    """Retrain the best trial of a search (and optionally its runner-up) and log the runs."""
    # One function on purpose: it is the pipeline's order of work (find, train each seed, pick the
    # best seed, log the model, describe), each step one or two calls.
    check_options(seeds=seeds, epochs=epochs, held_out=held_out)
    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_reachable(uri, must_exist=True)
    if register is not None:
        tracking.check_model_name(uri, register)
    record = tracking.SearchRecord.find(uri, experiment, name=name, run_id=parent_run)
    metric = record.metric
    trials = record.ranked_trials()
    if not trials:
        raise SearchError(f"search {record.name} has no finished trial with {metric}; nothing to retrain")
    status = record.parent.info.status
    if status != "FINISHED":  # interrupted, or still running: its best so far, which --resume may still beat
        log.warning("search %s is %s, not finished: retraining the best of the %d trials that scored so far "
                    "(finish it first with `search launch --name %s --resume`)", record.name, status, len(trials),
                    record.name)
    from search.data import held_out as carve
    from search.data import load_searched

    dataset = load_searched(record.params, data_dir=data_dir)
    # What every seed trains on: train+valid less the slice (too few examples for one: said now, before any run).
    trained_on, held = carve(dataset, held_out)
    task = get_task(dataset.task)
    score, mode = task.test_score, task.mode
    tracker = record.writer()
    transfer = tracking.transfer_source(uri, record.params["transfer_from"]) if record.params.get("transfer_from") else None

    picks = trials[:2] if compare_runner_up and len(trials) > 1 else trials[:1]
    total = seeds * len(picks)
    results: list[ConfigRetrain] = []
    members: list[Any] = []  # the best config's seed models: the deep ensemble
    example = np.asarray(dataset.test.x[:5], dtype="float32")
    # What each output column is, in every logged model's MLmodel file: --classes and a CSV's labels are
    # renumbered 0..k-1, and nothing else in the model says which column is which class.
    metadata = {} if task.numeric else {"classes": list(dataset.class_names or map(str, range(dataset.n_classes)))}
    for rank, trial in enumerate(picks):
        cfg = tracking.config_of(trial)
        n_epochs = epochs or retrain_epochs(tracking.metric_history(uri, trial.info.run_id, metric), record.mode,
                                            int(trial.data.metrics.get(tags.BEST_EPOCH) or cfg.get("epochs") or 20))
        entry = ConfigRetrain(trial.info.run_id, trial.info.run_name, record.score(trial), cfg, n_epochs, score=score,
                              mode=mode, held_out=held_out)
        for k in range(seeds):
            if progress:
                progress(len(results) * seeds + k, total, f"{'best' if rank == 0 else 'runner-up'} seed {k}")
            seed_run, model = _train_seed(tracker, trained_on, held, entry, seed=k, role_rank=rank, transfer=transfer)
            entry.seeds.append(seed_run)
            if rank == 0:  # every seed's model of the best config, so each can be loaded, served and ensembled
                members.append(served(model, cfg, trained_on))
                tracking.log_keras_model(tracker, seed_run.run_id, members[-1], example, metadata)
        results.append(entry)
    if progress:
        progress(total, total, "done")
    best, runner_up = results[0], (results[1] if len(results) > 1 else None)
    lead = None
    if len(trials) > 1:
        lead = abs(record.score(trials[0]) - record.score(trials[1]))
    text = verdict(best, runner_up, lead, metric)
    seed_run = best.pick_seed()
    model_uri = f"runs:/{seed_run.run_id}/{tags.MODEL_FOLDER}"  # logged above, with the other seeds
    if register:
        tracking.register_model(tracker, seed_run.run_id, register)
    tracker.set_tags(seed_run.run_id, {tags.BEST_SEED: "true"})
    tracker.set_tags(record.run_id, {tags.BEST_RETRAIN_RUN_ID: seed_run.run_id, tags.MODEL_URI: model_uri})
    tracker.final_metrics(record.run_id, {f"retrain_test_{score}_mean": best.score_mean,
                                          f"retrain_test_{score}_std": best.score_std})
    ensemble = _log_ensemble(tracker, record, trained_on, best, members, example, metadata) if seeds > 1 else None
    _describe(record, results, text, model_uri, register, ensemble)
    return RetrainResult(
        search=record.name, parent_run_id=record.run_id, tracking_uri=uri, metric=metric, best=best,
        model_uri=model_uri, best_seed_run_id=seed_run.run_id, registered=register, runner_up=runner_up, verdict=text,
        ensemble=ensemble,
    )


def served(model: Any, config: Any, trained_on: Any) -> Any:
    """The model as it is logged and served: uncompiled, and with ``standardize`` taking raw inputs (the
    training statistics as its first layer), so its signature, ``mlflow models serve`` and evaluate all
    give it the data as the dataset holds it."""
    from search.model import inference_copy, with_input_standardization

    if not TrialConfig.of(config).standardize:
        return inference_copy(model)
    from search.data import standardization

    return with_input_standardization(model, *standardization(trained_on.train))  # itself an uncompiled copy


def _log_ensemble(tracker: tracking.Tracker, record: tracking.SearchRecord, trained_on: Any, entry: ConfigRetrain,
                  members: list[Any], example: Any, metadata: dict[str, Any]) -> EnsembleRun:
    """The deep ensemble of the best config's seeds: one Keras model averaging their outputs (probabilities;
    a regressor's mean and, with gaussian_nll, log variance), scored on the test split and logged (Keras
    flavor) on its own run, ``search.rank=ensemble``."""
    from pipelines.ensemble import ensemble_model

    model = ensemble_model(members)  # served copies: they take the inputs raw
    test = trained_on.test
    scores = _ensemble_scores(np.asarray(model.predict(test.x, batch_size=1024, verbose=0)), test.y,
                              get_task(trained_on.task).numeric)
    seeds = ",".join(s.run_id for s in entry.seeds)
    run_id = tracker.start_child(
        f"retrain ensemble of {len(members)} seeds ({entry.trial_name.split(' ')[0]})",
        {**entry.config, "epochs": entry.epochs, "members": len(members), tags.HELD_OUT: entry.held_out},
        {tags.ROLE: tags.ROLE_RETRAIN, tags.RETRAIN_OF: entry.trial_run_id, tags.RANK: tags.RANK_ENSEMBLE,
         tags.ENSEMBLE_OF: seeds},
    )
    with tracker.closing(run_id):
        tracker.final_metrics(run_id, {f"{tags.TEST_PREFIX}{k}": v for k, v in scores.items()})
        model_uri = tracking.log_keras_model(tracker, run_id, model, example, metadata)
    tracker.end_run(run_id, "FINISHED")
    tracker.set_tags(record.run_id, {tags.ENSEMBLE_RUN_ID: run_id})
    tracker.final_metrics(record.run_id, {f"retrain_ensemble_test_{entry.score}": scores[entry.score]})
    return EnsembleRun(run_id, model_uri, len(members), scores)


def _ensemble_scores(outputs: np.ndarray, y: np.ndarray, numeric: bool) -> dict[str, float]:
    """The ensemble's test scores from its averaged outputs: accuracy and NLL, or RMSE, MAE and R² of its mean."""
    if numeric:
        from pipelines.regression import point_scores

        return point_scores(outputs[:, 0], y)
    from pipelines.uncertainty import nll, two_class_if_binary

    probs = two_class_if_binary(outputs)
    return {"accuracy": float((probs.argmax(axis=1) == y).mean()), "loss": nll(probs, y)}


def _describe(record: tracking.SearchRecord, results: list[ConfigRetrain], verdict_text: str, model_uri: str,
              register: str | None, ensemble: EnsembleRun | None) -> None:
    """The "Retrain" section of the search's description: test accuracy mean ± std, the runs linked."""
    entries = [{**asdict(c), "label": "best" if i == 0 else "runner-up", "score_mean": c.score_mean,
                "score_std": c.score_std, "loss_mean": c.loss_mean, "loss_std": c.loss_std}
               for i, c in enumerate(results)]
    body = retrain_section(experiment_id=record.experiment_id, entries=entries, verdict=verdict_text,
                           model_uri=model_uri, registered=register,
                           ensemble=ensemble.summary() if ensemble else None)
    record.update_section("Retrain", body)


def _train_seed(tracker: tracking.Tracker, merged: Any, held: Any, entry: ConfigRetrain, *, seed: int,
                role_rank: int, transfer: tuple[str, Any] | None = None) -> tuple[SeedRun, Any]:
    """Train ``entry``'s config on ``merged`` (train+valid less the calibration slice ``held``, or None:
    ``search.data.held_out``) with ``seed``; score the test split and the slice; log a child run."""
    from search.train import fit, prepare_held

    role = "best" if role_rank == 0 else "runner_up"
    name = f"retrain {role} seed {seed} ({entry.trial_name.split(' ')[0]})"
    run_id = tracker.start_child(
        name, {**entry.config, "epochs": entry.epochs, "seed": seed, tags.HELD_OUT: entry.held_out},
        {tags.ROLE: tags.ROLE_RETRAIN, tags.RETRAIN_OF: entry.trial_run_id, tags.SEED: str(seed), tags.RANK: role,
         **({tags.TRANSFER_FROM: transfer[0]} if transfer and int(entry.config.get("reuse_layers") or 0) else {})},
    )

    keys = recorded_epoch_keys()  # without validation data, the rows hold no val_ metrics

    def report(row: dict[str, float], _model: Any) -> None:
        tracker.log_metrics(run_id, {k: row[k] for k in keys if k in row}, int(row["epoch"]))

    with tracker.closing(run_id):
        result = fit(entry.config, merged, epochs=entry.epochs, report=report, seed=seed, validate=False,
                     source=transfer[1] if transfer else None)
        test, on_held = prepare_held(entry.config, merged, held)
        numeric = get_task(merged.task).numeric  # R² and the rest from the predictions, in the target's units
        scores = _scores(result.model, test, numeric=numeric)
        on_slice = {} if on_held is None else _scores(result.model, on_held, numeric=numeric)
        if not all(math.isfinite(v) for v in [*scores.values(), *on_slice.values()]):
            raise SearchError(f"retraining {entry.trial_name} with seed {seed} gave non-finite test metrics")
        tracker.final_metrics(run_id, {**{f"{tags.TEST_PREFIX}{k}": v for k, v in scores.items()},
                                       **{f"{tags.HELD_OUT_PREFIX}{k}": v for k, v in on_slice.items()}})
    tracker.end_run(run_id, "FINISHED")
    return SeedRun(seed, run_id, scores, on_slice), result.model


def _scores(model: Any, split: Any, *, numeric: bool) -> dict[str, float]:
    """``loss`` and the task's scores (accuracy; rmse, mae and r2) of ``model`` on ``split``."""
    from search.train import evaluate

    scores = evaluate(model, split)
    if not numeric:
        return scores
    from pipelines.regression import point_scores

    predicted = np.asarray(model.predict(split.x, batch_size=1024, verbose=0))[:, 0]
    return {"loss": scores["loss"], **point_scores(predicted, split.y)}
