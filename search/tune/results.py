"""The search's results: the one adapter over Ray's ``ResultGrid``, and the summary ``launch`` returns.

``ResultGrid`` hides failed trials' ids and the checkpoint manager, so this module reads Ray's
private ``_experiment_analysis`` (and a restored ``Tuner``'s run config), and no other module
touches Ray's private state. A trial's numbers come from its
MLflow run (so epochs recorded before a resume count too); the best trial is chosen by the
project's one rule, ``search.tracking.rank_key``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from search.space import Space
from search.tracking import Tracker, rank_key, tags
from search.tune.trainable import trial_config


@dataclass
class TrialSummary:
    trial_id: str
    run_id: str | None
    name: str
    state: str
    config: dict[str, Any]
    metric: float | None
    best_epoch: int | None
    epochs: int
    tie_break: float | None = None  # val_loss at the best epoch


@dataclass
class SearchResult:
    name: str
    experiment: str
    tracking_uri: str
    parent_run_id: str
    metric: str
    mode: str
    trials: list[TrialSummary] = field(default_factory=list)
    wall_time_s: float = 0.0
    storage_path: str = ""

    def top(self, n: int = 5) -> list[TrialSummary]:
        """The ``n`` best scored trials, best first."""
        scored = [t for t in self.trials if t.metric is not None and math.isfinite(t.metric)]
        return sorted(scored, key=lambda t: rank_key(t.metric, t.tie_break, t.name, self.mode))[:n]  # type: ignore[arg-type]

    @property
    def best(self) -> TrialSummary | None:
        top = self.top(1)
        return top[0] if top else None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["best"] = asdict(self.best) if self.best else None
        out["ui_command"] = ui_command(self.tracking_uri)
        return out


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on ``uri``."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"search ui --tracking-uri {uri}"


class Grid:
    """What the search needs from Ray's ``ResultGrid``: every trial, and a trial's best checkpoint."""

    def __init__(self, grid: Any) -> None:
        self._grid = grid

    @property
    def trials(self) -> list[Any]:
        return list(self._grid._experiment_analysis.trials)  # noqa: SLF001 (ResultGrid hides failed trials' ids)

    def best_checkpoint(self, trial_id: str) -> Any:
        """The best checkpoint Ray kept for ``trial_id`` (scored by the search metric), else the latest."""
        for trial in self.trials:
            if trial.trial_id == trial_id:
                manager = trial.run_metadata.checkpoint_manager
                results = manager.best_checkpoint_results or (
                    [manager.latest_checkpoint_result] if manager.latest_checkpoint_result else [])
                return results[-1].checkpoint if results else None
        return None

    def unfinished(self, tracker: Tracker) -> list[Any]:
        """Trials that did not end: on Ctrl-C Ray marks running trials TERMINATED without telling
        the callbacks, so a trial counts as ended only once its MLflow run has an end state."""
        ended = {r.data.tags.get(tags.TRIAL_ID) for r in tracker.child_runs(role=tags.ROLE_TRIAL)
                 if tags.END_STATE in r.data.tags}
        return [t for t in self.trials if t.trial_id not in ended]


def summarize(grid: Grid, tracker: Tracker, space: Space, *, name: str, experiment: str, uri: str, metric: str,
              mode: str, max_epochs: int | None, storage: str) -> SearchResult:
    """The search's trials, as MLflow recorded them (so trials from before a resume count too)."""
    result = SearchResult(name=name, experiment=experiment, tracking_uri=uri, parent_run_id=tracker.parent_run_id or "",
                          metric=metric, mode=mode, storage_path=storage)
    runs = {r.data.tags.get(tags.TRIAL_ID): r for r in tracker.child_runs(role=tags.ROLE_TRIAL)}
    for trial in grid.trials:
        run = runs.get(trial.trial_id)
        metrics = run.data.metrics if run is not None else {}
        state = run.data.tags.get(tags.END_STATE, "unknown") if run is not None else "not recorded"
        result.trials.append(TrialSummary(
            trial_id=trial.trial_id, run_id=run.info.run_id if run is not None else None,
            name=run.info.run_name if run is not None else trial.trial_id, state=state,
            config=trial_config(space, trial.config, max_epochs), metric=metrics.get(tags.best_metric(metric)),
            best_epoch=_int(metrics.get(tags.BEST_EPOCH)), epochs=_int(metrics.get(tags.EPOCHS_RUN)) or 0,
            tie_break=metrics.get(tags.BEST_EPOCH_VAL_LOSS),
        ))
    return result


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def storage_folder(root: str, name: str) -> str:
    return str(Path(root, name))


def replace_callbacks(tuner: Any, callbacks: list[Any]) -> None:
    """On resume, swap the callbacks Ray restored (pickled by the driver that wrote them, which may be
    dead, pointing at its store and parent run) for this invocation's. ``Tuner.restore`` takes no
    run config, so this is the one other place Ray's private state is touched."""
    from search.errors import SearchError

    internal = getattr(tuner, "_local_tuner", None)
    run_config = internal.get_run_config() if internal is not None else None
    if run_config is None:
        raise SearchError("this Ray version restores searches differently; resume is not supported here")
    run_config.callbacks = callbacks
    run_config.verbose = 0
