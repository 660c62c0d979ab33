"""``search.tune.kerastuner.KerasTunerSearcher``: a Ray Tune searcher driving KerasTuner's Bayesian oracle.

Most tests drive the ``Searcher`` API directly (suggest / on_trial_complete / save / restore),
as Ray's ``SearchGenerator`` does; the last two run it under a real local Ray.
"""

from __future__ import annotations

import copy
import gc
import math
import os
import pickle
import random
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from search.tune.kerastuner import KerasTunerSearcher
from search.space import FloatRange, IntRange, Space, load_space, parse_space

ray = pytest.importorskip("ray")
from ray import tune  # noqa: E402
from ray.tune.search import Searcher  # noqa: E402

TOY = """
description: two floats and a choice, for a closed-form objective
params:
  l1: {float: [0.0, 10.0]}
  l2: {float: [0.0, 10.0]}
  activation: {choice: [relu, elu, tanh, selu]}
"""


@pytest.fixture(scope="module")
def toy() -> Space:
    return parse_space(TOY, name="toy")


def toy_score(cfg: dict[str, Any]) -> float:
    """Maximum 2.0 at l1=6.3, l2=2.9 (x=1.3, y=-2.1 after centring) with tanh."""
    x, y = cfg["l1"] - 5.0, cfg["l2"] - 5.0
    return -((x - 1.3) ** 2) - (y + 2.1) ** 2 + (2.0 if cfg["activation"] == "tanh" else 0.0)


def default_score(cfg: dict[str, Any]) -> float:
    """A smooth objective on the default space that rewards a conditional key."""
    score = -abs(math.log10(cfg["learning_rate"]) + 2.5) - 0.1 * cfg["n_hidden"]
    if cfg["optimizer"] in ("momentum", "nesterov"):
        score += 0.5 + 0.3 * cfg["momentum"]
    return score


def drive(
    searcher: KerasTunerSearcher,
    space: Space,
    score: Callable[[dict[str, Any]], float],
    *,
    total: int,
    concurrency: int = 1,
    seed: int = 0,
    prefix: str = "t",
    start: int = 0,
) -> dict[str, tuple[dict[str, Any], float]]:
    """Suggest ``total`` trials with up to ``concurrency`` outstanding, completing them in random order."""
    rng = random.Random(seed)
    live: list[str] = []
    out: dict[str, tuple[dict[str, Any], float]] = {}
    n = start
    while n < start + total or live:
        while len(live) < concurrency and n < start + total:
            trial_id = f"{prefix}{n}"
            n += 1
            values = searcher.suggest(trial_id)
            assert isinstance(values, dict), values
            cfg = space.assemble(values)
            space.validate_config(cfg)
            out[trial_id] = (values, score(cfg))
            live.append(trial_id)
        done = live.pop(rng.randrange(len(live)))
        searcher.on_trial_complete(done, {"score": out[done][1], "training_iteration": 1})
    return out


# -- suggestions ----------------------------------------------------------------------------
def test_default_space_concurrent_suggestions_are_valid_conditional_configs() -> None:
    space = load_space("default")
    searcher = KerasTunerSearcher(space, metric="score", mode="max", seed=3, num_initial_points=45)
    trials = drive(searcher, space, default_score, total=60, concurrency=4, seed=1)
    assert len(trials) == 60
    names = {n.name for n in space.sampled}
    for values, _ in trials.values():
        assert set(values) <= names
        # Inactive nodes are left out of the suggestion, not filled in.
        assert ("momentum" in values) == (values["optimizer"] in ("momentum", "nesterov"))
        assert ("weight_decay" in values) == (values["optimizer"] == "adamw")
        # KerasTuner's scopes cannot say "hidden BN or input BN": bn_momentum is always suggested,
        # and Space.assemble drops it where neither holds.
        assert "bn_momentum" in values
        assert ("bn_momentum" in space.assemble(values)) == (
            values["batch_norm"] != "none" or values["input_batch_norm"] == "true")
        assert ("schedule_patience" in values) == (values["lr_schedule"] == "plateau")
        assert ("dropout_kind" in values) == (values["activation+initializer"] == "selu/lecun_normal")
        for name, value in values.items():
            dim = space.dimension(name)
            if isinstance(dim, IntRange):
                assert type(value) is int and dim.low <= value <= dim.high
            elif isinstance(dim, FloatRange):
                assert type(value) is float and dim.low <= value <= dim.high
            else:
                assert value in dim.labels
    # All distinct, the Bayesian ones (after 45 random points) included.
    keys = {tuple(sorted(values.items())) for values, _ in trials.values()}
    assert len(keys) == 60
    oracle = searcher.oracle
    assert oracle is not None and not oracle.ongoing_trials
    assert len(searcher.completed()) == 60


