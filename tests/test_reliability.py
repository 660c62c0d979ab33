"""What docs/reliability.md promises, tested with real processes, a real Ray and a real MLflow store.

- Bad input: one ``error:`` line, exit 2, no traceback, and the store exactly as it was; in
  seconds, also for a Ray address where nothing listens (Ray alone retries it for minutes).
- Lifecycle: a search that fails after its parent run exists leaves it FAILED with the reason; a
  search whose every trial failed exits non-zero with the first failure's reason.
- Signals: SIGTERM mid-trial stops the search like Ctrl-C (exit 143, the resume command), and
  SIGTERM or SIGKILL then ``search launch --name N --resume`` alone gives exactly one run per trial.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import pick_free_port

from search import tracking

_SCRIPT = Path(sys.executable).with_name("search")
SEARCH = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "search.cli"]
_SCRUB = ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "SEARCH_DATA_DIR", "SEARCH_STORAGE_PATH")

pytestmark = pytest.mark.slow


def env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k not in _SCRUB}, "PYTHONUNBUFFERED": "1"}


def run_search(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SEARCH, *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def run_search_alone(*args: str, cwd: Path, timeout: float = 300) -> tuple[subprocess.CompletedProcess[str], int]:
    """``run_search`` in a process group of its own, which the local Ray it starts joins; also returns the group."""
    with subprocess.Popen([*SEARCH, *args], cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, start_new_session=True) as proc:
        out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), proc.pid


def dump(uri: str) -> list[tuple[Any, ...]]:
    """Every run of the store: id, status, tags, params and metrics, to compare before and after."""
    mlc = tracking.client(uri)
    rows = []
    for exp in mlc.search_experiments():
        for run in mlc.search_runs([exp.experiment_id], max_results=10000):
            rows.append((run.info.run_id, run.info.status, json.dumps(run.data.tags, sort_keys=True),
                         json.dumps(run.data.params, sort_keys=True), json.dumps(run.data.metrics, sort_keys=True)))
    return sorted(rows)


# =========================================================================== bad input


def _csv(path: Path, rows: list[str]) -> str:
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def _busy_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


# (name, arguments after `search`, a fragment of the error line); {uri} {root} {tmp} are filled in.
BAD_INPUT: list[tuple[str, list[str], str]] = [
    ("negative seed", ["launch", "--seed", "-1"], "--seed"),
    ("seed past 32 bits", ["launch", "--seed", "4294967296"], "--seed"),
    ("negative seed for a trial", ["trial", "--seed", "-1"], "'--seed': -1 is not in the range"),
    ("negative seed for evaluate", ["evaluate", "--seed", "-1"], "'--seed': -1 is not in the range"),
    ("a key set twice", ["trial", "--set", "n_hidden=2", "--set", "n_hidden=3"], "--set n_hidden is given twice"),
    ("negative max-failures", ["launch", "--max-failures", "-1"], "--max-failures"),
    ("pbt with tpe", ["launch", "--scheduler", "pbt"], "--scheduler pbt runs only with --searcher random"),
    ("bad mode", ["launch", "--mode", "sideways"], "--mode"),
    ("maximizing a loss", ["launch", "--metric", "val_loss", "--mode", "max"],
     "--mode max with --metric val_loss would rank the worst trials first"),
    ("minimizing the default accuracy", ["launch", "--mode", "min"], "give --mode max, or drop --mode"),
    ("empty experiment", ["runs", "--experiment", " "], "must be a non-empty experiment name"),
    ("empty experiment for a search", ["launch", "--experiment", ""], "must be a non-empty experiment name"),
    # search pipeline checks its retrain and evaluate options before its search: nothing is searched
    ("pipeline with no seeds", ["pipeline", "--seeds", "0"], "--seeds must be at least 1, got 0"),
    ("pipeline with no MC samples", ["pipeline", "--mc-samples", "0"], "--mc-samples must be at least 1, got 0"),
    ("pipeline with no epochs", ["pipeline", "--epochs", "0"], "--epochs must be at least 1, got 0"),
    ("pipeline with a bad model name, no store yet", ["pipeline", "--register", "a/b", "--tracking-uri",
                                                      "sqlite:///{tmp}/missing.db"], "--register 'a/b'"),
    ("a label column for a built-in dataset", ["launch", "--target", "species"],
     "--target 'species' names the label column of a CSV file, but digits is not one"),
    ("missing model file", ["evaluate", "--model-uri", "{tmp}/none.keras"], "no model at"),
    ("an option a nested command lacks", ["spaces", "show", "quick", "--tracking-uri", "{uri}"],
     "No such option '--tracking-uri'. (see `search spaces show --help`)"),
    ("an option the group lacks", ["--bogus", "runs"], "(see `search --help`)"),
    ("name with a path", ["launch", "--name", "../escape"], "--name must be"),
    ("name that exists", ["launch", "--name", "pipe", "--num-samples", "1"], "a search named pipe already exists"),
    ("resume a finished search", ["launch", "--name", "pipe", "--resume"], "already finished"),
    ("resume an unknown search", ["launch", "--name", "nosuch", "--resume"], "no search named nosuch"),
    ("sqlite store that is a folder", ["runs", "--tracking-uri", "sqlite:///{tmp}"], "is a folder"),
    ("folder store", ["runs", "--tracking-uri", "file://{tmp}"], "MLflow 3 does not accept"),
    ("missing store", ["runs", "--tracking-uri", "sqlite:///{tmp}/missing.db"], "no tracking store at"),
    ("unwritable storage path", ["launch", "--storage-path", "{tmp}/file.txt/ray"], "--storage-path"),
    ("bad model name", ["retrain", "--register", "a/b"], "--register 'a/b'"),
    ("regression labels as classes", ["launch", "--dataset", "{tmp}/floats.csv", "--task", "classification"],
     "use --task regression"),
    ("class names as a regression target", ["launch", "--dataset", "{tmp}/names.csv", "--task", "regression"],
     "a regression target must be numeric"),
    ("a classification metric on a regression task", ["launch", "--dataset", "{tmp}/floats.csv", "--metric",
                                                       "val_accuracy"], "--metric val_accuracy is not reported by a regression task"),
    ("a regression task on a classification dataset", ["launch", "--task", "regression"],
     "digits is a classification dataset"),
    ("npz that is not a zip", ["launch", "--dataset", "{tmp}/bad.npz"], "not an .npz archive"),
    ("data the model cannot read", ["evaluate", "--dataset", "{tmp}/three.csv"], "reads inputs of shape"),
    ("image shifts on flat features", ["launch", "--dataset", "{tmp}/three.csv", "--space", "{tmp}/shifts.yaml"],
     "flat features (shape (3,)), not images; set augment_shift: auto or 0"),
    ("busy port", ["ui", "--port", "{port}"], "cannot serve on 127.0.0.1:"),
    ("dead Ray address", ["launch", "--address", "127.0.0.1:{free}", "--num-samples", "1"], "nothing answers at"),
]


@pytest.fixture(scope="module")
def bad_input_folder(search_store: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("bad")
    (tmp / "file.txt").write_text("not a folder")
    _csv(tmp / "floats.csv", ["x,label", *(f"{i},{i * 0.37:.3f}" for i in range(40))])
    _csv(tmp / "names.csv", ["x,label", *(f"{i},{'cat' if i % 2 else 'dog'}" for i in range(40))])
    (tmp / "bad.npz").write_text("not a zip archive")
    _csv(tmp / "three.csv", ["a,b,c,label", *(f"{i},{i % 3},{i % 5},{i % 2}" for i in range(40))])
    (tmp / "shifts.yaml").write_text("params:\n  n_hidden: 1\n  augment_shift: {choice: [auto, 0.0, 0.125]}\n  epochs: 1\n")
    return tmp


# Rows run in this process (the real CLI through click's runner: an interpreter's imports less per row),
# except those that would touch this process's Ray.
OWN_PROCESS = {"dead Ray address"}


@pytest.mark.parametrize(("name", "args", "fragment"), BAD_INPUT, ids=[row[0] for row in BAD_INPUT])
def test_bad_input_is_one_line_and_loses_nothing(search_store: dict[str, Any], bad_input_folder: Path, name: str,
                                                  args: list[str], fragment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from search.cli import cli

    uri, tmp = search_store["uri"], bad_input_folder
    listener, port = _busy_port()
    try:
        filled = [a.format(uri=uri, root=search_store["root"], tmp=tmp, port=port, free=pick_free_port()) for a in args]
        if "--tracking-uri" not in filled:
            filled += ["--tracking-uri", uri]
        if filled[0] == "launch" and "--storage-path" not in filled:
            filled += ["--storage-path", str(search_store["root"] / "ray")]
        before = dump(uri)
        if name in OWN_PROCESS:
            proc = run_search(*filled, cwd=tmp)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        else:
            monkeypatch.chdir(tmp)
            for key in _SCRUB:
                monkeypatch.delenv(key, raising=False)
            result = CliRunner().invoke(cli, filled, catch_exceptions=False)  # a traceback fails the test
            code, out, err = result.exit_code, result.stdout, result.stderr
    finally:
        listener.close()
    lines = err.strip().splitlines()
    assert code == 2, (code, err[-3000:])
    assert "Traceback" not in err, err
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0], err
    assert out == ""
    assert dump(uri) == before
    assert not (tmp / "missing.db").exists()


# =========================================================================== lifecycle


def _trial_runs(uri: str, parent: str) -> list[Any]:
    mlc = tracking.client(uri)
    exp = mlc.get_run(parent).info.experiment_id
    return list(mlc.search_runs([exp], filter_string=f"tags.`{tracking.PARENT}` = '{parent}'", max_results=1000))


def test_a_failure_after_the_parent_exists_ends_it_failed(local_ray: Any, tmp_path: Path) -> None:
    """PBT on a space that samples nothing PBT mutates fails when the scheduler is built: parent FAILED."""
    from search.errors import SearchError
    from search.tune import LaunchOptions
    from search.tune.launch import launch

    space = tmp_path / "fixed.yaml"
    space.write_text("params:\n  n_hidden: 1\n  n_neurons: {choice: [16, 32]}\n  epochs: 2\n")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    opts = LaunchOptions.from_flat(space=str(space), num_samples=2, searcher="random", scheduler="pbt", name="pbt",
                                   tracking_uri=uri, storage_path=str(tmp_path / "ray"), quiet=True)
    with pytest.raises(SearchError, match="pbt mutates learning_rate, dropout, batch_size"):
        launch(opts)
    (parent,) = tracking.list_searches(uri, "search")
    assert parent.info.status == "FAILED"
    assert "pbt mutates" in parent.data.tags[tracking.FAIL_REASON]


def test_every_trial_failing_exits_non_zero_with_the_first_reason(tmp_path: Path) -> None:
    space = tmp_path / "diverge.yaml"
    # selu's linear side carries the overflow to the output (relu could die, tanh saturate): NaN in epoch 1
    space.write_text("params:\n  n_hidden: 1\n  n_neurons: {choice: [16, 24]}\n  optimizer: sgd\n  epochs: 2\n"
                     "  learning_rate: 1.0e+30\n  batch_size: 64\n  activation+initializer: [selu, lecun_normal]\n")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc, group = run_search_alone("launch", "--space", str(space), "--num-samples", "2", "--searcher", "random",
                                   "--scheduler", "fifo", "--tracking-uri", uri, "--storage-path", str(tmp_path / "ray"),
                                   "--name", "nan", "-q", cwd=tmp_path, timeout=400)
    assert proc.returncode == 1, proc.stderr[-3000:]
    _wait_until_gone(group, 15)  # the local Ray it started was stopped before it exited
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: every trial of search nan failed (2 trials); the first: loss became NaN")
    (parent,) = tracking.list_searches(uri, "search")
    assert parent.info.status == "FAILED" and "loss became NaN" in parent.data.tags[tracking.FAIL_REASON]
    assert {r.info.status for r in _trial_runs(uri, parent.info.run_id)} == {"FAILED"}


# =========================================================================== signals


def _wait_for(predicate: Callable[[], bool], proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the search exited ({proc.returncode}) before {what}:\n{proc.communicate()[1][-3000:]}")
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 (the store may be mid-migration)
            pass
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_signal_mid_trial_then_resume_gives_one_run_per_trial(tmp_path: Path, sig: signal.Signals) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    where = ["--tracking-uri", uri, "--storage-path", str(tmp_path / "ray"), "--name", "sig"]
    # quick's nets with no early stopping and 100 epochs: each trial runs for seconds however fast the machine,
    # so the signal lands inside the second trial (with 4 epochs, a fast machine finished the search first).
    space = tmp_path / "long.yaml"
    text = (Path(__file__).parents[1] / "spaces" / "quick.yaml").read_text()
    space.write_text(text.replace("epochs: 8", "epochs: 100").replace("patience: 3", "patience: 1000"))
    first = [*SEARCH, "launch", "--space", str(space), "--num-samples", "3", "--searcher", "random",
             "--scheduler", "fifo", "--concurrency", "1", *where, "-q"]
    scratch_before = _our_scratch()
    proc = subprocess.Popen(first, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        def mid_second_trial() -> bool:
            parents = tracking.list_searches(uri, "search")
            runs = _trial_runs(uri, parents[0].info.run_id) if parents else []
            return sum(r.info.status == "FINISHED" for r in runs) >= 1 and any(r.info.status == "RUNNING" for r in runs)

        _wait_for(mid_second_trial, proc, 300, "a trial finished and another ran")
        time.sleep(1)  # into the running trial's epochs
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if sig == signal.SIGTERM:
        assert proc.returncode == 143, err[-3000:]
        assert "search launch --name sig --resume" in err and "Traceback" not in err
        (parent,) = tracking.list_searches(uri, "search")
        assert parent.info.status == "KILLED"
        assert all(r.info.status != "RUNNING" for r in _trial_runs(uri, parent.info.run_id))
        # Resume with flags that contradict the record: refused in one line, the search untouched.
        before = dump(uri)
        from click.testing import CliRunner

        from search.cli import cli

        for flags, said in ((["--space", "default"], f"--space default (the search has {space})"),
                            (["--num-samples", "9"], "--num-samples 9 (the search has 3)")):
            # In this process: refused before Ray starts, so an interpreter's imports are spared.
            refused = CliRunner().invoke(cli, ["launch", *where, "--resume", *flags, "-q"], catch_exceptions=False)
            assert refused.exit_code == 2, refused.stderr[-2000:]
            (line,) = [ln for ln in refused.stderr.splitlines() if ln.startswith("error: ")]
            assert said in line and "a resumed search keeps its settings" in line.lower()
        assert dump(uri) == before
    elif sig == signal.SIGINT:  # Ctrl-C: Ray Tune's own handler stops it; resuming is as after SIGTERM (above)
        assert proc.returncode == 130, err[-3000:]
        assert "search launch --name sig --resume" in err and "Traceback" not in err
        (parent,) = tracking.list_searches(uri, "search")
        runs = _trial_runs(uri, parent.info.run_id)
        assert parent.info.status == "KILLED" and all(r.info.status != "RUNNING" for r in runs)
        assert sum(r.info.status == "FINISHED" for r in runs) >= 1
        # `search runs` counts an interrupted search's trials and its best so far (no summary was written)
        listed = json.loads(run_search("runs", "--tracking-uri", uri, "--json", cwd=tmp_path).stdout)
        key = tracking.tags.best_metric("val_accuracy")
        scores = [r.data.metrics[key] for r in runs if key in r.data.metrics]
        assert listed[0]["trials"] == len(runs) and listed[0]["best"] == max(scores), (listed, scores)
        best = json.loads(run_search("best", "--tracking-uri", uri, "--json", cwd=tmp_path).stdout)
        assert best["search_status"] == "KILLED" and best["value"] == max(scores), best
        assert _our_scratch() <= scratch_before
        _wait_until_gone(proc.pid, 60)
        return
    else:
        assert proc.returncode == -signal.SIGKILL
    killed_at = time.monotonic()
    time.sleep(3)
    resumed, group = run_search_alone("launch", *where, "--resume", "-q", "--json", cwd=tmp_path, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _wait_until_gone(group, 15)  # a finished search leaves no Ray process behind
    (parent,) = tracking.list_searches(uri, "search")
    runs = _trial_runs(uri, parent.info.run_id)
    ids = [r.data.tags[tracking.TRIAL_ID] for r in runs]
    assert len(ids) == 3 and len(set(ids)) == 3, ids
    assert all(r.info.status == "FINISHED" for r in runs), [r.info.status for r in runs]
    assert parent.info.status == "FINISHED"
    assert parent.data.params["space"] == str(space)  # the recorded settings, not the CLI's defaults
    assert json.loads(resumed.stdout)["best"]["run_id"] in {r.info.run_id for r in runs}
    assert _our_scratch() <= scratch_before  # no temporary folder of ours left behind
    # No orphan: Ray's processes end with the driver that started them (after SIGKILL its dashboard and
    # runtime-env agents notice the raylet is gone about a minute later: 150 s from the signal).
    _wait_until_gone(proc.pid, max(1.0, 150 - (time.monotonic() - killed_at)))


def _our_scratch() -> set[str]:
    """Every temporary folder of ours: in the scratch of each process (``search.scratch``), and any
    made straight in the system's temporary folder under one of our names."""
    import glob
    import tempfile

    from search import scratch

    loose = {p for pattern in ("search-*", "kt-searcher-*") for p in glob.glob(os.path.join(tempfile.gettempdir(), pattern))}
    return (loose - {str(scratch.root())}) | set(glob.glob(str(scratch.root() / "*" / "*")))


