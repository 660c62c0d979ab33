"""The read model: a search as MLflow records it, for ``runs``, ``best``, ``retrain`` and ``evaluate``.

``SearchRecord.find`` finds a search by name, by parent run id, or the newest one; the record
then answers the questions later commands ask: its settings, its trials ranked by the one rule
for "best" (``rank_key``), the best trial, its model's URI, and it rewrites one section of the
description. Nothing outside ``search/tracking/`` reads MLflow's entities or filter syntax.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from search import scratch
from search.errors import TrackingError
from search.tracking import tags
from search.tracking.query import query
from search.tracking.ranking import rank_key
from search.tracking.store import client
from search.tracking.writer import Tracker

if TYPE_CHECKING:
    from mlflow.entities import Run as MlflowRun

    from search.tracking.query import Run as ReaderRun

    Run = MlflowRun | ReaderRun  # what ``query`` returns: the same fields, whichever backend answers

BEST_PAGE = 100  # trials ``best_trial`` asks the store for, best first


def config_of(run: Run) -> dict[str, Any]:
    """A run's trial config, back from its params (typed with the config vocabulary)."""
    from search import config as vocab

    out: dict[str, Any] = {}
    for key, text in run.data.params.items():
        if key in vocab.KEYS:
            out[key] = None if text in ("None", "null") else vocab.parse_value(key, text)
    return out


def run_id_of(model_uri: str) -> str | None:
    """The run a ``runs:/RUN_ID/...`` model URI names; None for any other URI."""
    return model_uri[len("runs:/"):].split("/")[0] if model_uri.startswith("runs:/") else None


def list_searches(uri: str, experiment: str) -> list[Run]:
    """Parent runs of ``experiment``, newest first."""
    q = query(uri)
    exp_id = q.experiment_id(experiment)
    return [] if exp_id is None else q.runs(exp_id, {tags.ROLE: tags.ROLE_SEARCH})


def get_run(uri: str, run_id: str) -> Run | None:
    """The run ``run_id``, or None if the store has none of that id."""
    return query(uri).run(run_id)


def artifact_paths(uri: str, run_id: str, folder: str | None = None) -> set[str]:
    """The artifact paths directly under ``folder`` of a run."""
    return {a.path for a in client(uri).list_artifacts(run_id, folder)}


def metric_history(uri: str, run_id: str, key: str) -> list[float]:
    """Values of ``key`` at each step, in step order."""
    hist = client(uri).get_metric_history(run_id, key)
    return [m.value for m in sorted(hist, key=lambda m: m.step)]