def test_same_seed_same_suggestions(toy: Space) -> None:
    def first(seed: int | None) -> list[dict[str, Any]]:
        searcher = KerasTunerSearcher(toy, metric="score", mode="max", seed=seed, num_initial_points=3)
        return [v for v, _ in drive(searcher, toy, toy_score, total=5).values()]

    # Seed 0 included: KerasTuner itself reads seed 0 as "no seed".
    assert first(0) == first(0)
    assert first(7) == first(7)
    assert first(0) != first(7)


def test_prints_nothing(toy: Space, capsys: pytest.CaptureFixture[str]) -> None:
    searcher = KerasTunerSearcher(toy, metric="score", mode="max", seed=0, num_initial_points=3)
    drive(searcher, toy, toy_score, total=6, concurrency=2)
    searcher.on_trial_complete("never-suggested", {"score": 1.0})
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# -- learning -------------------------------------------------------------------------------
@pytest.mark.slow
def test_bayesian_beats_random_search(toy: Space) -> None:
    """30 trials each; the baseline is ``Space.sample`` with the same seed (Ray's random search
    draws from the same distribution). Over seeds 0-9 the Bayesian searcher won 9 of 10."""
    budget, bayes_best, random_best = 30, [], []
    for seed in (0, 1, 2):
        searcher = KerasTunerSearcher(toy, metric="score", mode="max", seed=seed, num_initial_points=8)
        trials = drive(searcher, toy, toy_score, total=budget)
        bayes_best.append(max(s for _, s in trials.values()))
        random_best.append(max(toy_score(cfg) for cfg in toy.samples(budget, seed=seed)))
    wins = sum(b > r for b, r in zip(bayes_best, random_best, strict=True))
    assert sum(bayes_best) / 3 > sum(random_best) / 3, (bayes_best, random_best)
    assert wins >= 2, (bayes_best, random_best)


def test_minimizes_with_mode_min(toy: Space) -> None:
    searcher = KerasTunerSearcher(toy, metric="loss", mode="min", seed=0, num_initial_points=4)
    scores = {}
    for i in range(6):
        values = searcher.suggest(f"t{i}")
        assert isinstance(values, dict)
        scores[f"t{i}"] = -toy_score(toy.assemble(values))
        searcher.on_trial_complete(f"t{i}", {"loss": scores[f"t{i}"]})
    assert searcher.oracle is not None and searcher.oracle.objective.direction == "min"
    assert searcher.oracle.get_best_trials(1)[0].score == min(scores.values())


# -- failures and limits --------------------------------------------------------------------
def test_failed_trials_are_ignored_and_never_stop_the_search(toy: Space) -> None:
    searcher = KerasTunerSearcher(toy, metric="score", mode="max", seed=0, num_initial_points=3)
    bad: list[tuple[dict[str, Any] | None, bool]] = [
        (None, True),  # the trainable raised
        ({"other": 1.0}, False),  # the metric is missing
        ({"score": float("nan")}, False),
        ({"score": float("inf")}, False),
        ({"score": "high"}, False),
        (None, False),
    ]
    for i, (result, error) in enumerate(bad):
        assert isinstance(searcher.suggest(f"bad{i}"), dict)
        searcher.on_trial_complete(f"bad{i}", result, error=error)  # six failures in a row: no RuntimeError
    oracle = searcher.oracle
    assert oracle is not None
    assert [t.status for t in oracle.trials.values()] == ["FAILED"] * 6
    drive(searcher, toy, toy_score, total=4)  # three random points, then the Gaussian process
    assert len(searcher.completed()) == 4
    # Unknown ids and repeated completions are ignored.
    searcher.on_trial_complete("unknown", {"score": 1.0})
    searcher.on_trial_complete("t0", {"score": 100.0})
    assert len(searcher.completed()) == 4 and max(s for _, _, s in searcher.completed()) < 100.0


def test_finished_when_max_trials_reached(toy: Space) -> None:
    searcher = KerasTunerSearcher(toy, metric="score", mode="max", seed=0, max_trials=3)
    for i in range(3):
        assert isinstance(searcher.suggest(f"t{i}"), dict)
    assert searcher.suggest("t3") == Searcher.FINISHED


