"""The read queries ``SearchRecord`` asks a store: an experiment by name, runs by tags, one run.

Three backends answer them the same way. ``MlflowQuery`` asks ``MlflowClient``; the other two
exist for speed: a command that only reads (``search runs``, ``search best``) spent 3-4 s of its
4 s importing mlflow and its tracking store, for queries of 0.1 s (docs/benchmarks.md, "Store
reads"). ``SqliteQuery`` (``sqlite_reader``) reads a SQLite store with the standard library's
``sqlite3``; ``RestQuery`` (``rest_reader``) asks a tracking server's REST API with ``urllib``.
Each hands a question it cannot answer to ``MlflowQuery``, so the worst case is the old speed.
This module imports mlflow only inside ``MlflowQuery``.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from search.tracking.store import client

MAX_RESULTS = 50000
# Where MLflow leaves the choice to a setting this module does not read, MlflowQuery answers.
_MLFLOW_ONLY_SETTINGS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                         "MLFLOW_TRACKING_AUTH", "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_TRACKING_CLIENT_CERT_PATH",
                         "MLFLOW_TRACKING_SERVER_CERT_PATH", "MLFLOW_WORKSPACE")


class RunQuery(Protocol):
    def experiment_id(self, name: str) -> str | None: ...

    def runs(self, experiment_id: str, tag_equals: Mapping[str, str], *, order_metric: tuple[str, bool] | None = None,
             limit: int = MAX_RESULTS) -> list[Any]: ...

    def run(self, run_id: str) -> Any | None: ...


def query(uri: str) -> RunQuery:
    """The backend for ``uri`` (already resolved): ``SqliteQuery`` for a SQLite file, ``RestQuery``
    for a plain http(s) server, ``MlflowQuery`` for anything else or where a setting above is on."""
    if _workspaces_on():  # MLflow scopes every query to the active workspace then; the readers do not
        return MlflowQuery(uri)
    if uri.startswith("sqlite:///"):
        from search.tracking.sqlite_reader import SqliteQuery

        return SqliteQuery(uri)
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https") and not parsed.username and not any(os.environ.get(k) for k in _MLFLOW_ONLY_SETTINGS):
        from search.tracking.rest_reader import RestQuery

        return RestQuery(uri)
    return MlflowQuery(uri)


def _workspaces_on() -> bool:
    return os.environ.get("MLFLOW_ENABLE_WORKSPACES", "").strip().lower() not in ("", "0", "false")


def filter_string(tag_equals: Mapping[str, str]) -> str:
    """MLflow's filter for runs whose tags equal ``tag_equals``."""
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in tag_equals.items())


def order_by(order_metric: tuple[str, bool] | None) -> list[str]:
    """MLflow's order: by the metric (key, descending) if given, else newest first."""
    return [f"metrics.`{order_metric[0]}` {'DESC' if order_metric[1] else 'ASC'}"] if order_metric else ["attributes.start_time DESC"]


class MlflowQuery:
    """The queries, asked of ``MlflowClient``."""

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def experiment_id(self, name: str) -> str | None:
        exp = client(self.uri).get_experiment_by_name(name)
        return exp.experiment_id if exp is not None else None

    def runs(self, experiment_id: str, tag_equals: Mapping[str, str], *, order_metric: tuple[str, bool] | None = None,
             limit: int = MAX_RESULTS) -> list[Any]:
        """Active runs whose tags equal ``tag_equals``: newest first, or by ``order_metric`` = (key,
        descending) with missing and NaN values last."""
        return list(client(self.uri).search_runs([experiment_id], filter_string=filter_string(tag_equals),
                                                 order_by=order_by(order_metric), max_results=limit))

    def run(self, run_id: str) -> Any | None:
        from mlflow.exceptions import MlflowException

        try:
            return client(self.uri).get_run(run_id)
        except MlflowException:
            return None


# -- what the backends return -------------------------------------------------------------------
@dataclass(frozen=True)
class RunInfo:
    """The fields of ``mlflow.entities.RunInfo`` that the project reads."""

    run_id: str
    run_name: str
    experiment_id: str
    status: str
    start_time: int | None
    end_time: int | None
    lifecycle_stage: str
    artifact_uri: str | None


@dataclass(frozen=True)
class RunData:
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    """A run as the readers return it: ``info`` and ``data``, as ``mlflow.entities.Run`` has them."""

    info: RunInfo
    data: RunData
