"""search.plots: the search's plots (valid PNGs that draw the right numbers) and the markdown of
the parent run's description. The numbers are computed here independently and compared with
what each plot drew (``plots.plot_data`` reads them back from the PNG)."""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from search import plots
from search.tracking import description

# Eight trials of a made-up search, in start order. Trial 6 failed (no metric); momentum only
# applies to nesterov; trial 8 leaves batch_norm unset (its default is "none").
TRIALS: list[dict[str, Any]] = [
    {"activation": "selu", "initializer": "lecun_normal", "batch_norm": "none", "optimizer": "nadam", "learning_rate": 1e-3, "n_hidden": 2, "batch_size": 32},
    {"activation": "relu", "initializer": "he_normal", "batch_norm": "before", "optimizer": "nesterov", "momentum": 0.9, "learning_rate": 1e-2, "n_hidden": 1, "batch_size": 32},
    {"activation": "relu", "initializer": "he_normal", "batch_norm": "after", "optimizer": "adam", "learning_rate": 3e-4, "n_hidden": 3, "batch_size": 32},
    {"activation": "selu", "initializer": "lecun_normal", "batch_norm": "before", "optimizer": "nadam", "learning_rate": 2e-3, "n_hidden": 2, "batch_size": 32},
    {"activation": "elu", "initializer": "he_normal", "batch_norm": "after", "optimizer": "nesterov", "momentum": 0.95, "learning_rate": 5e-3, "n_hidden": 1, "batch_size": 32},
    {"activation": "relu", "initializer": "he_normal", "batch_norm": "none", "optimizer": "adam", "learning_rate": 1e-4, "n_hidden": 3, "batch_size": 32},
    {"activation": "selu", "initializer": "lecun_normal", "batch_norm": "after", "optimizer": "adam", "learning_rate": 1e-3, "n_hidden": 2, "batch_size": 32},
    {"activation": "elu", "initializer": "he_normal", "optimizer": "nadam", "learning_rate": 7e-4, "n_hidden": 2, "batch_size": 32},
]
VALUES: list[float | None] = [0.91, 0.87, 0.93, 0.95, 0.80, None, 0.89, 0.90]
DEFAULTS = {"batch_norm": "none"}


def check_png(path: Path) -> None:
    """A whole, decodable PNG with a picture in it."""
    from PIL import Image

    raw = path.read_bytes()
    assert raw.startswith(plots.PNG_MAGIC)
    plots.png_text(path)  # walks every chunk, checks each CRC and the IEND
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
        assert width > 300 and height > 200
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 20, "the image is (nearly) blank"


def independent_group_means(keys: tuple[str, ...]) -> dict[str, tuple[float | None, int, int]]:
    groups: dict[str, list[float | None]] = {}
    for config, value in zip(TRIALS, VALUES, strict=True):
        label = "/".join(str(config.get(k, DEFAULTS.get(k))) for k in keys)
        groups.setdefault(label, []).append(value)
    out = {}
    for label, vals in groups.items():
        ok = [v for v in vals if v is not None]
        out[label] = (sum(ok) / len(ok) if ok else None, len(ok), len(vals) - len(ok))
    return out


# =========================================================================== the plots


def test_group_plot_draws_the_group_means_best_first(tmp_path: Path) -> None:
    path = plots.plot_groups(TRIALS, VALUES, tmp_path / "groups.png", metric="val_accuracy", defaults=DEFAULTS)
    assert path == tmp_path / "groups.png"
    check_png(path)
    data = plots.plot_data(path)
    assert [p["title"] for p in data["panels"]] == ["activation / initializer", "batch norm", "optimizer"]
    for panel, keys in zip(data["panels"], [("activation", "initializer"), ("batch_norm",), ("optimizer",)], strict=True):
        expected = independent_group_means(keys)
        assert sorted(panel["labels"]) == sorted(expected)
        for label, mean, count, failed, dots in zip(panel["labels"], panel["means"], panel["counts"], panel["failed"],
                                                    panel["values"], strict=True):
            want_mean, want_count, want_failed = expected[label]
            assert mean == pytest.approx(want_mean), (panel["title"], label)  # the drawn bar's length
            assert (count, failed) == (want_count, want_failed)
            assert statistics.fmean(dots) == pytest.approx(want_mean)  # the drawn dots are the trials
        drawn = [m for m in panel["means"] if m is not None]
        assert drawn == sorted(drawn, reverse=True), "best group first"
    by_pair = dict(zip(data["panels"][0]["labels"], data["panels"][0]["means"], strict=True))
    assert by_pair["selu/lecun_normal"] == pytest.approx((0.91 + 0.95 + 0.89) / 3)
    assert by_pair["relu/he_normal"] == pytest.approx((0.87 + 0.93) / 2)  # the failed trial is not in the mean
    by_bn = dict(zip(data["panels"][1]["labels"], data["panels"][1]["failed"], strict=True))
    assert by_bn == {"none": 1, "before": 0, "after": 0}
    assert data["panels"][1]["counts"][data["panels"][1]["labels"].index("none")] == 2  # trial 8 reads the default


