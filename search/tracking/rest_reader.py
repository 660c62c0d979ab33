"""``RestQuery``: the read queries, asked of a tracking server's REST API with ``urllib``.

The endpoints are MLflow's documented REST API (``experiments/get-by-name``, ``runs/search``,
``runs/get``), sent as ``MlflowClient``'s REST store sends them. Only for a plain server: where any
of MLflow's settings for credentials, TLS or workspaces is set (``MLFLOW_TRACKING_USERNAME``,
``_TOKEN``, ``_AUTH``, the certificate paths, ``MLFLOW_WORKSPACE``...), ``query`` picks
``MlflowQuery``, which knows them all. Any failure here (refused, an HTTP error, an answer it does
not parse) asks ``MlflowQuery`` instead, whose errors and retries the commands already handle.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from search.tracking.query import (
    MAX_RESULTS,
    MlflowQuery,
    Run,
    RunData,
    RunInfo,
    filter_string,
    order_by,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

API = "/api/2.0/mlflow"
TIMEOUT_S = 30.0


class RestQuery:
    """The queries, sent to ``uri``'s REST API; ``MlflowQuery`` answers where this one cannot."""

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")

    def experiment_id(self, name: str) -> str | None:
        def ask() -> str | None:
            answer = self._call("GET", "experiments/get-by-name", {"experiment_name": name}, missing_ok=True)
            return None if answer is None else str(answer["experiment"]["experiment_id"])

        return self._or_mlflow(ask, lambda q: q.experiment_id(name))

    def runs(self, experiment_id: str, tag_equals: Mapping[str, str], *, order_metric: tuple[str, bool] | None = None,
             limit: int = MAX_RESULTS) -> list[Run]:
        def ask() -> list[Run]:
            body = {"experiment_ids": [experiment_id], "filter": filter_string(tag_equals), "run_view_type": "ACTIVE_ONLY",
                    "max_results": limit, "order_by": order_by(order_metric)}
            answer = self._call("POST", "runs/search", body)
            return [_run(r) for r in answer.get("runs", [])]

        return self._or_mlflow(ask, lambda q: q.runs(experiment_id, tag_equals, order_metric=order_metric, limit=limit))

    def run(self, run_id: str) -> Run | None:
        def ask() -> Run | None:
            answer = self._call("GET", "runs/get", {"run_id": run_id}, missing_ok=True)
            return None if answer is None else _run(answer["run"])

        return self._or_mlflow(ask, lambda q: q.run(run_id))

    def _call(self, method: str, endpoint: str, args: dict[str, Any], *, missing_ok: bool = False) -> Any:
        url = f"{self.uri}{API}/{endpoint}"
        data = None
        if method == "GET":
            url += "?" + urllib.parse.urlencode(args)
        else:
            data = json.dumps(args).encode()
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as err:
            if missing_ok and err.code in (400, 404) and _error_code(err) in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise

    def _or_mlflow(self, ask: Callable[[], T], fallback: Callable[[MlflowQuery], T]) -> T:
        try:
            return ask()
        except (OSError, ValueError, KeyError, TypeError) as err:  # urllib's errors are OSErrors
            log.debug("asking %s through MLflow: %s", self.uri, err)
            return fallback(MlflowQuery(self.uri))


def _error_code(err: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(err.read()).get("error_code", ""))
    except (ValueError, OSError):
        return ""


def _run(message: Mapping[str, Any]) -> Run:
    """A run from its JSON (protobuf's: int64 may come as strings, NaN and infinities as strings)."""
    info, data = message["info"], message.get("data", {})
    end = int(info.get("end_time") or 0) or None  # absent and 0 both mean "not ended", as RunInfo.from_proto reads it
    return Run(
        RunInfo(info["run_id"], info.get("run_name", ""), str(info["experiment_id"]), info["status"],
                int(info.get("start_time") or 0), end, info.get("lifecycle_stage", ""), info.get("artifact_uri")),
        RunData(metrics={m["key"]: float(m.get("value", 0.0)) for m in data.get("metrics", [])},
                params={p["key"]: p.get("value", "") for p in data.get("params", [])},
                tags={t["key"]: t.get("value", "") for t in data.get("tags", [])}),
    )
