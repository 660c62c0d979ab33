"""What a search writes on its parent run: its settings at the start, its result at the end.

At the start: the settings as params, the description's overview, the dataset and space tags
and the git commit. At the end: the best trial's metrics, config and model, the plots, and the
"Best trial" section of the description. Writes through ``search.tracking`` only.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search import scratch
from search.errors import TrackingError
from search.importance import record_importance
from search.tracking import Tracker, git_commit, tags
from search.tracking.description import best_section, search_overview
from search.tune.results import Grid, SearchResult

if TYPE_CHECKING:
    from search.data import Dataset
    from search.space import Space
    from search.tune.options import LaunchOptions

log = logging.getLogger(__name__)


def search_params(opts: LaunchOptions, dataset: Dataset, *, scheduler: str, concurrency: int,
                  max_t: int) -> dict[str, Any]:
    """The parent run's params: the search's settings as they were resolved, and the data's identity
    (a built-in name or an absolute path, and a digest of its contents), which --resume, retrain and
    evaluate load and check."""
    s, r = opts.search, opts.resources
    return {
        "dataset_source": dataset.source, "dataset_fingerprint": dataset.fingerprint(),
        "max_epochs_option": s.max_epochs if s.max_epochs is not None else "",
        "transfer_from": s.transfer_from or "", "warm_start": json.dumps(list(s.warm_start)) if s.warm_start else "",
        "classes": s.classes or "", "train_limit": s.train_limit if s.train_limit is not None else "",
        "space": s.space, "dataset": s.dataset, "data_dir": s.data_dir or "", "target": s.target, "task": s.task,
        "num_samples": s.num_samples, "searcher": s.searcher, "scheduler": scheduler, "metric": s.metric,
        "mode": s.mode, "concurrency": concurrency, "cpus_per_trial": r.cpus_per_trial,
        "gpus_per_trial": r.gpus_per_trial, "max_epochs": max_t, "seed": s.seed,
    }


def search_tags(opts: LaunchOptions, space: Space, dataset: Dataset, *, scheduler: str, concurrency: int,
                max_t: int, warm_start: str = "") -> dict[str, str]:
    """The parent run's tags: dataset, space, the description's overview, the git commit."""
    s, r = opts.search, opts.resources
    settings = {
        "searcher": f"`{s.searcher}`",
        "scheduler": f"`{scheduler}`",
        "metric": f"`{s.metric}` ({s.mode})",
        "budget": f"{s.num_samples} trials of up to {max_t} epochs, {concurrency} at a time, "
                  f"{r.cpus_per_trial:g} CPU / {r.gpus_per_trial:g} GPU each",
        "seed": str(s.seed),
    }
    if warm_start:
        settings["warm start"] = warm_start
    out = {
        tags.DATASET: dataset.name, tags.SPACE: space.name,
        tags.NOTE: search_overview(space=space.name, about=space.description, dimensions=len(space.sampled),
                                   dataset=dataset.describe(), settings=settings),
    }
    commit = git_commit()
    if commit:
        out[tags.GIT_COMMIT] = commit
    return out


def finish_search(tracker: Tracker, result: SearchResult, grid: Grid, *, failure: str | None = None) -> None:
    """Best metrics, best config and the best model on the parent run; the report; close it (FAILED,
    with ``failure`` as the reason, when no trial produced a result)."""
    parent = result.parent_run_id
    best = result.best
    n_failed = sum(t.state == tags.END_FAILED for t in result.trials)
    tracker.final_metrics(parent, {tags.TRIALS: len(result.trials), tags.TRIALS_FAILED: n_failed,
                                   tags.WALL_TIME_S: result.wall_time_s})
    if best is not None:
        tracker.final_metrics(parent, {tags.best_metric(result.metric): best.metric})
        tracker.set_tags(parent, {tags.BEST_RUN_ID: best.run_id or "", tags.BEST_TRIAL_ID: best.trial_id})
        tracker.log_params(parent, {f"{tags.BEST_PARAM_PREFIX}{k}": v for k, v in best.config.items()})
        tracker.log_text(parent, json.dumps(best.config, indent=2, default=str), tags.BEST_CONFIG_ARTIFACT)
        checkpoint = grid.best_checkpoint(best.trial_id)
        if checkpoint is not None and best.run_id:
            with checkpoint.as_directory() as folder:
                tracker.log_artifact(best.run_id, Path(folder, "model.keras"), tags.MODEL_FOLDER)
            tracker.set_tags(best.run_id, {tags.BEST: "true"})
        elif best.run_id:
            log.warning("no checkpoint of the best trial %s was found; its model is not logged", best.trial_id)
    log_report(tracker, result)
    if failure is not None:
        tracker.end_run(parent, "FAILED", {tags.FAIL_REASON: f"every trial failed; the first: {failure}"})
    else:
        tracker.end_run(parent, "FINISHED")


def log_report(tracker: Tracker, result: SearchResult) -> None:
    """The search's plots (parent-run artifacts under ``plots/``) and the "Best trial" section of its
    description, from the trials' configs and best metrics, in the order the trials started."""
    from search import config as vocab
    from search import plots

    parent = result.parent_run_id
    try:
        started = {r.info.run_id: r.info.start_time or 0 for r in tracker.child_runs(role=tags.ROLE_TRIAL)}
        ordered = sorted(result.trials, key=lambda t: (started.get(t.run_id or "", math.inf), t.name))
        trials = [{"name": t.name, "run_id": t.run_id, "config": t.config, "value": t.metric, "state": t.state,
                   "best_epoch": t.best_epoch, "tie_break": t.tie_break} for t in ordered]
        with scratch.folder("summary-") as folder:
            files = plots.search_plots(trials, folder, metric=result.metric, mode=result.mode, defaults=vocab.DEFAULTS)
            for path in files:
                tracker.log_artifact(parent, path, tags.PLOTS_FOLDER)
        body = best_section(experiment_id=tracker.experiment_id(), parent_run_id=parent, trials=trials,
                            metric=result.metric, mode=result.mode, wall_time_s=result.wall_time_s,
                            plots=[f"{tags.PLOTS_FOLDER}/{p.name}" for p in files], defaults=vocab.DEFAULTS)
        tracker.update_section(parent, "Best trial", body)
        record_importance(tracker, parent, tracker.experiment_id(), [t["config"] for t in trials],
                          [t["value"] for t in trials], metric=result.metric, mode=result.mode)
    except TrackingError:
        raise
    except Exception as err:  # noqa: BLE001 (a plot must not cost the search its recorded result)
        log.warning("the search's plots and summary were not written: %s", err)