def _wait_until_gone(pgid: int, timeout: float) -> None:
    """Wait until no process of the driver's process group is left (a zombie-free group is gone)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(1)
    alive = subprocess.run(["ps", "-o", "pid,stat,cmd", "-g", str(pgid)], capture_output=True, text=True).stdout
    pytest.fail(f"processes of the killed search are still running after {timeout:.0f} s:\n{alive}")


# =========================================================================== the data's identity


def test_a_dataset_and_its_subset_are_found_from_anywhere_and_an_edit_is_refused(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A CSV given by a relative path is recorded by its absolute path and a digest of its contents, and
    --classes and --train-limit with it: retrain and evaluate follow the record from another directory,
    and refuse the file once it was edited. (The search runs as a process in the CSV's folder; retrain
    and evaluate run in this one, moved to the other folder, to spare two interpreters' imports.)"""
    from click.testing import CliRunner

    from search.cli import cli

    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    rows = ["f0,f1,f2,label", *(f"{i % 7},{(i * 3) % 5},{i % 2},{'abc'[i % 3]}" for i in range(150))]
    _csv(here / "data.csv", rows)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    launched = run_search("launch", "--dataset", "data.csv", "--classes", "c,a", "--train-limit", "30", "--space",
                          "quick", "--num-samples", "1", "--max-epochs", "1", "--searcher", "random", "--scheduler",
                          "fifo", "--tracking-uri", uri, "--storage-path", str(tmp_path / "ray"), "--name", "csv", "-q",
                          cwd=here, timeout=400)
    assert launched.returncode == 0, launched.stderr[-3000:]
    (parent,) = tracking.list_searches(uri, "search")
    assert parent.data.params["dataset_source"] == str(here / "data.csv")
    assert parent.data.params["classes"] == "c,a" and parent.data.params["train_limit"] == "30"
    assert parent.data.tags["search.dataset"] == "data[c,a][train 30]"
    monkeypatch.chdir(elsewhere)
    runner = CliRunner()
    retrained = runner.invoke(cli, ["retrain", "--tracking-uri", uri, "--seeds", "1", "-q"])
    assert retrained.exit_code == 0, retrained.output
    evaluated = runner.invoke(cli, ["evaluate", "--tracking-uri", uri, "--mc-samples", "5", "-q", "--json"])
    assert evaluated.exit_code == 0, evaluated.output
    from search.data import load_subset

    n_test = len(load_subset(str(here / "data.csv"), classes="c,a").test)
    mlc = tracking.client(uri)
    local = mlc.download_artifacts(json.loads(evaluated.stdout)["run_id"], "predictions.npz", str(tmp_path))
    import numpy as np

    with np.load(local) as f:
        assert f["labels"].shape == (n_test,) and f["probs_mean"].shape[1] == 2
    _csv(here / "data.csv", [*rows, "1,1,1,b"])  # one more row: other data
    before = dump(uri)
    refused = runner.invoke(cli, ["retrain", "--tracking-uri", uri, "--seeds", "1", "-q"])
    assert refused.exit_code == 2 and "Traceback" not in refused.stderr
    (line,) = [ln for ln in refused.stderr.splitlines() if ln.startswith("error: ")]
    assert f"the dataset {here / 'data.csv'} changed since the search used it" in line
    assert dump(uri) == before


def test_sigterm_during_retrain_ends_its_run_killed(search_store: dict[str, Any], tmp_path: Path) -> None:
    uri = search_store["uri"]
    proc = subprocess.Popen([*SEARCH, "retrain", "--tracking-uri", uri, "--seeds", "3", "--epochs", "400", "-q"],
                            cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mlc = tracking.client(uri)
    exp = mlc.get_run(search_store["parent"]).info.experiment_id

    def retrain_runs() -> list[Any]:
        return list(mlc.search_runs([exp], filter_string=f"tags.`{tracking.ROLE}` = 'retrain'", max_results=100))

    before = {r.info.run_id for r in retrain_runs()}
    try:
        _wait_for(lambda: any(r.info.status == "RUNNING" for r in retrain_runs() if r.info.run_id not in before), proc,
                  240, "a retrain run started")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: interrupted")
    new = [r for r in retrain_runs() if r.info.run_id not in before]
    assert new and all(r.info.status == "KILLED" for r in new), [r.info.status for r in new]


