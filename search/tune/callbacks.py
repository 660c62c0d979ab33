"""Ray Tune callbacks on the driver: the MLflow writer and the live progress line.

``MLflowCallback`` turns Ray's trial events into MLflow runs through the one ``Tracker`` (the
driver is the only writer). ``LiveView`` prints a compact line of running, done and failed
trials and the best so far. Both are pickled into Ray's experiment state, and swapped for
fresh ones on resume (``search.tune.launch``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ray import tune
from ray.tune.result import SHOULD_CHECKPOINT

from search.config import DEFAULTS
from search.space import Space
from search.tasks import recorded_epoch_keys
from search.tracking import Tracker, tags
from search.tune.trainable import EARLIER, ENDED_AT, trial_config


def driver_callbacks(tracker: Tracker, space: Space, *, metric: str, mode: str, max_epochs: int | None,
                     transfer_from: str | None, progress: Callable[[str], None] | None) -> list[tune.Callback]:
    """A search's callbacks: the MLflow writer, Ray's ``result.json`` log and, with ``progress``, the live line.

    MLflow is the record, so Ray's CSV and TensorBoard loggers are not added: the TensorBoard one
    warned on every coalesced report (it cannot log a list), and each costs driver CPU per report.
    """
    import os

    from ray.tune.logger import JsonLoggerCallback

    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # read by Tuner.fit; the JSON one is passed here
    callbacks: list[tune.Callback] = [MLflowCallback(tracker, space, metric=metric, mode=mode, max_epochs=max_epochs,
                                                     transfer_from=transfer_from), JsonLoggerCallback()]
    if progress:
        callbacks.append(LiveView(metric, mode, progress))
    return callbacks


def run_name(index: int, cfg: Mapping[str, Any]) -> str:
    """A readable trial name, e.g. ``trial-007 selu/lecun_normal 3x256 nadam``."""
    def get(key: str) -> Any:
        return cfg.get(key, DEFAULTS[key])

    shape = f"{get('n_hidden')}x{get('n_neurons')}" + ("v" if get("width_shape") == "funnel" else "")
    extras = [f"bn-{get('batch_norm')}"] if get("batch_norm") != "none" else []
    return " ".join([f"trial-{index:03d}", f"{get('activation')}/{get('initializer')}", shape, get("optimizer"), *extras])


class MLflowCallback(tune.Callback):
    """Records each Ray trial as a nested MLflow run; the driver is the only writer."""

    def __init__(self, tracker: Tracker, space: Space, *, metric: str, mode: str, max_epochs: int | None,
                 flush_every_s: float = 2.0, transfer_from: str | None = None) -> None:
        self.transfer_from = transfer_from
        self.tracker = tracker
        self.space = space
        self.metric = metric
        self.mode = mode
        self.max_epochs = max_epochs
        self.epoch_keys = recorded_epoch_keys()  # once, off the per-result path: tasks register before a search
        self.flush_every_s = flush_every_s
        self.best: dict[str, tuple[float, int]] = {}  # trial id -> (best metric, its epoch), from MLflow
        self.epochs: dict[str, int] = {}
        self._node_tagged: dict[str, tuple[str, str]] = {}  # trial id -> (node ip, node id) last tagged
        self._last_flush = 0.0

    def _config(self, trial: Any) -> dict[str, Any]:
        return trial_config(self.space, trial.config, self.max_epochs)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        cfg = self._config(trial)
        # Numbered in the order trials first start (Ray's ids are not dense across searchers).
        index = len(self.tracker.runs) + (trial.trial_id not in self.tracker.runs)
        run_tags = {tags.NODE: str(trial.node_ip or "")}
        if self.transfer_from and int(cfg.get("reuse_layers", 0)) > 0:
            run_tags[tags.TRANSFER_FROM] = self.transfer_from
        self.tracker.start_trial(trial.trial_id, run_name(index, cfg), cfg, run_tags)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.on_trial_start(iteration, trials, trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run_id = self.tracker.runs.get(trial.trial_id)
        if run_id is None:
            return
        for row in epoch_rows(result):  # a coalesced report carries the epochs since the last one
            epoch = int(row.get("epoch", row.get("training_iteration", 0)))
            self.tracker.log_metrics(run_id, {k: row[k] for k in self.epoch_keys if k in row}, step=epoch,
                                     timestamp_ms=row.get(ENDED_AT))
            self.epochs[trial.trial_id] = epoch
        node = (str(result.get("node_ip") or ""), str(result.get("node_id") or ""))
        if any(node) and self._node_tagged.get(trial.trial_id) != node:  # first result, or retried elsewhere
            self.tracker.set_tags(run_id, {tags.NODE: node[0], tags.NODE_ID: node[1]})
            self._node_tagged[trial.trial_id] = node
        if result.get(SHOULD_CHECKPOINT):
            # Ray continues a trial (after --resume, or on another node) from its latest checkpoint, and
            # registers this one only after the callbacks: write every epoch up to it first, so a driver
            # lost from here on leaves no gap in the run's history (a failed write stops the search
            # before Ray counts the checkpoint).
            self.tracker.flush(run_id)
        if time.monotonic() - self._last_flush > self.flush_every_s:
            self.tracker.flush()
            self._last_flush = time.monotonic()

    def _end(self, trial: Any, status: str, end_tags: dict[str, Any]) -> None:
        run_id = self.tracker.runs.get(trial.trial_id)
        if run_id is None:
            return
        self.tracker.flush(run_id)
        # From the recorded history, so epochs logged before a resume count too.
        history = self.tracker.history(run_id, self.metric)
        if history:
            pick = max if self.mode == "max" else min
            step, value = pick(history, key=lambda sv: sv[1])
            self.best[trial.trial_id] = (value, step)
            self.epochs[trial.trial_id] = max(s for s, _ in history)
            summary = {tags.best_metric(self.metric): value, tags.BEST_EPOCH: step,
                       tags.EPOCHS_RUN: self.epochs[trial.trial_id]}
            if self.metric != "val_loss":  # breaks ties in the metric (a few hundred validation examples tie often)
                losses = dict(self.tracker.history(run_id, "val_loss"))
                if step in losses:
                    summary[tags.BEST_EPOCH_VAL_LOSS] = losses[step]
            self.tracker.final_metrics(run_id, summary)
        self.tracker.end_run(run_id, status, end_tags)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        ran = self.epochs.get(trial.trial_id, 0)
        if last.get("final"):  # the trial ended itself: all epochs, or early stopping
            self._end(trial, "FINISHED", {tags.END_STATE: tags.END_FINISHED})
        else:
            self._end(trial, "FINISHED", {tags.END_STATE: tags.END_STOPPED_EARLY, tags.STOPPED_BY: "scheduler",
                                          tags.STOPPED_AT_EPOCH: ran})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FAILED", {tags.END_STATE: tags.END_FAILED, tags.FAIL_REASON: failure_reason(trial)})

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.tracker.flush()


def epoch_rows(result: dict) -> list[dict]:
    """The epochs a result reports, oldest first: those it coalesced (``EARLIER``), then its own."""
    return [*result.get(EARLIER, ()), result]


def failure_reason(trial: Any) -> str:
    """The one line that says why a trial failed (the TrialFailed message, when there is one)."""
    text = ""
    try:
        # Ray writes the trace locally first and syncs it to storage later, so read it there.
        if trial.error_file and Path(trial.error_file).is_file():
            text = Path(trial.error_file).read_text()
        else:
            text = str(trial.get_error() or "")
    except Exception:  # noqa: BLE001 (the error file may be on a lost node)
        text = ""
    text = text or "the trial raised an error (see the Ray logs)"
    match = re.search(r"TrialFailed: (.+)", text)
    if match:
        return match.group(1).strip()
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else text[:500]


class LiveView(tune.Callback):
    """A compact live line: trials running, finished and failed, and the best so far."""

    def __init__(self, metric: str, mode: str, emit: Callable[[str], None]) -> None:
        self.metric = metric
        self.mode = mode
        self.emit = emit
        self.best: float | None = None
        self.best_name = ""
        self.done = 0
        self.failed = 0
        self._last = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "emit": None}

    def _line(self, trials: list) -> str:
        running = sum(t.status == "RUNNING" for t in trials)
        pending = sum(t.status == "PENDING" for t in trials)
        best = f"best {self.metric} {self.best:.4f} ({self.best_name})" if self.best is not None else "no result yet"
        return f"trials: {running} running, {pending} pending, {self.done} done, {self.failed} failed | {best}"

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        for row in epoch_rows(result):
            value = row.get(self.metric)
            if isinstance(value, (int, float)) and math.isfinite(value):
                if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
                    self.best = float(value)
                    self.best_name = trial.trial_id
        if self.emit and time.monotonic() - self._last > 0.5:
            self.emit(self._line(trials))
            self._last = time.monotonic()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.done += 1
        if self.emit:
            self.emit(self._line(trials))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.failed += 1
        if self.emit:
            self.emit(self._line(trials))