def test_finished_when_space_is_exhausted() -> None:
    space = parse_space("params:\n  optimizer: {choice: [adam, sgd]}\n  learning_rate: 0.01\n", name="tiny")
    searcher = KerasTunerSearcher(space, metric="score", mode="max", seed=0, num_initial_points=10)
    seen = set()
    for i in range(2):
        values = searcher.suggest(f"t{i}")
        assert isinstance(values, dict)
        seen.add(values["optimizer"])
        searcher.on_trial_complete(f"t{i}", {"score": float(i)})
    assert seen == {"adam", "sgd"}
    assert searcher.suggest("t2") == Searcher.FINISHED


def test_metric_and_mode_may_come_later(toy: Space) -> None:
    searcher = KerasTunerSearcher(toy, seed=0)
    with pytest.raises(ValueError, match="metric and a mode"):
        searcher.suggest("t0")
    # A param_space with search domains in it is refused: the space is the searcher's own.
    assert searcher.set_search_properties("score", "max", {"x": tune.uniform(0, 1)}) is False
    assert searcher.set_search_properties("score", "max", {"dataset": "digits"}) is True
    assert searcher.metric == "score" and searcher.mode == "max"
    assert isinstance(searcher.suggest("t0"), dict)
    with pytest.raises(ValueError, match="cannot switch"):
        searcher.set_search_properties("loss", "min", {"dataset": "digits"})
    with pytest.raises(ValueError, match="mode must be"):
        KerasTunerSearcher(toy, metric="score", mode="maximize")


# -- save and restore -----------------------------------------------------------------------
def test_save_and_restore_mid_search(toy: Space, tmp_path: Path) -> None:
    first = KerasTunerSearcher(toy, metric="score", mode="max", seed=0, num_initial_points=6)
    recorded: dict[str, float] = {}
    for i in range(12):
        values = first.suggest(f"t{i}")
        assert isinstance(values, dict)
        recorded[f"t{i}"] = toy_score(toy.assemble(values))
    outstanding = ["t3", "t8"]
    for trial_id, score in recorded.items():
        if trial_id not in outstanding:
            first.on_trial_complete(trial_id, {"score": score})
    path = tmp_path / "searcher-state.pkl"
    first.save(str(path))
    trial_ids = first.trial_ids
    first_dir = first.oracle._project_dir  # type: ignore[union-attr]
    del first
    gc.collect()
    assert not os.path.exists(first_dir)  # the oracle's own files are gone, and not needed

    restored = KerasTunerSearcher(toy)  # no metric, mode or seed: they come with the state
    restored.restore(str(path))
    oracle = restored.oracle
    assert oracle is not None and restored.metric == "score" and restored.mode == "max"
    assert len(restored.completed()) == 10
    assert sorted(t.trial_id for t in oracle.ongoing_trials.values()) == sorted(trial_ids[t] for t in outstanding)
    assert restored.trial_ids == trial_ids

    for trial_id in outstanding:  # Ray resumes them with their old ids
        restored.on_trial_complete(trial_id, {"score": recorded[trial_id]})
    assert len(restored.completed()) == 12 and not oracle.ongoing_trials
    more = drive(restored, toy, toy_score, total=8, start=12)
    recorded.update({k: s for k, (_, s) in more.items()})

    completed = restored.completed()
    assert len(completed) == 20
    assert sorted(s for _, _, s in completed) == sorted(recorded.values())
    assert {ray_id: s for ray_id, _, s in completed} == recorded
    assert oracle.get_best_trials(1)[0].score == max(recorded.values())


def test_restore_continues_the_seeded_sequence(toy: Space, tmp_path: Path) -> None:
    original = KerasTunerSearcher(toy, metric="score", mode="max", seed=5, num_initial_points=20)
    drive(original, toy, toy_score, total=4)
    original.save(str(tmp_path / "s.pkl"))
    restored = KerasTunerSearcher(toy)
    restored.restore(str(tmp_path / "s.pkl"))
    assert [original.suggest(f"n{i}") for i in range(3)] == [restored.suggest(f"n{i}") for i in range(3)]