def test_group_stats_for_a_loss_sort_lowest_first() -> None:
    stats = plots.group_stats(TRIALS, VALUES, ("optimizer",), mode="min")
    assert [g.label for g in stats] == ["nesterov", "adam", "nadam"]  # means 0.835, 0.91, 0.92
    assert stats[0].mean == pytest.approx((0.87 + 0.80) / 2)
    assert stats[1].to_dict()["n"] == 2 and stats[1].failed == 1


def test_best_so_far_in_start_order(tmp_path: Path) -> None:
    path = plots.plot_best_so_far(VALUES, tmp_path / "best.png", metric="val_accuracy",
                                  labels=[f"trial-{i:03d}" for i in range(1, 9)])
    check_png(path)
    data = plots.plot_data(path)
    best, expected = -math.inf, []
    for v in VALUES:
        best = max(best, v) if v is not None else best
        expected.append(best)
    assert data["best_so_far"] == pytest.approx(expected)
    assert data["line"] == pytest.approx(expected)  # the step line as drawn
    assert data["x"] == list(range(1, 9))
    assert plots.running_best([None, 0.5, 0.3, None, 0.2], "min") == [None, 0.5, 0.3, 0.3, 0.2]
    assert plots.running_best([None, float("nan")]) == [None, None]


def test_parallel_coordinates_axes_and_positions(tmp_path: Path) -> None:
    path = plots.plot_parallel_coordinates(TRIALS, VALUES, tmp_path / "pc.png", metric="val_accuracy")
    check_png(path)
    data = plots.plot_data(path)
    axes = {a["key"]: a for a in data["axes"]}
    # batch_size is the same in every trial: no axis; the metric is the last axis.
    assert [a["key"] for a in data["axes"]] == ["activation", "initializer", "batch_norm", "optimizer", "learning_rate",
                                                "n_hidden", "momentum", "val_accuracy"]
    assert axes["activation"]["kind"] == "categorical" and axes["activation"]["labels"] == ["elu", "relu", "selu"]
    assert [t[1] for t in axes["activation"]["ticks"]] == ["elu", "relu", "selu"]
    assert axes["batch_norm"]["has_na"] and axes["batch_norm"]["ticks"][-1][1] == "n/a"
    assert axes["learning_rate"]["kind"] == "numeric" and axes["learning_rate"]["log"]
    assert axes["n_hidden"]["kind"] == "numeric" and not axes["n_hidden"]["log"]
    assert axes["momentum"]["has_na"]
    positions = data["positions"]
    col = {a["key"]: i for i, a in enumerate(data["axes"])}
    for row, config, value in zip(positions, TRIALS, VALUES, strict=True):
        assert row[col["activation"]] == pytest.approx(["elu", "relu", "selu"].index(config["activation"]) / 2)
        lr = (math.log10(config["learning_rate"]) + 4) / (math.log10(1e-2) + 4)
        assert row[col["learning_rate"]] == pytest.approx(lr)
        assert row[col["n_hidden"]] == pytest.approx((config["n_hidden"] - 1) / 2)
        if "momentum" in config:
            assert row[col["momentum"]] == pytest.approx((config["momentum"] - 0.9) / 0.05)
        else:
            assert row[col["momentum"]] == plots.NA_POSITION
        if value is None:
            assert row[col["val_accuracy"]] == plots.NA_POSITION
        else:
            assert row[col["val_accuracy"]] == pytest.approx((value - 0.80) / (0.95 - 0.80))


