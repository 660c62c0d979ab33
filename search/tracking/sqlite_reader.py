"""``SqliteQuery``: the read queries, answered from a SQLite store with the standard library's ``sqlite3``.

It reads the tables MLflow's SQLAlchemy store writes (``experiments``, ``runs``, ``tags``,
``params``, ``latest_metrics``) as that store reads them: a run's metrics are each key's latest
value (NaN where ``is_nan``), searches leave deleted runs out, runs come newest first with the run
id breaking ties, and by a metric with missing and NaN values last. Read-only, one transaction a
question. Any ``sqlite3`` error (a schema it does not know) or an experiment name it finds twice
asks ``MlflowQuery`` instead.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from search.tracking import tags
from search.tracking.query import MAX_RESULTS, MlflowQuery, Run, RunData, RunInfo

log = logging.getLogger(__name__)
T = TypeVar("T")

_RUN_COLUMNS = "run_uuid, name, experiment_id, status, start_time, end_time, lifecycle_stage, artifact_uri"


class SqliteQuery:
    """The queries, read from the SQLite file with ``sqlite3`` (read-only), one transaction each."""

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.path = Path(uri[len("sqlite:///"):])

    def experiment_id(self, name: str) -> str | None:
        def read(db: sqlite3.Connection) -> str | None:
            rows = db.execute("SELECT experiment_id FROM experiments WHERE name = ?", (name,)).fetchall()
            if len(rows) > 1:
                raise sqlite3.DatabaseError(f"{len(rows)} experiments named {name!r}")
            return str(rows[0][0]) if rows else None

        return self._read(read, lambda q: q.experiment_id(name))

    def runs(self, experiment_id: str, tag_equals: Mapping[str, str], *, order_metric: tuple[str, bool] | None = None,
             limit: int = MAX_RESULTS) -> list[Run]:
        def read(db: sqlite3.Connection) -> list[Run]:
            where = ["experiment_id = ?", "lifecycle_stage = 'active'"]
            args: list[Any] = [int(experiment_id)]
            for key, value in tag_equals.items():
                where.append("run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = ?)")
                args += [key, value]
            chosen = f"SELECT {_RUN_COLUMNS} FROM runs WHERE {' AND '.join(where)}"
            runs = _assemble(db, chosen, args)
            return _ordered(runs, order_metric)[:limit]

        return self._read(read, lambda q: q.runs(experiment_id, tag_equals, order_metric=order_metric, limit=limit))

    def run(self, run_id: str) -> Run | None:
        def read(db: sqlite3.Connection) -> Run | None:
            runs = _assemble(db, f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_uuid = ?", [run_id])
            return runs[0] if runs else None

        return self._read(read, lambda q: q.run(run_id))

    def _read(self, read: Callable[[sqlite3.Connection], T], fallback: Callable[[MlflowQuery], T]) -> T:
        try:
            uri = f"{self.path.as_uri()}?mode=ro"
            with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)) as db:
                db.execute("BEGIN")  # one snapshot: a search writing meanwhile is seen before or after, not half
                return read(db)
        except (sqlite3.Error, ValueError) as err:
            log.debug("reading %s through MLflow: %s", self.uri, err)
            return fallback(MlflowQuery(self.uri))


def _assemble(db: sqlite3.Connection, chosen: str, args: list[Any]) -> list[Run]:
    """The runs ``chosen`` selects, with their tags, params and latest metrics."""
    rows = db.execute(chosen, args).fetchall()
    data: dict[str, RunData] = {row[0]: RunData() for row in rows}
    ids = f"SELECT run_uuid FROM ({chosen})"
    for run_id, key, value in db.execute(f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({ids})", args):
        data[run_id].tags[key] = value
    for run_id, key, value in db.execute(f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({ids})", args):
        data[run_id].params[key] = value
    metrics = f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({ids})"
    for run_id, key, value, is_nan in db.execute(metrics, args):
        data[run_id].metrics[key] = math.nan if is_nan else float(value)
    out = []
    for run_id, name, exp, status, start, end, stage, artifacts in rows:
        name = name or data[run_id].tags.get(tags.RUN_NAME, "")
        out.append(Run(RunInfo(run_id, name, str(exp), status, start, end, stage, artifacts), data[run_id]))
    return out


def _ordered(runs: list[Run], order_metric: tuple[str, bool] | None) -> list[Run]:
    """MLflow's order: by the metric if given (missing and NaN last), then newest first, then run id."""
    runs = sorted(runs, key=lambda r: r.info.run_id)
    runs.sort(key=lambda r: -(r.info.start_time if r.info.start_time is not None else -math.inf))
    if order_metric is not None:
        key, descending = order_metric

        def by_metric(r: Run) -> tuple[int, float]:
            value = r.data.metrics.get(key)
            if value is None or math.isnan(value):
                return (1, 0.0)
            return (0, -value if descending else value)

        runs.sort(key=by_metric)
    return runs
