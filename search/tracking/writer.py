"""The driver's single MLflow writer: a parent run per search, a child run per trial.

Workers never write to MLflow: the driver does, through one ``Tracker``, so a SQLite store never
sees two writers, and workers on other machines need no access to the store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from search.errors import TrackingError
from search.interrupts import interrupt_code
from search.tracking import tags
from search.tracking.description import set_section
from search.tracking.store import client, retrying

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

T = TypeVar("T")
log = logging.getLogger(__name__)
MAX_PARAM_LENGTH = 6000


def reason_of(err: BaseException) -> str:
    """The one line a run's ``search.fail_reason`` holds for ``err``."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:500]


def param_text(value: Any) -> str:
    """How a param value is written: JSON for lists and dicts, ``null`` for None."""
    text = json.dumps(value) if isinstance(value, (list, dict)) else ("null" if value is None else str(value))
    return text[:MAX_PARAM_LENGTH]


@dataclass
class Tracker:
    """The driver's single writer: one parent run per search, one child run per trial.

    It is picklable (Ray checkpoints the callback that owns it), and reconnects lazily.
    Metrics are buffered per run and written with ``log_batch``; a write that fails because
    the server is away is retried until ``retry_s`` seconds pass.
    """

    uri: str
    experiment: str
    retry_s: float = 120.0
    parent_run_id: str | None = None
    runs: dict[str, str] = field(default_factory=dict)  # trial id -> child run id
    _client: Any = field(default=None, repr=False, compare=False)
    _pending: dict[str, list[Any]] = field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_client"] = None
        return state

    @property
    def mlflow(self) -> MlflowClient:
        if self._client is None:
            if self.uri.startswith(("http://", "https://")):
                # MLflow's HTTP client retries each request for minutes (7 retries, backoff), which would
                # outlast ``retry_s``; ``_retry`` below is the one retry loop, with its own deadline.
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(min(120.0, max(10.0, self.retry_s)))))
                # With a server, MLflow prints "View run ... at" on stdout at each set_terminated: stdout is
                # for results (--json), and the link is in the summary already.
                os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
            self._client = client(self.uri)
        return self._client

    def _retry(self, fn: Callable[[], T], what: str) -> T:
        return retrying(fn, deadline_s=self.retry_s, what=what)

    def experiment_id(self) -> str:
        def get_or_create() -> str:
            exp = self.mlflow.get_experiment_by_name(self.experiment)
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    raise TrackingError(f"experiment {self.experiment!r} is deleted; restore it in the UI or pick another --experiment")
                return exp.experiment_id
            return self.mlflow.create_experiment(self.experiment)

        return self._retry(get_or_create, "the experiment")

    # -- the parent run ------------------------------------------------------------------
    def find_search(self, name: str) -> Run | None:
        """The newest parent run named ``name`` in this experiment, if any."""
        runs = self._retry(
            lambda: self.mlflow.search_runs(
                [self.experiment_id()],
                filter_string=f"tags.`{tags.ROLE}` = 'search' and tags.`{tags.SEARCH_NAME}` = '{name}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            ),
            "a search lookup",
        )
        return runs[0] if runs else None

    def start_search(self, name: str, params: Mapping[str, Any], run_tags: Mapping[str, str], *, resume: bool = False) -> str:
        """Create the parent run (or, with ``resume``, reopen the existing one); returns its id."""
        from mlflow.entities import Param, RunTag

        existing = self.find_search(name) if resume else None
        if existing is not None:
            self.parent_run_id = existing.info.run_id
            self._retry(lambda: self.mlflow.update_run(self.parent_run_id, status="RUNNING"), "the parent run")
            self.runs.update(self.trial_runs())
            return self.parent_run_id
        run = self._retry(
            lambda: self.mlflow.create_run(self.experiment_id(), run_name=name, tags={tags.ROLE: tags.ROLE_SEARCH, tags.SEARCH_NAME: name, **run_tags}),
            "the parent run",
        )
        self.parent_run_id = run.info.run_id
        self._retry(
            lambda: self.mlflow.log_batch(self.parent_run_id, params=[Param(k, param_text(v)) for k, v in params.items()],
                                          tags=[RunTag(tags.NOTE, run_tags.get(tags.NOTE, ""))] if tags.NOTE in run_tags else []),
            "the search params",
        )
        return self.parent_run_id

    def trial_runs(self) -> dict[str, str]:
        """trial id -> child run id, for the trials already recorded under the parent run."""
        runs = self.child_runs(role="trial")
        return {r.data.tags[tags.TRIAL_ID]: r.info.run_id for r in runs if tags.TRIAL_ID in r.data.tags}

    def child_runs(self, role: str | None = None) -> list[Run]:
        assert self.parent_run_id is not None
        filt = f"tags.`{tags.PARENT}` = '{self.parent_run_id}'" + (f" and tags.`{tags.ROLE}` = '{role}'" if role else "")
        return self._retry(
            lambda: self.mlflow.search_runs([self.experiment_id()], filter_string=filt, max_results=50000),
            "the child runs",
        )

    # -- child runs ----------------------------------------------------------------------
    def start_trial(self, trial_id: str, run_name: str, config: Mapping[str, Any], run_tags: Mapping[str, str]) -> str:
        """The child run of ``trial_id``: created once, reopened when the trial restarts."""
        from mlflow.entities import RunTag

        if trial_id in self.runs:
            run_id = self.runs[trial_id]
            self._retry(lambda: self.mlflow.update_run(run_id, status="RUNNING"), "a trial restart")
            if run_tags:
                self._retry(lambda: self.mlflow.log_batch(run_id, tags=[RunTag(k, v) for k, v in run_tags.items()]), "trial tags")
            return run_id
        run_id = self.start_child(run_name, config, {tags.ROLE: tags.ROLE_TRIAL, tags.TRIAL_ID: trial_id, **run_tags})
        self.runs[trial_id] = run_id
        return run_id

    def start_run(self, run_name: str, params: Mapping[str, Any], run_tags: Mapping[str, str]) -> str:
        """A new run in the experiment, with ``params`` and ``run_tags``; returns its id."""
        from mlflow.entities import Param

        run = self._retry(
            lambda: self.mlflow.create_run(self.experiment_id(), run_name=run_name, tags=dict(run_tags)), "a run",
        )
        run_id = run.info.run_id
        batch = [Param(k, param_text(v)) for k, v in sorted(params.items())]
        self._retry(lambda: self.mlflow.log_batch(run_id, params=batch), "run params")
        return run_id

    def start_child(self, run_name: str, params: Mapping[str, Any], run_tags: Mapping[str, str]) -> str:
        """A new run nested under the parent run, with ``params`` and ``run_tags``."""
        assert self.parent_run_id is not None
        return self.start_run(run_name, params, {tags.PARENT: self.parent_run_id, **run_tags})

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int, timestamp_ms: int | None = None) -> None:
        """Buffer ``metrics`` at ``step``, stamped ``timestamp_ms`` (default: now); ``flush`` writes them."""
        from mlflow.entities import Metric

        now = int(timestamp_ms) if timestamp_ms is not None else int(time.time() * 1000)
        self._pending.setdefault(run_id, []).extend(
            Metric(k, float(v), now, step) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)
        )

    def flush(self, run_id: str | None = None) -> None:
        """Write buffered metrics, in batches of at most 1000 (MLflow's limit)."""
        for rid in [run_id] if run_id else list(self._pending):
            pending = self._pending.get(rid, [])
            while pending:
                batch = pending[:1000]
                self._retry(lambda b=batch, r=rid: self.mlflow.log_batch(r, metrics=b), "metrics")
                del pending[: len(batch)]

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """(step, value) of every logged ``key``."""
        hist = self._retry(lambda: self.mlflow.get_metric_history(run_id, key), "a metric history")
        return [(int(m.step), float(m.value)) for m in hist]

    def set_tags(self, run_id: str, run_tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._retry(lambda: self.mlflow.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in run_tags.items()]), "tags")

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        self._retry(lambda: self.mlflow.log_batch(run_id, params=[Param(k, param_text(v)) for k, v in params.items()]), "params")

    def end_run(self, run_id: str, status: str = "FINISHED", run_tags: Mapping[str, Any] | None = None) -> None:
        """Flush, tag and close a run (status FINISHED, FAILED or KILLED)."""
        self.flush(run_id)
        if run_tags:
            self.set_tags(run_id, run_tags)
        self._retry(lambda: self.mlflow.set_terminated(run_id, status=status), "the end of a run")

    @contextlib.contextmanager
    def closing(self, run_id: str) -> Iterator[str]:
        """Whatever ends the block early (an error, Ctrl-C, SIGTERM) ends the run too: FAILED, or
        KILLED for a signal, with the reason. A block that completes leaves the run to its caller."""
        try:
            yield run_id
        except BaseException as err:
            status = "FAILED" if interrupt_code(err) is None else "KILLED"
            try:
                self.end_run(run_id, status, {tags.FAIL_REASON: reason_of(err)})
            except Exception as write_err:  # noqa: BLE001 (the original error is the one to raise)
                log.warning("could not mark run %s %s: %s", run_id, status, write_err)
            raise

    def delete_run(self, run_id: str) -> None:
        """Soft-delete a run: hidden from searches, restorable in the UI."""
        self._retry(lambda: self.mlflow.delete_run(run_id), "a run's deletion")

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self._retry(lambda: self.mlflow.log_artifact(run_id, str(path), artifact_path), "an artifact")

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self._retry(lambda: self.mlflow.log_text(run_id, text, name), "an artifact")

    def final_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        """Summary metrics (no step) on a run, written at once."""
        self.log_metrics(run_id, metrics, step=0)
        self.flush(run_id)

    def update_section(self, run_id: str, heading: str, body: str) -> str:
        """Replace the ``### heading`` section of a run's description with ``body``; returns the new one."""
        current = self._retry(lambda: self.mlflow.get_run(run_id), "a run").data.tags.get(tags.NOTE, "")
        note = set_section(current or "", heading, body)
        self.set_tags(run_id, {tags.NOTE: note})
        return note