def test_a_single_trial_still_plots(tmp_path: Path) -> None:
    trials = [{"name": "trial-001 relu", "config": TRIALS[0], "value": 0.5}]
    paths = plots.search_plots(trials, tmp_path, metric="val_loss", mode="min", defaults=DEFAULTS)
    assert [p.name for p in paths] == ["parallel_coordinates.png", "best_so_far.png", "by_group.png"]
    for path in paths:
        check_png(path)
    axes = plots.plot_data(paths[0])["axes"]
    assert [a["key"] for a in axes] == [*TRIALS[0], "val_loss"]  # one trial: every key gets an axis


def test_all_trials_failed_still_plots(tmp_path: Path) -> None:
    paths = plots.search_plots([{"config": c, "value": None} for c in TRIALS[:3]], tmp_path)
    for path in paths:
        check_png(path)
    assert plots.plot_data(paths[1])["best_so_far"] == [None, None, None]


def test_bad_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="one value per config is needed, but got 2 configs and 1 values"):
        plots.plot_groups(TRIALS[:2], VALUES[:1], tmp_path / "x.png")
    with pytest.raises(ValueError, match="mode must be 'max' or 'min', but got 'best'"):
        plots.plot_best_so_far(VALUES, tmp_path / "x.png", mode="best")


def test_png_reader_rejects_broken_files(tmp_path: Path) -> None:
    path = plots.plot_best_so_far(VALUES, tmp_path / "ok.png")
    raw = path.read_bytes()
    (tmp_path / "cut.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="truncated"):
        plots.png_text(tmp_path / "cut.png")
    (tmp_path / "text.png").write_text("not a png")
    with pytest.raises(ValueError, match="not a PNG"):
        plots.png_text(tmp_path / "text.png")


def test_importing_plots_does_not_import_matplotlib() -> None:
    code = "import sys, search.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# =========================================================================== the description


def test_set_section_replaces_or_inserts_in_order() -> None:
    head = "**Search** over space **quick**.\n\n| setting | value |\n|---|---|\n| searcher | `tpe` |\n"
    note = description.set_section(head, "Evaluate", "eval v1")
    note = description.set_section(note, "Best trial", "best v1")
    note = description.set_section(note, "Retrain", "retrain v1")
    assert note.index("### Best trial") < note.index("### Retrain") < note.index("### Evaluate")
    assert note.startswith(head)
    again = description.set_section(note, "Retrain", "retrain v2\n\nwith two paragraphs")
    assert "retrain v1" not in again and "retrain v2\n\nwith two paragraphs" in again
    assert again.count("### ") == 3 and "eval v1" in again and "best v1" in again
    assert description.set_section(again, "Retrain", "retrain v2\n\nwith two paragraphs") == again  # idempotent
    assert description.set_section("", "Retrain", "x") == "### Retrain\n\nx\n"


def test_best_section_links_the_best_trial_and_the_plots() -> None:
    trials = [{"name": f"trial-{i:03d} x", "run_id": f"run{i}", "config": c, "value": v,
               "state": "failed" if v is None else "finished", "best_epoch": 3}
              for i, (c, v) in enumerate(zip(TRIALS, VALUES, strict=True), start=1)]
    text = description.best_section(experiment_id="7", parent_run_id="parent", trials=trials, metric="val_accuracy",
                              mode="max", wall_time_s=42.0, plots=["plots/best_so_far.png"], defaults=DEFAULTS)
    assert "[trial-004 x](#/experiments/7/runs/run4): **val_accuracy 0.9500** at epoch 3" in text
    assert "8 trials (1 failed, 0 stopped early) in 42 s" in text
    assert "| `activation` | selu |" in text and "| `batch_size` |" not in text  # only what the trials differed in
    assert "- activation / initializer: **selu/lecun_normal 0.9167 (n=3)**" in text
    assert "[best so far](#/experiments/7/runs/parent/artifacts/plots/best_so_far.png)" in text


def test_retrain_and_evaluate_sections() -> None:
    entry = {"label": "best", "trial_name": "trial-004 selu", "trial_run_id": "t4", "score_mean": 0.96,
             "score_std": 0.004, "loss_mean": 0.12, "loss_std": 0.01, "epochs": 9,
             "seeds": [{"seed": 0, "run_id": "s0"}, {"seed": 1, "run_id": "s1"}]}
    text = description.retrain_section(experiment_id="1", entries=[entry], verdict="A clear lead.", model_uri="runs:/s1/model")
    assert "with 2 seeds" in text and "**0.9600 ± 0.0040**" in text and "| test accuracy |" in text
    regression = description.retrain_section(experiment_id="1", entries=[{**entry, "score": "rmse"}], verdict="",
                                             model_uri="runs:/s1/model", ensemble={"run_id": "e", "members": 2,
                                             "test_rmse": 51.25, "test_loss": 0.4, "model_uri": "runs:/e/model"})
    assert "| test rmse |" in regression and "**51.2500**" in regression
    # Which seed is the model: the best on the calibration slice; with no slice (as here), seed 0.
    assert "(seed 0: with no calibration slice, no unseen data was left to pick a seed on)" in regression
    sliced = description.retrain_section(experiment_id="1", entries=[{**entry, "score": "rmse", "held_out": 0.1}],
                                         verdict="", model_uri="runs:/s1/model")
    assert "less a 10% calibration slice" in sliced
    assert "(the seed with the best rmse on the calibration slice; the test split picked nothing)" in sliced
    assert "[seed 1](#/experiments/1/runs/s1)" in text and "[trial-004](#/experiments/1/runs/t4)" in text
    assert "A clear lead." in text and "`runs:/s1/model`" in text
    metrics = {"mc": {"accuracy": 0.97, "nll": 0.1, "ece": 0.02, "brier": 0.05},
               "deterministic": {"accuracy": 0.96, "nll": 0.15, "ece": 0.04, "brier": 0.06}}
    text = description.evaluate_section(experiment_id="1", run_id="e1", model_uri="runs:/s1/model", dataset="digits",
                                  samples=100, metrics=metrics, artifacts=["reliability.png", "metrics.json"])
    assert "| MC dropout (T=100) | 0.9700 | 0.1000 | 0.0200 | 0.0500 |" in text
    assert "| deterministic | 0.9600 | 0.1500 | 0.0400 | 0.0600 |" in text
    assert "[evaluate run](#/experiments/1/runs/e1)" in text
    assert "[reliability](#/experiments/1/runs/e1/artifacts/reliability.png)" in text and "metrics.json" not in text


@pytest.mark.slow  # imports Ray and MLflow
def test_finish_search_logs_the_plots_and_the_best_trial_section(tmp_path: Path) -> None:
    """The report at the end of a search, on a real MLflow store (no Ray run needed)."""
    from search import tracking
    from search.tune.results import SearchResult, TrialSummary
    from search.tune.summary import log_report

    uri = tracking.resolve_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    tracker = tracking.Tracker(uri, "search")
    parent = tracker.start_search("s", {"metric": "val_accuracy"}, {tracking.NOTE: "**Search** over space quick.\n"})
    result = SearchResult(name="s", experiment="search", tracking_uri=uri, parent_run_id=parent, metric="val_accuracy",
                          mode="max", wall_time_s=12.0)
    for i, (config, value) in enumerate(zip(TRIALS, VALUES, strict=True), start=1):
        run_id = tracker.start_trial(f"id{i}", f"trial-{i:03d}", config, {})
        result.trials.append(TrialSummary(f"id{i}", run_id, f"trial-{i:03d}", "failed" if value is None else "finished",
                                          config, value, 2, 2))
    result.trials.reverse()  # the plots follow the runs' start times, not this list's order
    log_report(tracker, result)
    mlc = tracking.client(uri)
    names = sorted(a.path for a in mlc.list_artifacts(parent, "plots"))
    assert names == ["plots/best_so_far.png", "plots/by_group.png", "plots/parallel_coordinates.png"]
    local = Path(mlc.download_artifacts(parent, "plots", str(tmp_path)))
    for png in local.iterdir():
        check_png(png)
    best = plots.plot_data(local / "best_so_far.png")
    assert best["values"] == VALUES
    note = mlc.get_run(parent).data.tags[tracking.NOTE]
    assert note.startswith("**Search** over space quick.")
    exp_id = mlc.get_run(parent).info.experiment_id
    assert f"[trial-004](#/experiments/{exp_id}/runs/{result.trials[4].run_id})" in note
