"""--warm-start: earlier trials read from MLflow seed Optuna's study and KerasTuner's oracle; trials
outside the new space are skipped and counted; the new search records where it started from."""

from __future__ import annotations

import shutil
from typing import Any

import pytest

from search.errors import SearchError, SpaceError
from search.space import load_space, parse_space
from search.tune.algorithms import Plan, make_searcher
from search.tune.warm_start import Evaluated, gather

NARROW = """\
description: the store's space with one learning rate left, and another beside it
params:
  n_hidden: 1
  n_neurons: 32
  dropout: 0.2
  optimizer: adam
  learning_rate: {choice: [0.003, 0.001]}
  batch_size: 64
  epochs: 3
"""


@pytest.mark.parametrize("name", ["default", "quick", "batchnorm", "optimizers", "schedules", "regularization", "selu"])
def test_encode_is_the_inverse_of_assemble(name: str) -> None:
    space = load_space(name)
    for config in space.samples(50, seed=3):
        assert space.assemble(space.encode(config)) == config


def test_encode_refuses_a_config_outside_the_space_and_takes_epochs_as_a_budget() -> None:
    space = load_space("quick")
    config = space.sample(0)
    with pytest.raises(SpaceError, match="learning_rate=0.5 is outside"):
        space.encode({**config, "learning_rate": 0.5})
    with pytest.raises(SpaceError, match="epochs"):
        space.encode({**config, "epochs": 2})
    assert space.encode({**config, "epochs": 2}, budget=("epochs",)) == space.encode(config)


def _plan(history: tuple[Evaluated, ...]) -> Plan:
    space = load_space("quick")
    return Plan(space=space, metric="val_accuracy", mode="max", seed=0, num_samples=4, concurrency=1, max_t=8,
                history=history)


def _history(n: int) -> tuple[Evaluated, ...]:
    space = load_space("quick")
    return tuple(Evaluated(space.encode(c), 0.5 + i / 100, f"run{i}") for i, c in enumerate(space.samples(n, seed=7)))


def test_tpe_starts_from_the_earlier_trials() -> None:
    history = _history(5)
    searcher = make_searcher("tpe", _plan(history))
    trials = searcher._ot_study.trials  # Ray's OptunaSearch keeps its study here
    assert [t.params for t in trials] == [p.values for p in history]
    assert [t.value for t in trials] == [p.score for p in history]
    assert all(t.state.name == "COMPLETE" for t in trials)
    assert isinstance(searcher.suggest("t1"), dict)  # and it goes on suggesting


def test_the_keras_tuner_oracle_starts_from_the_earlier_trials() -> None:
    history = _history(3)
    searcher = make_searcher("bayes", _plan(history))
    assert isinstance(searcher.suggest("t1"), dict)
    done = sorted(((score, values) for _, values, score in searcher.completed()), key=lambda sv: sv[0])
    assert [s for s, _ in done] == [p.score for p in history]  # distinct scores, in increasing order
    for (_, values), point in zip(done, history, strict=True):
        assert {k: values[k] for k in point.values} == point.values  # KerasTuner also holds inactive defaults
    assert searcher.oracle.max_trials == 4 + 3  # the budget is on top of the earlier trials


def test_random_search_says_it_cannot_learn() -> None:
    from search.tune import LaunchOptions
    from search.tune.options import validate

    with pytest.raises(SearchError, match="--warm-start needs a searcher that learns .*tpe or bayes.*random"):
        validate(LaunchOptions.from_flat(warm_start=("a",), searcher="random"))


@pytest.fixture
def store(search_store: dict[str, Any], tmp_path: Any) -> dict[str, Any]:
    """A copy of the session's search store (one finished search, ``pipe``), to add searches to."""
    shutil.copy(search_store["root"] / "mlflow.db", tmp_path / "mlflow.db")
    return {"uri": f"sqlite:///{tmp_path}/mlflow.db", "parent": search_store["parent"], "root": tmp_path}


def test_gather_reads_the_trials_and_skips_those_outside(store: dict[str, Any]) -> None:
    import mlflow

    space = parse_space(NARROW, name="narrow")
    runs = mlflow.MlflowClient(store["uri"]).search_runs(
        [mlflow.MlflowClient(store["uri"]).get_experiment_by_name("search").experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{store['parent']}' and tags.`search.role` = 'trial'")
    inside = {r.info.run_id: r.data.metrics["best_val_accuracy"] for r in runs if r.data.params["learning_rate"] == "0.003"}
    warm = gather(store["uri"], "search", ["pipe", store["parent"]], space, metric="val_accuracy")
    assert {p.source: p.score for p in warm.points} == inside
    assert all(p.values == {"learning_rate": "0.003"} for p in warm.points)
    assert (warm.outside, warm.unscored, len(warm.searches)) == (len(runs) - len(inside), 0, 1)
    if warm.outside:
        assert "learning_rate=0.01 is not one of 0.003, 0.001" in warm.summary()
    with pytest.raises(SearchError, match="that search optimized val_accuracy, this one val_loss"):
        gather(store["uri"], "search", ["pipe"], space, metric="val_loss")
    with pytest.raises(SearchError, match="--warm-start nope: no search named 'nope'"):
        gather(store["uri"], "search", ["nope"], space, metric="val_accuracy")


@pytest.mark.slow  # one real one-trial search through the CLI, on a real Ray
def test_a_warm_started_search_records_where_it_started(store: dict[str, Any]) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    from search.tracking import SearchRecord

    (store["root"] / "narrow.yaml").write_text(NARROW)
    script = Path(sys.executable).with_name("search")
    env = {**{k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")},
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([str(script), "launch", "--space", "narrow.yaml", "--num-samples", "1", "--warm-start", "pipe",
                           "--scheduler", "fifo", "--name", "warm", "--tracking-uri", store["uri"], "--storage-path",
                           str(store["root"] / "ray"), "--json"], cwd=store["root"], env=env, capture_output=True,
                          text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = gather(store["uri"], "search", ["pipe"], parse_space(NARROW, name="narrow"), metric="val_accuracy")
    record = SearchRecord.find(store["uri"], "search", name="warm")
    assert expected.summary() in proc.stderr.splitlines()
    assert record.parent.data.metrics["warm_start_trials"] == len(expected.points)
    assert record.parent.data.metrics["warm_start_skipped"] == expected.skipped
    assert record.tags["search.warm_start_runs"] == store["parent"] and record.params["warm_start"] == '["pipe"]'
    assert "warm start" in record.tags["mlflow.note.content"]
    assert len(record.children("trial")) == 1 and record.parent.info.status == "FINISHED"
    refused = subprocess.run([str(script), "launch", "--warm-start", "pipe", "--searcher", "random", "--tracking-uri",
                              store["uri"]], cwd=store["root"], env=env, capture_output=True, text=True, timeout=200)
    assert refused.returncode == 2 and refused.stderr.startswith("error: --warm-start needs a searcher that learns")