@dataclass
class SearchRecord:
    """One search: its parent run in the store at ``uri``."""

    uri: str
    parent: Run

    # -- finding ---------------------------------------------------------------------------
    @classmethod
    def find(cls, uri: str, experiment: str, *, name: str | None = None, run_id: str | None = None) -> SearchRecord:
        """A search by parent run id, by name, or the newest in ``experiment``."""
        if run_id:
            run = get_run(uri, run_id)
            if run is None:
                raise TrackingError(f"no run {run_id} in {uri}; list searches with `search runs`")
            if run.data.tags.get(tags.ROLE) != tags.ROLE_SEARCH:
                role = run.data.tags.get(tags.ROLE, "not made by search")
                raise TrackingError(f"run {run_id} is not a search (its role is {role}); pass the parent run of a search")
            return cls(uri, run)
        runs = list_searches(uri, experiment)
        if name:
            runs = [r for r in runs if r.data.tags.get(tags.SEARCH_NAME) == name]
        if not runs:
            what = f"named {name!r} " if name else ""
            raise TrackingError(
                f"no search {what}in experiment {experiment!r} at {uri}; run `search launch` first, or check --experiment"
            )
        return cls(uri, runs[0])

    @classmethod
    def all(cls, uri: str, experiment: str) -> list[SearchRecord]:
        """Every search in ``experiment``, newest first."""
        return [cls(uri, run) for run in list_searches(uri, experiment)]

    @classmethod
    def of_run(cls, uri: str, run: Run) -> SearchRecord | None:
        """The search a run belongs to (the run itself for a parent run), if any."""
        if run.data.tags.get(tags.ROLE) == tags.ROLE_SEARCH:
            return cls(uri, run)
        parent_id = run.data.tags.get(tags.PARENT)
        parent = get_run(uri, parent_id) if parent_id else None
        return cls(uri, parent) if parent is not None else None

    # -- what it is ------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.parent.info.run_id

    @property
    def name(self) -> str:
        return self.parent.info.run_name

    @property
    def experiment_id(self) -> str:
        return self.parent.info.experiment_id

    @property
    def experiment_name(self) -> str:
        return client(self.uri).get_experiment(self.experiment_id).name

    @property
    def params(self) -> Mapping[str, str]:
        return self.parent.data.params

    @property
    def tags(self) -> Mapping[str, str]:
        return self.parent.data.tags

    @property
    def metric(self) -> str:
        return self.params.get("metric", "val_accuracy")

    @property
    def mode(self) -> str:
        return self.params.get("mode", "max")

    # -- its trials ------------------------------------------------------------------------
    def children(self, role: str | None = None) -> list[Run]:
        return query(self.uri).runs(self.experiment_id, {tags.PARENT: self.run_id} | ({tags.ROLE: role} if role else {}))

    def ranked_trials(self, trials: list[Run] | None = None) -> list[Run]:
        """The trial runs (``trials``, else all of them) that scored the search metric, best first by ``rank_key``."""
        key = tags.best_metric(self.metric)
        found = self.children(tags.ROLE_TRIAL) if trials is None else trials
        scored = [r for r in found if key in r.data.metrics and math.isfinite(r.data.metrics[key])]
        return sorted(scored, key=lambda r: rank_key(r.data.metrics[key], r.data.metrics.get(tags.BEST_EPOCH_VAL_LOSS),
                                                     r.info.run_name or "", self.mode))

    def best_trial(self) -> Run:
        """The best trial, as ``ranked_trials()[0]``; a ``TrackingError`` when no trial scored.

        The store sorts by the metric and sends one page (NaN and missing values sort last in either
        direction), and ``rank_key`` breaks ties inside it, so a 1,000-trial search does not load every
        run. When the best value's ties may run past the page, or the page holds no finite value, it
        ranks them all.
        """
        key = tags.best_metric(self.metric)
        page = query(self.uri).runs(self.experiment_id, {tags.PARENT: self.run_id, tags.ROLE: tags.ROLE_TRIAL},
                                    order_metric=(key, self.mode == "max"), limit=BEST_PAGE)
        scored = [r for r in page if key in r.data.metrics and math.isfinite(r.data.metrics[key])]
        values = [r.data.metrics[key] for r in page if key in r.data.metrics]
        if len(page) == BEST_PAGE and (not scored or values[-1] == scored[0].data.metrics[key]):
            scored = self.ranked_trials()
        if not scored:
            raise TrackingError(f"search {self.name} has no finished trial with {self.metric}")
        return min(scored, key=lambda r: rank_key(r.data.metrics[key], r.data.metrics.get(tags.BEST_EPOCH_VAL_LOSS),
                                                  r.info.run_name or "", self.mode))

    def score(self, trial: Run) -> float:
        """A trial's value of the search metric (its best epoch's)."""
        return trial.data.metrics[tags.best_metric(self.metric)]

    def artifact_text(self, path: str) -> str | None:
        """The text of the artifact ``path`` of the parent run, or None if it has none."""
        from pathlib import Path

        if path not in artifact_paths(self.uri, self.run_id):
            return None
        with scratch.folder("artifact-") as folder:
            local = client(self.uri).download_artifacts(self.run_id, path, folder)
            return Path(local).read_text()

    def open_trial_runs(self) -> list[Run]:
        """Trial runs still RUNNING (a driver that died left them so)."""
        return [r for r in self.children(tags.ROLE_TRIAL) if r.info.status == "RUNNING"]

    def model_run_id(self) -> str | None:
        """The run holding the search's model: the best retrain, else the best trial."""
        return self.tags.get(tags.BEST_RETRAIN_RUN_ID) or self.tags.get(tags.BEST_RUN_ID) or None

    # -- views for the CLI -----------------------------------------------------------------
    def overview(self) -> dict[str, Any]:
        """One row of ``search runs``: name, status, space, trials and the best metric."""
        metrics = self.parent.data.metrics
        trials, best = metrics.get(tags.TRIALS), metrics.get(tags.best_metric(self.metric))
        if trials is None:  # interrupted or still running: the summary comes at the end, so read the trials
            found = self.children(tags.ROLE_TRIAL)
            ranked = self.ranked_trials(found)
            trials, best = len(found), (self.score(ranked[0]) if ranked else None)
        return {"name": self.name, "run_id": self.run_id, "status": self.parent.info.status,
                "space": self.params.get("space"), "trials": int(trials), "metric": self.metric, "best": best}

    def trial_view(self, trial: Run) -> dict[str, Any]:
        """What ``search best`` prints of a trial: its metric, best epoch, config and every metric."""
        epoch = trial.data.metrics.get(tags.BEST_EPOCH)
        return {"search": self.name, "search_status": self.parent.info.status, "parent_run_id": self.run_id,
                "run_id": trial.info.run_id,
                "trial": trial.info.run_name, "metric": self.metric, "value": self.score(trial),
                "best_epoch": None if epoch is None else int(epoch), "config": config_of(trial),
                "metrics": dict(trial.data.metrics)}

    # -- writing its description -----------------------------------------------------------
    def writer(self) -> Tracker:
        """A tracker whose parent run is this search (for child runs, tags and metrics)."""
        tracker = Tracker(self.uri, self.experiment_name)
        tracker.parent_run_id = self.run_id
        return tracker

    def update_section(self, heading: str, body: str) -> str:
        """Replace the ``### heading`` section of the search's description."""
        return self.writer().update_section(self.run_id, heading, body)


