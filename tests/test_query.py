"""The SQLite and REST readers answer every read query as MlflowClient does, and ``runs``/``best`` use them.

A real MLflow SQLite store under tmp_path, written by the project's Tracker and by MlflowClient
(for what a search rarely writes: NaN and infinite metrics, a deleted run, runs that started in
the same millisecond), and a real ``mlflow server`` on loopback in front of the same file. Each
query is asked of a reader and of MlflowClient on the same URI, and the answers compared field by
field; MlflowClient is the independent reference.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from servers import MlflowServer

pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient

from search import tracking
from search.tracking import query as query_module
from search.tracking import (
    sqlite_reader,
    tags,
)
from search.tracking.query import MlflowQuery
from search.tracking.rest_reader import RestQuery
from search.tracking.sqlite_reader import SqliteQuery

KEY = tags.best_metric("val_accuracy")


def _view(run: Any) -> str:
    i, d = run.info, run.data
    fields = [i.run_id, i.run_name, i.experiment_id, i.status, i.start_time, i.end_time, i.lifecycle_stage,
              i.artifact_uri, dict(d.metrics), dict(d.params), dict(d.tags)]
    return json.dumps(fields, sort_keys=True, default=str)  # NaN and inf print as NaN and Infinity


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("query")
    uri = f"sqlite:///{folder}/mlflow.db"
    tracker = tracking.Tracker(uri, "search")
    parent = tracker.start_search("s1", {"metric": "val_accuracy", "mode": "max", "space": "quick"}, {})
    values: list[float | None] = [0.5, 0.9, 0.9, math.nan, None, math.inf, 0.75, -math.inf]
    trials = []
    for n, value in enumerate(values):
        run_id = tracker.start_trial(f"t{n}", f"trial-{n:03d}", {"n_hidden": n % 3 + 1, "activation": "relu"}, {})
        if value is not None:
            tracker.final_metrics(run_id, {KEY: value, tags.BEST_EPOCH_VAL_LOSS: 0.1 * n})
        tracker.end_run(run_id, "FINISHED" if n % 4 else "FAILED")
        trials.append(run_id)
    tracker.flush()
    tracker.end_run(parent, "FINISHED")
    mlc = MlflowClient(uri)
    mlc.delete_run(trials[1])  # the best one, deleted: searches leave it out, get_run still finds it
    exp = mlc.get_experiment_by_name("search").experiment_id
    for n in range(3):  # same start time: the run id decides the order
        run = mlc.create_run(exp, start_time=1_700_000_000_000, tags={tags.PARENT: parent, tags.ROLE: tags.ROLE_TRIAL},
                             run_name=f"tied-{n}")
        mlc.log_metric(run.info.run_id, KEY, 0.9, step=0)
        mlc.log_metric(run.info.run_id, KEY, 0.8 - n / 10, step=1)  # the latest step is what a run's metrics hold
    other = tracking.Tracker(uri, "other")
    other.end_run(other.start_search("s2", {"metric": "val_loss", "mode": "min"}, {}), "FINISHED")
    other.flush()
    server = MlflowServer(folder, dict(os.environ), store_uri=uri, serve_artifacts=False)
    server.start()
    try:
        server.wait_healthy(timeout=180)
        yield {"uri": uri, "url": server.uri, "folder": folder, "parent": parent, "trials": trials, "experiment": exp}
    finally:
        server.stop()


@pytest.mark.parametrize("reader", ["sqlite", "rest"])
def test_every_query_reads_what_mlflow_reads(store: dict[str, Any], reader: str) -> None:
    uri = store["uri"] if reader == "sqlite" else store["url"]
    s, m = (SqliteQuery(uri) if reader == "sqlite" else RestQuery(uri)), MlflowQuery(uri)
    for name in ("search", "other", "absent"):
        assert s.experiment_id(name) == m.experiment_id(name)
    exp = store["experiment"]
    trial = {tags.PARENT: store["parent"], tags.ROLE: tags.ROLE_TRIAL}
    asks: list[tuple[dict[str, str], tuple[str, bool] | None, int]] = [
        ({}, None, 1000), (trial, None, 1000), (trial, None, 2), ({tags.ROLE: tags.ROLE_SEARCH}, None, 1000),
        (trial, (KEY, True), 1000), (trial, (KEY, False), 1000), (trial, (KEY, True), 3),
        (trial, (tags.BEST_EPOCH_VAL_LOSS, False), 1000), (trial, ("absent_metric", True), 1000),
        ({tags.ROLE: "no such role"}, None, 1000),
    ]
    for tag_equals, order, limit in asks:
        ours = [_view(r) for r in s.runs(exp, tag_equals, order_metric=order, limit=limit)]
        theirs = [_view(r) for r in m.runs(exp, tag_equals, order_metric=order, limit=limit)]
        assert ours == theirs, (tag_equals, order, limit)
    assert len(s.runs(exp, trial)) == len(store["trials"]) - 1 + 3  # the deleted run is left out
    for run_id in [*store["trials"], store["parent"], "0" * 32, "not an id"]:
        ours, theirs = s.run(run_id), m.run(run_id)
        assert (ours is None) == (theirs is None), run_id
        if ours is not None:
            assert _view(ours) == _view(theirs)
    assert s.run(store["trials"][1]).info.lifecycle_stage == "deleted"


def test_the_readers_fall_back_to_mlflow(store: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    uri, url, exp = store["uri"], store["url"], store["experiment"]
    expected = [_view(r) for r in MlflowQuery(uri).runs(exp, {tags.ROLE: tags.ROLE_TRIAL})]

    def newer_schema(*_: Any) -> None:
        raise sqlite3.OperationalError("no such column: latest_metrics.is_nan")

    monkeypatch.setattr(sqlite_reader, "_assemble", newer_schema)
    assert [_view(r) for r in SqliteQuery(uri).runs(exp, {tags.ROLE: tags.ROLE_TRIAL})] == expected
    # A server path that does not answer the REST API (a proxy's prefix, say): MlflowClient's answer, or its error.
    expected = [_view(r) for r in MlflowQuery(url).runs(exp, {tags.ROLE: tags.ROLE_TRIAL})]
    wrong = RestQuery(url)
    monkeypatch.setattr(wrong, "uri", url + "/no-such-prefix")
    monkeypatch.setattr(MlflowQuery, "__init__", lambda self, _uri: setattr(self, "uri", url))
    assert [_view(r) for r in wrong.runs(exp, {tags.ROLE: tags.ROLE_TRIAL})] == expected
    monkeypatch.undo()
    assert isinstance(query_module.query(uri), SqliteQuery)
    assert isinstance(query_module.query(url), RestQuery)
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "true")  # MLflow scopes queries to a workspace then
    assert isinstance(query_module.query(uri), MlflowQuery)
    assert isinstance(query_module.query(url), MlflowQuery)
    monkeypatch.setenv("MLFLOW_ENABLE_WORKSPACES", "false")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "secret")  # credentials: MlflowClient sends them, the reader does not
    assert isinstance(query_module.query(url), MlflowQuery)
    assert isinstance(query_module.query(uri), SqliteQuery)


_CLI = """
import sys
from search.cli import cli
try:
    cli.main(sys.argv[1:], standalone_mode=False)
