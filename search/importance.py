"""Which hyperparameters mattered: importances from a search's own trials, with Optuna's evaluators.

The trials (their configs and scores, as MLflow recorded them) are replayed into an in-memory
Optuna study, each key with a distribution spanning the values the trials took, and Optuna's
fANOVA (default) or PED-ANOVA evaluator shares the metric's variance out among the keys. Keys
that some trials lack (conditional ones, such as ``momentum``) are left out, and said so; with
fewer than ``MIN_TRIALS`` scored trials there is no result, only the reason. Optuna is imported
inside ``importances``; no Ray, no MLflow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MIN_TRIALS = 10
EVALUATORS = ("fanova", "ped-anova")


@dataclass
class Importance:
    """Each key's share of the metric's variance (summing to 1, largest first), or why there is none."""

    scores: dict[str, float] = field(default_factory=dict)
    trials: int = 0
    evaluator: str = "fanova"
    left_out: list[str] = field(default_factory=list)  # keys some trials lack
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"scores": self.scores, "trials": self.trials, "evaluator": self.evaluator, "left_out": self.left_out,
                "note": self.note}


def _label(value: Any) -> str:
    return "null" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))


def _distribution(values: Sequence[Any]) -> Any:
    """An Optuna distribution spanning ``values`` (None when they are all alike)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) == len(values):
        lo, hi = min(numbers), max(numbers)
        if lo == hi:
            return None
        log = lo > 0 and hi / lo >= 20
        if all(isinstance(v, int) for v in numbers):
            return IntDistribution(int(lo), int(hi), log=log)
        return FloatDistribution(float(lo), float(hi), log=log)
    labels = sorted({_label(v) for v in values})
    return CategoricalDistribution(labels) if len(labels) > 1 else None


def importances(configs: Sequence[Mapping[str, Any]], values: Sequence[float | None], *, mode: str,
                evaluator: str = "fanova", seed: int = 0) -> Importance:
    """The importance of each key that varies across the scored trials."""
    if evaluator not in EVALUATORS:
        raise ValueError(f"evaluator must be one of {', '.join(EVALUATORS)}, but got {evaluator!r}")
    scored = [(c, float(v)) for c, v in zip(configs, values, strict=True) if v is not None and math.isfinite(v)]
    result = Importance(trials=len(scored), evaluator=evaluator)
    if len(scored) < MIN_TRIALS:
        result.note = (f"{len(scored)} scored trials are too few for importances to mean anything (the split of "
                       f"variance would be noise); at least {MIN_TRIALS} are needed")
        return result
    every = set.intersection(*(set(c) for c, _ in scored))
    result.left_out = sorted(set().union(*(set(c) for c, _ in scored)) - every)
    distributions = {k: d for k in sorted(every) if (d := _distribution([c[k] for c, _ in scored])) is not None}
    if not distributions:
        result.note = "the scored trials all share one config: nothing varies, so nothing can matter more"
        return result
    result.scores = _evaluate(scored, distributions, mode=mode, evaluator=evaluator, seed=seed)
    return result


def _evaluate(scored: Sequence[tuple[Mapping[str, Any], float]], distributions: Mapping[str, Any], *, mode: str,
              evaluator: str, seed: int) -> dict[str, float]:
    import optuna
    from optuna.distributions import CategoricalDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for config, value in scored:
        params = {k: _label(config[k]) if isinstance(d, CategoricalDistribution) else config[k]
                  for k, d in distributions.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dict(distributions), value=value))
    chosen = (optuna.importance.FanovaImportanceEvaluator(seed=seed) if evaluator == "fanova"
              else optuna.importance.PedAnovaImportanceEvaluator())
    scores = optuna.importance.get_param_importances(study, evaluator=chosen)
    return {k: float(v) for k, v in sorted(scores.items(), key=lambda kv: -kv[1])}


def record_importance(tracker: Any, parent_run_id: str, experiment_id: str, configs: Sequence[Mapping[str, Any]],
                      values: Sequence[float | None], *, metric: str, mode: str, evaluator: str = "fanova") -> Importance:
    """Compute the importances and write them on the search's parent run: the plot (``plots/``) and
    the description's "Importance" section. ``tracker`` is a ``search.tracking.Tracker``."""
    from pathlib import Path

    from search import scratch
    from search.plots import plot_importance
    from search.tracking import tags
    from search.tracking.description import importance_section

    found = importances(configs, values, mode=mode, evaluator=evaluator)
    plot = None
    if found.scores:
        with scratch.folder("importance-") as folder:
            path = plot_importance(found.scores, Path(folder, "importance.png"), metric=metric, evaluator=evaluator,
                                   trials=found.trials)
            tracker.log_artifact(parent_run_id, path, tags.PLOTS_FOLDER)
        plot = f"{tags.PLOTS_FOLDER}/importance.png"
    body = importance_section(experiment_id=experiment_id, parent_run_id=parent_run_id, scores=found.scores,
                              trials=found.trials, evaluator=evaluator, metric=metric, left_out=found.left_out,
                              note=found.note, plot=plot)
    tracker.update_section(parent_run_id, "Importance", body)
    return found