@pytest.mark.parametrize("copier", [lambda s: pickle.loads(pickle.dumps(s)), copy.deepcopy], ids=["pickle", "deepcopy"])
def test_pickles_with_its_state(toy: Space, copier: Callable[[Any], Any]) -> None:
    """Ray pickles the searcher into tuner.pkl: a copy carries the state, not the live oracle."""
    searcher = KerasTunerSearcher(toy, metric="score", mode="max", seed=0, num_initial_points=4)
    drive(searcher, toy, toy_score, total=5)
    assert isinstance(searcher.suggest("open"), dict)
    clone = copier(searcher)
    assert clone.oracle is not searcher.oracle
    assert clone.oracle._project_dir != searcher.oracle._project_dir  # type: ignore[union-attr]
    assert len(clone.completed()) == 5 and len(clone.oracle.ongoing_trials) == 1  # type: ignore[union-attr]
    clone.on_trial_complete("open", {"score": -1.0})
    drive(clone, toy, toy_score, total=2, start=10)
    assert len(clone.completed()) == 8 and len(searcher.completed()) == 5
    fresh = pickle.loads(pickle.dumps(KerasTunerSearcher(toy, seed=1)))  # before any oracle exists
    assert fresh.oracle is None and fresh.metric is None


# -- real Ray -------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_tuner_end_to_end(local_ray: Any, tmp_path: Path) -> None:
    space = load_space("default")

    def objective(config: dict[str, Any]) -> None:
        cfg = space.assemble(config)
        tune.report({"score": -abs(cfg["n_hidden"] - 3) + 10 * cfg["learning_rate"]})

    # With an empty param_space Ray never calls set_search_properties, so metric and mode go to
    # the searcher; TuneConfig must then name the same ones (or none).
    searcher = KerasTunerSearcher(space, metric="score", mode="max", seed=0)
    results = tune.Tuner(
        objective,
        param_space={},
        tune_config=tune.TuneConfig(search_alg=searcher, metric="score", mode="max", num_samples=8, max_concurrent_trials=2),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="t", verbose=0),
    ).fit()
    assert len(results) == 8 and not results.errors
    for result in results:
        space.validate_config(space.assemble(result.config))
    assert len(searcher.completed()) == 8
    assert {ray_id for ray_id, _, _ in searcher.completed()} == {r.metrics["trial_id"] for r in results}


@pytest.mark.slow
def test_ray_tuner_restore_after_interrupt(local_ray: Any, tmp_path: Path) -> None:
    """The fourth trial interrupts the driver (SIGUSR1, which Tune handles like Ctrl+C); the
    restored experiment resumes the interrupted trials under their old ids and suggests the rest
    from the restored oracle. metric/mode come through TuneConfig (param_space is non-empty)."""
    space = load_space("quick")
    flag, done = tmp_path / "interrupt", tmp_path / "done"
    done.mkdir()
    flag.touch()

    def objective(config: dict[str, Any]) -> None:
        cfg = space.assemble(config)
        if len(os.listdir(done)) >= 3:
            try:
                os.remove(flag)
            except FileNotFoundError:
                pass
            else:
                os.kill(config["driver_pid"], signal.SIGUSR1)
                time.sleep(3)  # still running when the driver stops
        tune.report({"score": float(cfg["learning_rate"])})
        (done / tune.get_context().get_trial_id()).touch()

    searcher = KerasTunerSearcher(space, seed=0)
    first = tune.Tuner(
        objective,
        param_space={"driver_pid": os.getpid()},
        tune_config=tune.TuneConfig(search_alg=searcher, metric="score", mode="max", num_samples=8, max_concurrent_trials=2),
        run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name="t", verbose=0),
    ).fit()
    assert not flag.exists(), "the interrupt never happened"
    assert len(first) < 8
    completed_before = {ray_id: score for ray_id, _, score in searcher.completed()}
    ongoing_before = {ray_id for ray_id, kt_id in searcher.trial_ids.items()
                      if searcher.oracle.trials[kt_id].status == "RUNNING"}  # type: ignore[union-attr]
    assert len(completed_before) >= 3 and ongoing_before

    path = str(tmp_path / "ray" / "t")
    assert tune.Tuner.can_restore(path)
    results = tune.Tuner.restore(path, objective).fit()
    assert len(results) == 8 and not results.errors

    # The searcher state the restored run saved: a fresh searcher reads it back.
    final = KerasTunerSearcher(space)
    final.restore_from_dir(path)
    completed = {ray_id: score for ray_id, _, score in final.completed()}
    assert set(completed) == {r.metrics["trial_id"] for r in results}
    assert all(completed[k] == v for k, v in completed_before.items())  # kept across the restore
    assert ongoing_before <= set(completed)  # resumed trials reported into their KerasTuner trials
    assert not final.oracle.ongoing_trials  # type: ignore[union-attr]
    for result in results:
        space.validate_config(space.assemble(result.config))
