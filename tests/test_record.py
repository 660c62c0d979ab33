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


@pytest.mark.slow  # holds the store locked past MLflow's 20 s SQLite busy timeout
def test_a_background_flush_that_fails_is_written_again_by_the_next_flush(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The driver's periodic flush runs in MLflow's writer thread. Here its write meets a store that another
    connection holds locked for longer than MLflow lets SQLite wait (20 s); the foreground flush that follows (as at a
    checkpoint or a trial's end) writes the batch again once the lock is gone: every step once, none lost."""
    import logging
    import sqlite3
    import threading
    import time

    db = tmp_path / "locked.db"
    tracker = tracking.Tracker(f"sqlite:///{db}", "background")
    parent = tracker.start_search("bg", {}, {})
    run_id = tracker.start_trial("t0", "trial-000", {"n_hidden": 1}, {})
    for step in range(1, 6):
        tracker.log_metrics(run_id, {"val_loss": 1.0 / step, "val_accuracy": step / 10}, step=step)
    locker = sqlite3.connect(db, timeout=0, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")  # no other connection can write, or read, until it ends
    tracker.flush(background=True)  # queued: returns at once, with the write still to happen
    assert tracker._inflight and not tracker._pending[run_id]
    release = threading.Timer(22.0, lambda: locker.execute("COMMIT"))  # past the background write's 20 s wait
    release.start()
    start = time.monotonic()
    caplog.set_level(logging.INFO, logger="search.tracking.writer")
    tracker.flush()  # waits for the failed background write, then writes it again, retrying until the lock ends
    release.join()
    assert time.monotonic() - start >= 21.0 and not tracker._inflight
    assert "a background metrics write did not complete" in caplog.text  # it failed, and was written again
    mlc = tracker.mlflow
    for key, values in (("val_loss", [1.0 / s for s in range(1, 6)]), ("val_accuracy", [s / 10 for s in range(1, 6)])):
        history = sorted((m.step, m.value) for m in mlc.get_metric_history(run_id, key))
        assert history == list(zip(range(1, 6), values, strict=True))  # each step once
    tracker.end_run(run_id, "FINISHED")
    tracker.end_run(parent, "FINISHED")
    locker.close()


def test_a_background_flush_that_cannot_be_written_stops_at_the_next_flush_and_is_kept(tmp_path: Path) -> None:
    """A write MLflow refuses for good (here: to a deleted run) is not dropped silently: the next foreground
    flush raises, and the batch stays to be written."""
    tracker = tracking.Tracker(f"sqlite:///{tmp_path}/refused.db", "background", retry_s=2.0)
    tracker.start_search("bg", {}, {})
    run_id = tracker.start_trial("t0", "trial-000", {"n_hidden": 1}, {})
    tracker.log_metrics(run_id, {"val_loss": 0.5}, step=1)
    tracker.mlflow.delete_run(run_id)
    tracker.flush(background=True)
    with pytest.raises(TrackingError, match="MLflow did not accept metrics"):
        tracker.flush()
    (rid, batch, _), = tracker._inflight
    assert rid == run_id and [(m.key, m.step, m.value) for m in batch] == [("val_loss", 1, 0.5)]
