"""Transfer: digits 0-7 pretrain, 8-against-9 reuses the lower layers (as the notebooks do with
sandals and shirts). Real Keras fits on the bundled digits; weights compared array for array."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from search import train as T
from search.data import load_subset
from search.errors import ConfigError
from search.transfer import copy_layers, source_layers

BASE = {"n_hidden": 2, "n_neurons": 32, "optimizer": "adam", "learning_rate": 3e-3, "batch_size": 64}


@pytest.fixture(scope="module")
def source() -> dict[str, list[Any]]:
    """A model of digits 0-7, trained for 2 epochs."""
    first = load_subset("digits", classes="0,1,2,3,4,5,6,7")
    return source_layers(T.fit(BASE, first, epochs=2, seed=0).model)


@pytest.fixture(scope="module")
def pair() -> Any:
    return load_subset("digits", classes="8,9", train_limit=50)


def test_copied_weights_equal_the_source_at_epoch_zero(source: dict[str, list[Any]], pair: Any) -> None:
    from search.model import build_model

    model = build_model({**BASE, "reuse_layers": 2}, pair.input_shape, pair.n_classes, seed=1)
    assert copy_layers(model, source, 2) == ["dense_1", "dense_2"]
    for name in ("dense_1", "dense_2"):
        for got, want in zip(model.get_layer(name).get_weights(), source[name], strict=True):
            np.testing.assert_array_equal(got, want)
    assert model.get_layer("output").get_weights()[0].shape == (32, 1)  # a new head for two classes


def test_frozen_layers_do_not_change_while_frozen(source: dict[str, list[Any]], pair: Any) -> None:
    seen: list[tuple[np.ndarray, np.ndarray]] = []

    def report(row: dict[str, float], model: Any) -> None:
        seen.append((model.get_layer("dense_1").get_weights()[0].copy(), model.get_layer("dense_2").get_weights()[0].copy()))

    cfg = {**BASE, "reuse_layers": 1, "freeze_epochs": 2, "unfreeze_lr_factor": 0.5, "patience": 10}
    result = T.fit(cfg, pair, epochs=4, report=report, seed=2, source=source)
    assert [int(r["epoch"]) for r in result.history] == [1, 2, 3, 4]
    assert [r["final"] for r in result.history] == [0.0, 0.0, 0.0, 1.0]
    for dense_1, _ in seen[:2]:  # epochs 1 and 2: frozen, still the source's weights
        np.testing.assert_array_equal(dense_1, source["dense_1"][0])
    assert not np.array_equal(seen[2][0], source["dense_1"][0])  # unfrozen from epoch 3
    assert not np.array_equal(seen[0][1], source["dense_2"][0])  # dense_2 was not copied: it trained all along
    lr = [r["lr"] for r in result.history]
    assert lr[:2] == pytest.approx([3e-3, 3e-3]) and lr[2:] == pytest.approx([1.5e-3, 1.5e-3])


def test_widths_or_inputs_that_do_not_fit(source: dict[str, list[Any]], pair: Any, tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match=r"layer dense_1 does not fit: .* the widths must match"):
        T.fit({**BASE, "n_neurons": 48, "reuse_layers": 1}, pair, epochs=1, source=source)
    rows = ["a,b,c,label", *(f"{i % 3},{i % 5},{i % 7},{i % 2}" for i in range(40))]
    (tmp_path / "three.csv").write_text("\n".join(rows) + "\n")
    other = load_subset(str(tmp_path / "three.csv"))
    with pytest.raises(ConfigError, match=r"layer dense_1 does not fit: .* the inputs must match"):
        T.fit({**BASE, "reuse_layers": 1}, other, epochs=1, source=source)
    with pytest.raises(ConfigError, match="reuse_layers=3, but the source model has 2 hidden layers"):
        T.fit({**BASE, "n_hidden": 3, "reuse_layers": 3}, pair, epochs=1, source=source)


def test_no_source_or_no_reuse_is_an_ordinary_fit(pair: Any, source: dict[str, list[Any]]) -> None:
    plain = T.fit(BASE, pair, epochs=2, seed=4)
    with_source = T.fit({**BASE, "reuse_layers": 0}, pair, epochs=2, seed=4, source=source)
    for a, b in zip(plain.model.get_weights(), with_source.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # a real search and a retrain through the CLI, a real Ray and MLflow
def test_transfer_from_an_earlier_search_through_the_cli(search_store: dict[str, Any], local_ray: Any, tmp_path: Any) -> None:
    """The session's search (digits, one hidden layer of 32) is the source: a copy of its store gets a
    search on 8 against 9 that reuses that layer, then its retrain; all through the CLI, in this process."""
    import shutil

    from search import tracking

    shutil.copy(search_store["root"] / "mlflow.db", tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    where = ["--tracking-uri", uri, "--storage-path", str(tmp_path / "ray"), "-q"]
    base = "params:\n  n_hidden: 2\n  n_neurons: 32\n  optimizer: adam\n  batch_size: 64\n  epochs: 2\n"
    (tmp_path / "base.yaml").write_text(base)
    (tmp_path / "reuse.yaml").write_text(base + "  reuse_layers: 1\n  freeze_epochs: 1\n")

    source = tracking.SearchRecord.find(uri, "search", run_id=search_store["parent"])
    model_run = source.model_run_id()
    # In this process, on the module's local Ray (the CLI joins it): Ray's start and an interpreter's imports less.
    from click.testing import CliRunner

    from search.cli import cli

    launched = CliRunner().invoke(cli, [
        "launch", "--classes", "8,9", "--train-limit", "50", "--space", str(tmp_path / "reuse.yaml"),
        "--transfer-from", search_store["parent"], "--num-samples", "2", "--searcher", "random", "--scheduler", "fifo",
        "--name", "pair", *where], catch_exceptions=False)
    assert launched.exit_code == 0, launched.stderr[-3000:]
    record = tracking.SearchRecord.find(uri, "search", name="pair")
    trials = record.children("trial")
    role = tracking.get_run(uri, model_run).data.tags["search.role"]
    source_uri = f"runs:/{model_run}/model" + ("/model.keras" if role == "trial" else "")  # a trial keeps the .keras file
    assert len(trials) == 2 and {t.data.tags.get("search.transfer_from") for t in trials} == {source_uri}
    assert record.params["transfer_from"] == search_store["parent"]
    # Retrain and the refused launch run in this process too (real MLflow; the launch is refused before Ray).
    retrained = CliRunner().invoke(cli, ["retrain", "--name", "pair", "--seeds", "1", "--tracking-uri", uri, "-q"])
    assert retrained.exit_code == 0, retrained.output
    (seed_run,) = record.children("retrain")
    assert seed_run.data.tags["search.transfer_from"] == source_uri and seed_run.info.status == "FINISHED"
    # Column 0 of the pair's model is digit 8, column 1 digit 9: said in the logged model's MLmodel file.
    import mlflow

    mlflow.set_tracking_uri(uri)
    assert mlflow.models.get_model_info(f"runs:/{seed_run.info.run_id}/model").metadata == {"classes": ["8", "9"]}
    refused = CliRunner().invoke(cli, ["launch", "--space", str(tmp_path / "base.yaml"), "--transfer-from",
                                       search_store["parent"], "--name", "none", *where])
    assert refused.exit_code == 2 and "never sets reuse_layers above 0" in refused.stderr
