"""``search importance``: importances from a search's trials, against trials built to have a known answer."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from search import plots, tracking
from search.cli import cli
from search.importance import MIN_TRIALS, importances


def known_trials(n: int, seed: int = 0) -> tuple[list[dict[str, Any]], list[float]]:
    """The metric is 3 * learning_rate plus a little noise: nothing else matters, by construction."""
    rng = random.Random(seed)
    configs, values = [], []
    for i in range(n):
        cfg = {"learning_rate": rng.uniform(0.001, 0.01), "dropout": rng.choice([0.0, 0.1, 0.2]),
               "optimizer": rng.choice(["adam", "sgd", "nadam"]), "n_neurons": rng.choice([32, 64, 128])}
        if cfg["optimizer"] == "sgd":
            cfg["momentum"] = rng.uniform(0.8, 0.99)
        configs.append(cfg)
        values.append(300 * cfg["learning_rate"] + 0.01 * rng.gauss(0, 1))
    return configs, values


@pytest.mark.parametrize(("evaluator", "n"), [("fanova", 40), ("ped-anova", 100)])
def test_the_key_that_drives_the_metric_comes_first(evaluator: str, n: int) -> None:
    """PED-ANOVA compares the top 10% of the trials with the rest: it needs more of them."""
    configs, values = known_trials(n)
    found = importances(configs, values, mode="max", evaluator=evaluator)
    assert list(found.scores)[0] == "learning_rate" and found.scores["learning_rate"] > 0.8
    assert sum(found.scores.values()) == pytest.approx(1.0)
    assert found.left_out == ["momentum"]  # only the sgd trials have it
    assert found.trials == n and not found.note


def test_too_few_trials_say_so_instead_of_printing_noise() -> None:
    configs, values = known_trials(MIN_TRIALS - 1)
    found = importances(configs, values, mode="max")
    assert found.scores == {} and f"{MIN_TRIALS - 1} scored trials are too few" in found.note
    assert importances(configs, [None] * len(configs), mode="max").trials == 0  # failed trials do not count


def test_nothing_varies() -> None:
    found = importances([{"dropout": 0.1}] * 12, [0.9] * 12, mode="max")
    assert found.scores == {} and "nothing varies" in found.note


def test_unknown_evaluator() -> None:
    with pytest.raises(ValueError, match="evaluator must be one of fanova, ped-anova, but got 'x'"):
        importances([], [], mode="max", evaluator="x")


@pytest.mark.slow  # a real MLflow store
def test_search_importance_reads_the_store_and_writes_the_parent(tmp_path: Path) -> None:
    uri = tracking.resolve_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    tracker = tracking.Tracker(uri, "search")
    parent = tracker.start_search("imp", {"metric": "val_accuracy", "mode": "max"}, {})
    configs, values = known_trials(24, seed=1)
    for i, (cfg, value) in enumerate(zip(configs, values, strict=True)):
        run = tracker.start_trial(f"t{i}", f"trial-{i:03d}", cfg, {})
        tracker.final_metrics(run, {"best_val_accuracy": value})
        tracker.end_run(run, "FINISHED", {tracking.END_STATE: "finished"})
    tracker.end_run(parent, "FINISHED")
    result = CliRunner().invoke(cli, ["importance", "--tracking-uri", uri, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["trials"] == 24 and list(out["scores"])[0] == "learning_rate"
    mlc = tracking.client(uri)
    note = mlc.get_run(parent).data.tags[tracking.NOTE]
    assert "### Importance" in note and "| `learning_rate` |" in note
    local = Path(mlc.download_artifacts(parent, "plots/importance.png", str(tmp_path)))
    drawn = plots.plot_data(local)
    assert drawn["kind"] == "importance" and drawn["scores"] == pytest.approx(out["scores"])


@pytest.mark.slow  # a real search
def test_a_small_search_says_it_is_too_small(search_store: dict[str, Any]) -> None:
    result = CliRunner().invoke(cli, ["importance", "--tracking-uri", search_store["uri"]], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "3 scored trials are too few for importances to mean anything" in result.stdout