finally:
    print("mlflow imported:", "mlflow" in sys.modules, file=sys.stderr)
"""


@pytest.mark.parametrize("where", ["uri", "url"])
@pytest.mark.parametrize("command", [["runs", "--json"], ["best", "--name", "s1", "--json"]])
def test_runs_and_best_answer_without_importing_mlflow(store: dict[str, Any], command: list[str], where: str) -> None:
    args = [*command, "--tracking-uri", store[where]]
    fast = subprocess.run([sys.executable, "-c", _CLI, *args], capture_output=True, text=True, timeout=120, check=True)
    assert "mlflow imported: False" in fast.stderr
    # The same command with every read through MlflowClient prints the same answer.
    slow_cli = _CLI.replace("from search.cli import cli",
                            "from search.tracking import query, record\nrecord.query = query.MlflowQuery\n"
                            "from search.cli import cli")
    slow = subprocess.run([sys.executable, "-c", slow_cli, *args], capture_output=True, text=True, timeout=120, check=True)
    assert "mlflow imported: True" in slow.stderr
    assert json.loads(fast.stdout) == json.loads(slow.stdout)
    if command[0] == "best":
        # The highest finite value of the runs not deleted: trial-001's 0.9 was deleted; inf and NaN do not rank.
        assert json.loads(fast.stdout)["trial"] == "trial-002"