@dataclass
class ModelSource:
    model_uri: str
    search: SearchRecord | None  # the search the model belongs to, where known
    config: dict[str, Any]
    held_out: float = 0.0  # the share of train+valid the model's retrain held out for calibration


def _held_out(run: Run | None) -> float:
    """The calibration share a retrain run recorded (0 for any other run, or one from before the slice)."""
    text = run.data.params.get(tags.HELD_OUT) if run is not None else None
    return float(text) if text not in (None, "", "None") else 0.0


def model_source(uri: str, *, run_id: str | None = None, model_uri: str | None = None,
                 experiment: str = "search") -> ModelSource:
    """Where a model comes from: a run (of any role: a search means its model) or a model URI;
    with neither, the newest search's model."""
    if model_uri:
        run = None
        if run_id_of(model_uri):
            run = get_run(uri, run_id_of(model_uri))
            if run is None:
                raise TrackingError(f"model URI {model_uri} names a run that does not exist in {uri}")
        record = SearchRecord.of_run(uri, run) if run is not None else None
        return ModelSource(model_uri, record, config_of(run) if run is not None else {}, _held_out(run))
    if run_id is None:
        record = SearchRecord.find(uri, experiment)
        run_id = record.model_run_id()
        if not run_id:
            raise TrackingError(f"search {record.name} has no retrained or best model; run `search retrain` first")
    run = get_run(uri, run_id)
    if run is None:
        raise TrackingError(f"no run {run_id} in {uri}; list searches with `search runs`")
    role = run.data.tags.get(tags.ROLE)
    if role == tags.ROLE_SEARCH:
        best = SearchRecord(uri, run).model_run_id()
        if not best:
            raise TrackingError(f"search {run.info.run_name} has no model yet; run `search retrain` first")
        return model_source(uri, run_id=best, experiment=experiment)
    if role == tags.ROLE_RETRAIN:
        return ModelSource(f"runs:/{run_id}/{tags.MODEL_FOLDER}", SearchRecord.of_run(uri, run), config_of(run),
                           _held_out(run))
    if role == tags.ROLE_TRIAL:
        if f"{tags.MODEL_FOLDER}/model.keras" not in artifact_paths(uri, run_id, tags.MODEL_FOLDER):
            raise TrackingError(f"trial run {run_id} has no logged model (only the best trial of a search keeps one)")
        return ModelSource(f"runs:/{run_id}/{tags.MODEL_FOLDER}/model.keras", SearchRecord.of_run(uri, run),
                       config_of(run))
    raise TrackingError(f"run {run_id} holds no model that search made (role: {role or 'none'}); pass --model-uri instead")
