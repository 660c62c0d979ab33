"""`search launch`: real local Ray (2 CPUs), real MLflow SQLite under tmp_path."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from search import tracking  # noqa: E402
from search.tune import LaunchOptions
from search.tune.launch import launch  # noqa: E402

pytestmark = pytest.mark.slow


def options(tmp_path: Path, **kw: Any) -> LaunchOptions:
    base = dict(
        space="quick", dataset="digits", num_samples=4, max_epochs=3, searcher="random", scheduler="fifo",
        tracking_uri=f"sqlite:///{tmp_path}/mlflow.db", storage_path=str(tmp_path / "ray"), name="t", quiet=True,
        seed=0,
    )
    base.update(kw)
    return LaunchOptions.from_flat(**base)


def children(uri: str, parent_id: str) -> list[Any]:
    mlc = tracking.client(uri)
    parent = mlc.get_run(parent_id)
    return list(mlc.search_runs([parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"))


# Random search runs under launch in most other tests; here the two model-based searchers.
@pytest.mark.parametrize("searcher", ["tpe", "bayes"])
def test_search_records_parent_and_nested_trials(local_ray: Any, tmp_path: Path, searcher: str) -> None:
    result = launch(options(tmp_path, searcher=searcher, name=f"s-{searcher}"))
    uri = result.tracking_uri
    assert uri == f"sqlite:///{tmp_path}/mlflow.db"
    mlc = tracking.client(uri)
    parent = mlc.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == f"s-{searcher}"
    assert parent.data.params["searcher"] == searcher and parent.data.tags[tracking.ROLE] == "search"
    runs = children(uri, result.parent_run_id)
    assert len(runs) == 4
    from search.space import load_space

    space = load_space("quick")
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags[tracking.END_STATE] == "finished"
        assert run.data.tags[tracking.TRIAL_ID] and run.data.tags[tracking.NODE]
        assert run.info.run_name.startswith("trial-")
        cfg = tracking.config_of(run)
        cfg["epochs"] = 8  # --max-epochs overrides the space's fixed epochs; check the rest is a point of the space
        space.validate_config(cfg)
        history = mlc.get_metric_history(run.info.run_id, "val_accuracy")
        assert sorted(m.step for m in history) == [1, 2, 3]
        for key in ("loss", "accuracy", "val_loss", "lr", "epoch_time_s"):
            assert len(mlc.get_metric_history(run.info.run_id, key)) == 3
        # The summary metric is the best epoch of the recorded history.
        assert run.data.metrics["best_val_accuracy"] == max(m.value for m in history)
    # The search's ranking rule, written out: the highest best_val_accuracy; ties (a few hundred validation
    # images tie often) to the lower val_loss at that epoch, then to the earlier run name. Taking the first
    # of the tied runs instead failed when two trials tied.
    best = min(runs, key=lambda r: (-r.data.metrics["best_val_accuracy"], r.data.metrics["best_epoch_val_loss"],
                                    r.info.run_name))
    assert parent.data.metrics["best_val_accuracy"] == best.data.metrics["best_val_accuracy"]
    assert parent.data.tags["search.best_run_id"] == best.info.run_id
    assert [a.path for a in mlc.list_artifacts(best.info.run_id, "model")] == ["model/model.keras"]
    assert {a.path for a in mlc.list_artifacts(parent.info.run_id)} >= {"space.yaml", "best_config.json"}
    assert result.best is not None and result.best.run_id == best.info.run_id


def test_asha_stops_trials_early_and_marks_them(local_ray: Any, tmp_path: Path) -> None:
    """With reports coalesced as far as they go (one a minute at most), ASHA still decides at its exact rung
    (epoch 2 of 6), Tune hears of few epochs, and MLflow records every one."""
    import json

    from search.tune.algorithms import asha_milestones

    result = launch(options(tmp_path, num_samples=6, max_epochs=6, scheduler="asha", concurrency=2, name="asha",
                            report_every_s=60.0))
    runs = children(result.tracking_uri, result.parent_run_id)
    assert len(runs) == 6
    stopped = [r for r in runs if r.data.tags.get(tracking.END_STATE) == "stopped_early"]
    assert stopped, "ASHA stopped no trial"
    rungs = asha_milestones(6)
    assert rungs == {2}
    for run in stopped:
        assert run.data.tags[tracking.STOPPED_BY] == "scheduler"
        assert run.data.metrics["epochs_run"] in rungs  # stopped where ASHA decides, not at a later report
    assert {t.state for t in result.trials} <= {"finished", "stopped_early"}
    mlc = tracking.client(result.tracking_uri)
    reported: dict[str, list[tuple[int, bool]]] = {}  # trial id -> (epoch, with a checkpoint) per report
    for path in (tmp_path / "ray" / "asha").glob("*/result.json"):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            reported.setdefault(row["trial_id"], []).append((int(row["epoch"]), "checkpoint_score" in row))
    coalesced, longest = 0, 0.0
    for run in runs:
        ran = int(run.data.metrics["epochs_run"])
        steps = sorted(m.step for m in mlc.get_metric_history(run.info.run_id, "val_loss"))
        assert steps == list(range(1, ran + 1))  # every epoch in MLflow
        told = reported[run.data.tags[tracking.TRIAL_ID]]
        # Each report is the first epoch, a rung, one with a checkpoint, or the last.
        assert all(epoch in {1, ran} | rungs or checkpoint for epoch, checkpoint in told), told
        coalesced += ran - len(told)
        # Each epoch is stamped when it ended in the worker, not when its report reached the driver:
        # an epoch ends at least its own duration after the one before it.
        stamps = {m.step: m.timestamp for m in mlc.get_metric_history(run.info.run_id, "val_loss")}
        took_ms = {m.step: m.value * 1000 for m in mlc.get_metric_history(run.info.run_id, "epoch_time_s")}
        for step in range(2, ran + 1):
            assert stamps[step] - stamps[step - 1] >= took_ms[step] - 2, (step, stamps, took_ms)
        longest = max([longest, *(took_ms[s] for s in range(2, ran + 1))])
    assert coalesced > 0, "no report carried more than one epoch"
    assert longest > 5, "every epoch was too short for its timestamps to tell"


def test_diverging_trial_is_failed_and_the_search_goes_on(local_ray: Any, tmp_path: Path) -> None:
    # Leaky ReLUs, which cannot all die: with plain ReLUs, a net whose first step of lr 1e12 kills every
    # unit only moves its output bias, its loss stays finite, and the trial finishes (1 of 117 such trials
    # in 45 searches; reproduced in process with every hidden bias set to -1e6).
    space = tmp_path / "diverge.yaml"
    space.write_text(
        "params:\n"
        "  n_hidden: 1\n  n_neurons: 32\n  activation: leaky_relu\n  optimizer: sgd\n  batch_size: 64\n  epochs: 3\n"
        "  learning_rate: {choice: [0.01, 1.0e+12]}\n"
    )
    result = launch(options(tmp_path, space=str(space), num_samples=6, name="diverge"))
    runs = children(result.tracking_uri, result.parent_run_id)
    assert len(runs) == 6
    by_lr: dict[str, set[str]] = {}
    for run in runs:
        by_lr.setdefault(run.data.params["learning_rate"], set()).add(run.info.status)
        if run.info.status == "FAILED":
            assert run.data.tags[tracking.END_STATE] == "failed"
            assert "loss became NaN at epoch 1" in run.data.tags[tracking.FAIL_REASON]
    assert by_lr == {"0.01": {"FINISHED"}, "1000000000000.0": {"FAILED"}}


def test_bad_options_fail_before_anything_runs(tmp_path: Path) -> None:
    from search.errors import SearchError

    cases = [
        (dict(num_samples=0), "--num-samples must be at least 1"),
        (dict(searcher="nope"), "unknown searcher 'nope'; choose one of random, tpe, bayes"),
        (dict(scheduler="nope"), "unknown scheduler 'nope'; choose one of fifo, asha, hyperband, pbt"),
        (dict(resume=True, name=None), "--resume needs --name"),
    ]
    for kw, message in cases:
        with pytest.raises(SearchError, match=message):
            launch(options(tmp_path, **kw))


def test_concurrency_larger_than_the_cpus(local_ray: Any, tmp_path: Path) -> None:
    from search.errors import SearchError

    with pytest.raises(SearchError, match=r"--concurrency 5 needs 5 CPUs at 1 per trial, but the cluster has 2"):
        launch(options(tmp_path, concurrency=5))


def test_unreachable_tracking_server_is_detected_first(tmp_path: Path) -> None:
    import socket

    from search.errors import TrackingError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(TrackingError, match=f"cannot reach the MLflow tracking server at http://127.0.0.1:{port}"):
        launch(options(tmp_path, tracking_uri=f"http://127.0.0.1:{port}"))
    assert time.monotonic() - start < 10


def test_a_searchs_own_local_ray_runs_trials_at_the_users_priority(tmp_path: Path) -> None:
    """Ray starts its workers at nice 15; the local Ray a search starts runs them at the priority of the
    command that started it, as a KerasTuner or Optuna trial in the user's own process would run."""
    import json
    import os
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import json, os, ray
        from search.tune.session import connect, released
        joined = connect(None, num_cpus=1)

        @ray.remote(num_cpus=1)
        def priority():
            return os.nice(0)

        print(json.dumps({"joined": joined, "driver": os.nice(0), "worker": ray.get(priority.remote())}))
        with released():
            pass
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, env=env,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["joined"] is None, "joined a Ray that was already running, so its niceness is not the search's"
    assert out["worker"] == out["driver"], out
