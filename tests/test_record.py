"""SearchRecord.best_trial asks the store for one sorted page: it must pick what ranking every trial picks.

A real MLflow SQLite store under tmp_path, written through the project's Tracker: a parent run and
trial runs with chosen best metrics (ties, NaN, missing), in both modes and with pages small
enough that the best value's ties run past them.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

pytest.importorskip("mlflow")

from search import tracking  # noqa: E402
from search.tracking import record as record_module  # noqa: E402
from search.tracking import tags  # noqa: E402
from search.errors import TrackingError  # noqa: E402


def _store(tmp_path: Path, name: str, mode: str, values: list[float | None],
           losses: list[float | None]) -> tracking.SearchRecord:
    uri = f"sqlite:///{tmp_path}/{name}.db"
    tracker = tracking.Tracker(uri, "records")
    parent = tracker.start_search(name, {"metric": "val_accuracy", "mode": mode}, {})
    key = tags.best_metric("val_accuracy")
    for i, (value, loss) in enumerate(zip(values, losses, strict=True)):
        run_id = tracker.start_trial(f"t{i:03d}", f"trial-{i:03d}", {"n_hidden": 1}, {})
        metrics = {} if value is None else {key: value}
        if loss is not None:
            metrics[tags.BEST_EPOCH_VAL_LOSS] = loss
        if metrics:
            tracker.final_metrics(run_id, metrics)
        tracker.end_run(run_id, "FINISHED")
    tracker.flush()
    tracker.end_run(parent, "FINISHED")
    return tracking.SearchRecord.find(uri, "records", run_id=parent)


@pytest.mark.parametrize("mode", ["max", "min"])
@pytest.mark.parametrize("page", [3, 100])
def test_best_trial_is_the_first_of_all_trials_ranked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str,
                                                       page: int) -> None:
    rng = random.Random(7)
    # Few distinct values, so the best one ties across a page of 3; NaN and missing values among them.
    values: list[float | None] = [rng.choice([0.5, 0.75, 0.9]) for _ in range(12)] + [math.nan, None, math.nan]
    losses: list[float | None] = [rng.choice([0.3, 0.2, None]) for _ in values]
    record = _store(tmp_path, f"s-{mode}-{page}", mode, values, losses)
    monkeypatch.setattr(record_module, "BEST_PAGE", page)
    expected = record.ranked_trials()[0]
    # Independently of rank_key: the best value, then the lowest loss (missing last), then the name.
    target = max if mode == "max" else min
    best_value = target(v for v in values if v is not None and not math.isnan(v))
    tied = [i for i, v in enumerate(values) if v == best_value]
    best_loss = min((losses[i] for i in tied if losses[i] is not None), default=None)
    first = min(i for i in tied if losses[i] == best_loss)
    assert expected.info.run_name == f"trial-{first:03d}"
    assert record.best_trial().info.run_id == expected.info.run_id


def test_best_trial_with_no_scored_trial_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record = _store(tmp_path, "none", "max", [math.nan, None, math.nan, None], [None] * 4)
    monkeypatch.setattr(record_module, "BEST_PAGE", 2)
    with pytest.raises(TrackingError, match="no finished trial with val_accuracy"):
        record.best_trial()
