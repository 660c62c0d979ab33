"""MLflow: the tracking URI, the parent run per search, child runs per trial, and queries.

This is the only module that imports mlflow. It is used from the driver alone (through the Ray
Tune callback in ``search.tuner`` and from the pipelines), so a SQLite store never sees two
writers, and workers on other machines need no access to the tracking store.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from search.errors import TrackingError

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
T = TypeVar("T")

# Tags: the layout of a search in MLflow (see DESIGN.md).
ROLE = "search.role"  # search | trial | retrain | evaluate
SEARCH_NAME = "search.name"
TRIAL_ID = "search.trial_id"
NODE = "search.node"  # the node's IP
NODE_ID = "search.node_id"  # the Ray node id: nodes that share a host share an IP
END_STATE = "search.end_state"  # finished | failed | stopped_early
FAIL_REASON = "search.fail_reason"
STOPPED_BY = "search.stopped_by"
PARENT = "mlflow.parentRunId"
NOTE = "mlflow.note.content"
RUN_NAME = "mlflow.runName"
MAX_PARAM_LENGTH = 6000


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite in the working directory; never relative.

    Trials and later commands run in other directories, so a relative ``sqlite:///mlflow.db``
    or ``./mlruns`` would point somewhere else there.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https", "databricks", "postgresql", "mysql", "mssql"):
        return uri
    if parsed.scheme == "sqlite":
        path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else uri[len("sqlite://") :]
        if path in ("", ":memory:"):
            raise TrackingError("an in-memory SQLite store cannot be shared with trials; give a file, e.g. sqlite:///mlflow.db")
        return f"sqlite:///{Path(path).expanduser().resolve()}"
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path)).expanduser().resolve().as_uri()
    if parsed.scheme == "":
        return Path(uri).expanduser().resolve().as_uri()
    raise TrackingError(f"unsupported tracking URI {uri!r}; use sqlite:///PATH, a folder, or http(s)://HOST:PORT")


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Raise ``TrackingError`` unless the store at ``uri`` can be used now."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (user's own server)
                if response.status != 200:
                    raise TrackingError(f"MLflow server at {uri} answered {response.status} on /health")
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise TrackingError(
                    f"MLflow server at {uri} refused us ({err.code}); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
                ) from None
            raise TrackingError(f"MLflow server at {uri} answered {err.code} on /health; is it an MLflow server?") from None
        except (urllib.error.URLError, OSError, socket.timeout) as err:
            reason = getattr(err, "reason", err)
            raise TrackingError(
                f"cannot reach the MLflow tracking server at {uri} ({reason}); start it, or pass another --tracking-uri"
            ) from None
    elif parsed.scheme == "sqlite":
        folder = Path(uri[len("sqlite:///") :]).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise TrackingError(f"cannot write the SQLite store {uri}: {folder} is not a writable folder")


def client(uri: str) -> MlflowClient:
    """An ``MlflowClient`` for ``uri`` (which must already be resolved)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def retrying(fn: Callable[[], T], *, deadline_s: float, what: str) -> T:
    """Call ``fn`` until it succeeds or ``deadline_s`` seconds pass (a tracking server restart)."""
    start = time.monotonic()
    delay = 0.5
    while True:
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 (mlflow raises many types for a lost connection)
            if _is_user_error(err) or time.monotonic() - start + delay > deadline_s:
                raise TrackingError(f"MLflow did not accept {what} within {deadline_s:.0f} s: {_first_line(err)}") from None
            log.warning("MLflow unavailable (%s); retrying %s in %.1f s", _first_line(err), what, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _is_user_error(err: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    code = getattr(err, "error_code", "")
    return isinstance(err, MlflowException) and code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    if text and ("NewConnectionError" in text[0] or "Connection refused" in text[0]):
        return "connection refused"  # urllib3's 300-character account of it says no more
    return text[0][:300] if text else type(err).__name__


def _param(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else ("null" if value is None else str(value))
    return text[:MAX_PARAM_LENGTH]


def git_commit(path: Path | None = None) -> str | None:
    """The git commit of the working directory, if it is a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path or Path.cwd(), capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


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
                filter_string=f"tags.`{ROLE}` = 'search' and tags.`{SEARCH_NAME}` = '{name}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            ),
            "a search lookup",
        )
        return runs[0] if runs else None

    def start_search(self, name: str, params: Mapping[str, Any], tags: Mapping[str, str], *, resume: bool = False) -> str:
        """Create the parent run (or, with ``resume``, reopen the existing one); returns its id."""
        from mlflow.entities import Param, RunTag

        existing = self.find_search(name) if resume else None
        if existing is not None:
            self.parent_run_id = existing.info.run_id
            self._retry(lambda: self.mlflow.update_run(self.parent_run_id, status="RUNNING"), "the parent run")
            self.runs.update(self.trial_runs())
            return self.parent_run_id
        run = self._retry(
            lambda: self.mlflow.create_run(self.experiment_id(), run_name=name, tags={ROLE: "search", SEARCH_NAME: name, **tags}),
            "the parent run",
        )
        self.parent_run_id = run.info.run_id
        self._retry(
            lambda: self.mlflow.log_batch(self.parent_run_id, params=[Param(k, _param(v)) for k, v in params.items()],
                                          tags=[RunTag(NOTE, tags.get(NOTE, ""))] if NOTE in tags else []),
            "the search params",
        )
        return self.parent_run_id

    def trial_runs(self) -> dict[str, str]:
        """trial id -> child run id, for the trials already recorded under the parent run."""
        runs = self.child_runs(role="trial")
        return {r.data.tags[TRIAL_ID]: r.info.run_id for r in runs if TRIAL_ID in r.data.tags}

    def child_runs(self, role: str | None = None) -> list[Run]:
        assert self.parent_run_id is not None
        filt = f"tags.`{PARENT}` = '{self.parent_run_id}'" + (f" and tags.`{ROLE}` = '{role}'" if role else "")
        return self._retry(
            lambda: self.mlflow.search_runs([self.experiment_id()], filter_string=filt, max_results=50000),
            "the child runs",
        )

    # -- child runs ----------------------------------------------------------------------
    def start_trial(self, trial_id: str, run_name: str, config: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        """The child run of ``trial_id``: created once, reopened when the trial restarts."""
        from mlflow.entities import RunTag

        if trial_id in self.runs:
            run_id = self.runs[trial_id]
            self._retry(lambda: self.mlflow.update_run(run_id, status="RUNNING"), "a trial restart")
            if tags:
                self._retry(lambda: self.mlflow.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()]), "trial tags")
            return run_id
        run_id = self.start_child(run_name, config, {ROLE: "trial", TRIAL_ID: trial_id, **tags})
        self.runs[trial_id] = run_id
        return run_id

    def start_child(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        """A new run nested under the parent run, with ``params`` and ``tags``."""
        from mlflow.entities import Param

        assert self.parent_run_id is not None
        run = self._retry(
            lambda: self.mlflow.create_run(self.experiment_id(), run_name=run_name, tags={PARENT: self.parent_run_id, **tags}),
            "a child run",
        )
        run_id = run.info.run_id
        batch = [Param(k, _param(v)) for k, v in sorted(params.items())]
        self._retry(lambda: self.mlflow.log_batch(run_id, params=batch), "run params")
        return run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int) -> None:
        """Buffer ``metrics`` at ``step``; ``flush`` writes them."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
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

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._retry(lambda: self.mlflow.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]), "tags")

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        self._retry(lambda: self.mlflow.log_batch(run_id, params=[Param(k, _param(v)) for k, v in params.items()]), "params")

    def end_run(self, run_id: str, status: str = "FINISHED", tags: Mapping[str, Any] | None = None) -> None:
        """Flush, tag and close a run (status FINISHED, FAILED or KILLED)."""
        self.flush(run_id)
        if tags:
            self.set_tags(run_id, tags)
        self._retry(lambda: self.mlflow.set_terminated(run_id, status=status), "the end of a run")

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self._retry(lambda: self.mlflow.log_artifact(run_id, str(path), artifact_path), "an artifact")

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self._retry(lambda: self.mlflow.log_text(run_id, text, name), "an artifact")

    def final_metrics(self, run_id: str, metrics: Mapping[str, float]) -> None:
        """Summary metrics (no step) on a run, written at once."""
        self.log_metrics(run_id, metrics, step=0)
        self.flush(run_id)


# -- queries used by the CLI and the pipelines ------------------------------------------------
def experiment_id(uri: str, experiment: str) -> str | None:
    """The id of ``experiment`` in the store at ``uri``, or None if it does not exist."""
    exp = client(uri).get_experiment_by_name(experiment)
    return exp.experiment_id if exp is not None else None


def list_searches(uri: str, experiment: str) -> list[Run]:
    """Parent runs of ``experiment``, newest first."""
    mlc = client(uri)
    exp = mlc.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return list(
        mlc.search_runs([exp.experiment_id], filter_string=f"tags.`{ROLE}` = 'search'", order_by=["attributes.start_time DESC"])
    )


def find_parent(uri: str, experiment: str, *, name: str | None = None, run_id: str | None = None) -> Run:
    """The parent run of a search: by run id, by name, or the newest in the experiment."""
    from mlflow.exceptions import MlflowException

    mlc = client(uri)
    if run_id:
        try:
            run = mlc.get_run(run_id)
        except MlflowException:
            raise TrackingError(f"no run {run_id} in {uri}; list searches with `search runs`") from None
        if run.data.tags.get(ROLE) != "search":
            role = run.data.tags.get(ROLE, "not made by search")
            raise TrackingError(f"run {run_id} is not a search (its role is {role}); pass the parent run of a search")
        return run
    runs = list_searches(uri, experiment)
    if name:
        runs = [r for r in runs if r.data.tags.get(SEARCH_NAME) == name]
    if not runs:
        what = f"named {name!r} " if name else ""
        raise TrackingError(f"no search {what}in experiment {experiment!r} at {uri}; run `search launch` first, or check --experiment")
    return runs[0]


def trials_of(uri: str, parent: Run, metric: str, mode: str) -> list[Run]:
    """The finished trial runs of a search, best first by ``metric``."""
    mlc = client(uri)
    runs = mlc.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT}` = '{parent.info.run_id}' and tags.`{ROLE}` = 'trial'",
        max_results=50000,
    )
    scored = [r for r in runs if metric in r.data.metrics and math.isfinite(r.data.metrics[metric])]
    sign = -1.0 if mode == "max" else 1.0
    # Ties in the metric go to the lower validation loss at the best epoch.
    return sorted(scored, key=lambda r: (sign * r.data.metrics[metric], r.data.metrics.get("best_epoch_val_loss", math.inf)))


def metric_history(uri: str, run_id: str, key: str) -> list[float]:
    """Values of ``key`` at each step, in step order."""
    hist = client(uri).get_metric_history(run_id, key)
    return [m.value for m in sorted(hist, key=lambda m: m.step)]


def config_of(run: Run) -> dict[str, Any]:
    """A trial's config, back from its params (typed with the config vocabulary)."""
    from search import config as vocab

    out: dict[str, Any] = {}
    for key, text in run.data.params.items():
        if key in vocab.KEYS:
            out[key] = None if text in ("None", "null") else vocab.parse_value(key, text)
    return out


def iter_metrics(run: Run, keys: Iterable[str]) -> dict[str, float]:
    return {k: run.data.metrics[k] for k in keys if k in run.data.metrics}
