"""Tests for the ``search`` command line: click's CliRunner in process, and the real console
script in a subprocess wherever the exit status, stdout and stderr as a user sees them matter.

The contract under test (search/cli.py, search/errors.py): results on stdout; a user error is
ONE line ``error: ...`` on stderr with exit status 2 and no traceback; a diverged trial is one
line ``trial failed: ...`` with exit status 1.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import click
import pytest
from conftest import pick_free_port
from click.testing import CliRunner

from search.cli import cli
from search.space import load_space

BUILTIN_SPACES = {"batchnorm", "default", "optimizers", "quick", "regression", "regularization", "schedules", "selu"}
HEAVY = ("tensorflow", "keras", "ray", "mlflow")
_SCRIPT = Path(sys.executable).with_name("search")
# The installed console script when there is one (it is what users run), else the same entry point.
SEARCH = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-c", "from search.cli import main; main()"]
# Variables that would point a command at a real server, cluster or data, or change its logging.
_SCRUB = ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "SEARCH_DATA_DIR", "SEARCH_STORAGE_PATH", "MLFLOW_LOGGING_LEVEL")


def run_search(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    return subprocess.run([*SEARCH, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def invoke(*args: str):
    # The group sets these with os.environ.setdefault; naming them here makes CliRunner put them back after.
    env = {k: os.environ.get(k) for k in ("TF_CPP_MIN_LOG_LEVEL", "ABSL_MIN_LOG_LEVEL", "MLFLOW_LOGGING_LEVEL")}
    return CliRunner().invoke(cli, list(args), prog_name="search", env=env)


def assert_user_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit 2, nothing on stdout, exactly one ``error: ...`` line on stderr; returns that line."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


# --------------------------------------------------------------------------- help


def test_top_level_help_lists_the_commands():
    result = invoke("--help")
    assert result.exit_code == 0, result.output
    commands = result.stdout.split("Commands:", 1)[1]
    listed = {line.split()[0] for line in commands.splitlines() if line.strip()}
    assert {"trial", "spaces", "launch", "runs", "best"} <= listed


def leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[list[str]]:
    """Every runnable command under ``group``, as the words that name it (``["spaces", "list"]``)."""
    out: list[list[str]] = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            out += leaf_commands(command, (*prefix, name))
        else:
            out.append([*prefix, name])
    return out


SUBCOMMANDS = leaf_commands(cli)


def test_the_documented_commands_exist():
    expected = {("trial",), ("spaces", "list"), ("spaces", "show"), ("spaces", "validate"), ("launch",), ("runs",), ("best",)}
    assert expected <= {tuple(c) for c in SUBCOMMANDS}


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=" ".join)
def test_subcommand_help_shows_an_example(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Usage: search {' '.join(command)} ")
    body = result.stdout.split("Options:", 1)[0]
    assert re.search(r"^\s+Examples?:$", body, re.MULTILINE), body
    # An example is a command line of this very subcommand, indented under the heading.
    assert re.search(rf"^\s+search {' '.join(command)}\b", body, re.MULTILINE), body


def test_help_imports_no_heavy_module():
    script = textwrap.dedent(
        f"""
        import sys
        from click.testing import CliRunner
        from search.cli import cli
        runner = CliRunner()
        for args in [["--help"], *{SUBCOMMANDS!r}]:
            result = runner.invoke(cli, [*args, "--help"] if args != ["--help"] else args)
            assert result.exit_code == 0, (args, result.output)
        print(sorted(m for m in {HEAVY!r} if m in sys.modules))
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_console_script_help(tmp_path):
    proc = run_search("--help", cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: search ")
    assert proc.stderr == ""


# --------------------------------------------------------------------------- spaces


def test_spaces_list_shows_the_builtins():
    result = invoke("spaces", "list")
    assert result.exit_code == 0, result.output
    names = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert names == BUILTIN_SPACES


def test_spaces_list_json():
    result = invoke("spaces", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {row["name"] for row in rows} == BUILTIN_SPACES
    assert all(isinstance(row["description"], str) and row["description"] for row in rows)


def test_spaces_show_default_shows_conditions():
    result = invoke("spaces", "show", "default")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}
    assert "when optimizer in {momentum, nesterov}" in lines["momentum"]
    assert "when batch_norm in {after, before} or input_batch_norm in {true}" in lines["bn_momentum"]
    assert "when" not in lines["optimizer"]  # unconditional keys carry no condition


GOOD_SPACE = """\
description: a tiny valid space
params:
  n_hidden: {int: [1, 3]}
  optimizer: {choice: [sgd, momentum, adam]}
  momentum: {float: [0.5, 0.95]}
  learning_rate: {float: [1.0e-4, 1.0e-1], log: true}
  batch_size: 32
"""


def test_spaces_validate_good_file(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(GOOD_SPACE)
    result = invoke("spaces", "validate", str(path), "--samples", "200")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{path}: ok (4 dimensions, 200 sampled configs valid)"


def test_spaces_validate_bad_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD_SPACE.replace("[1, 3]", "[3, 1]"))
    result = invoke("spaces", "validate", str(path))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip() == f"error: {path}: n_hidden: low <= high must hold, but got low=3, high=1"


# --------------------------------------------------------------------------- trial


def test_trial_json(digits_trial):
    summary = digits_trial
    assert summary["config"] == load_space("quick").sample(0)  # --seed picks the sampled config
    assert summary["epochs"] == 2
    history = summary["history"]
    assert [row["epoch"] for row in history] == [1, 2]
    assert isinstance(summary["val_accuracy"], float) and 0.0 <= summary["val_accuracy"] <= 1.0
    best = max(history, key=lambda row: row["val_accuracy"])
    assert summary["best_epoch"] == best["epoch"]
    assert summary["val_accuracy"] == best["val_accuracy"]
    assert summary["val_loss"] == best["val_loss"]


@pytest.fixture(scope="module")
def digits_trial():
    result = invoke("trial", "--space", "quick", "--dataset", "digits", "--epochs", "2", "--json", "--seed", "0")
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)  # stdout holds the JSON and nothing else


def test_trial_set_overrides_and_drops_keys_that_no_longer_apply():
    sampled = load_space("quick").sample(5)
    assert sampled["optimizer"] == "nesterov" and "momentum" in sampled and sampled["n_hidden"] != 1  # the premise
    result = invoke("trial", "--space", "quick", "--epochs", "1", "--json", "--seed", "5",
                    "--set", "n_hidden=1", "--set", "optimizer=adam")
    assert result.exit_code == 0, (result.output, result.exception)
    config = json.loads(result.stdout)["config"]
    assert config["n_hidden"] == 1 and config["optimizer"] == "adam"
    assert "momentum" not in config  # momentum only applies to momentum/nesterov
    assert {k: v for k, v in config.items() if k not in ("n_hidden", "optimizer")} == {
        k: v for k, v in sampled.items() if k not in ("n_hidden", "optimizer", "momentum")
    }


@pytest.mark.slow  # a fresh interpreter imports TensorFlow, Ray or MLflow
def test_diverging_trial_fails_with_one_line(tmp_path):
    proc = run_search("trial", "--set", "optimizer=sgd", "--set", "learning_rate=1e12", "--set", "batch_norm=none",
                      "--epochs", "2", "--seed", "0", "--json", "-q", cwd=tmp_path)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    # stderr may also hold TensorFlow's own native log lines (CUDA probing), which no Python code controls.
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert re.fullmatch(r"trial failed: loss became NaN at epoch \d+", lines[-1]), proc.stderr
    assert sum("trial failed" in line for line in lines) == 1
    assert not any(line.startswith("error:") for line in lines)


# --------------------------------------------------------------------------- user errors, as users see them


SPACE_ERRORS = {
    "malformed-yaml": ("params:\n  n_hidden: {int: [1, 2]\n", ["malformed YAML", "line "]),
    "unknown-key": ("params:\n  n_hiddenx: 2\n", ["n_hiddenx", "unknown key 'n_hiddenx'"]),
    "low-above-high": ("params:\n  n_hidden: {int: [3, 1]}\n", ["n_hidden: low <= high must hold, but got low=3, high=1"]),
    "unknown-activation": ("params:\n  activation: {choice: [relu, nope]}\n", ["'nope' is not a valid activation"]),
    "never-holds": ("params:\n  n_hidden: {choice: [1, 2]}\n  dropout: {float: [0.0, 0.3], when: {n_hidden: 5}}\n",
                    ["dropout: the condition n_hidden in {5} can never hold"]),
    "rule-never-holds": ("params:\n  optimizer: adam\n  momentum: {float: [0.1, 0.9]}\n", ["momentum", "can never hold"]),
}


@pytest.mark.parametrize("case", list(SPACE_ERRORS))
def test_bad_space_file(tmp_path, case):
    text, fragments = SPACE_ERRORS[case]
    path = tmp_path / "space.yaml"
    path.write_text(text)
    line = assert_user_error(run_search("trial", "--space", str(path), cwd=tmp_path), *fragments)
    assert line.startswith(f"error: {path}:")  # errors point at the file


def test_missing_dataset_file(tmp_path):
    missing = tmp_path / "nope.csv"
    assert_user_error(run_search("trial", "--dataset", str(missing), cwd=tmp_path), f"no such dataset file: {missing}")


def test_csv_without_target_column(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b,c\n1,2,x\n3,4,y\n5,6,x\n")
    assert_user_error(run_search("trial", "--dataset", str(path), cwd=tmp_path),
                      f"{path}: no column 'label' (columns: a, b, c)", "--target")


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [("n_hidden=abc", "--set n_hidden=abc: expected an integer"),
     ("nope=1", "unknown key 'nope'"),
     ("n_hidden", "--set n_hidden: expected KEY=VALUE"),
     ("n_hidden=0", "n_hidden must be int with 1 <= value <= 64")],
)
def test_bad_set(tmp_path, setting, fragment):
    assert_user_error(run_search("trial", "--set", setting, cwd=tmp_path), fragment)


@pytest.mark.slow  # a fresh interpreter imports TensorFlow, Ray or MLflow
def test_best_on_a_missing_store_creates_none(tmp_path):
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    assert_user_error(run_search("best", "--tracking-uri", uri, cwd=tmp_path), f"no tracking store at {uri}")
    assert not (tmp_path / "empty.db").exists()


def test_launch_searcher_choice_is_one_error_line(tmp_path):
    proc = run_search("launch", "--searcher", "nope", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: Invalid value for '--searcher': 'nope' is not one of 'random', 'tpe', 'bayes'. "
        "(see `search launch --help`)"]


@pytest.mark.slow  # a fresh interpreter imports TensorFlow, Ray or MLflow
def test_launch_rejects_zero_samples(tmp_path):
    assert_user_error(run_search("launch", "--num-samples", "0", cwd=tmp_path), "--num-samples must be at least 1, got 0")


@pytest.mark.slow  # a fresh interpreter imports TensorFlow, Ray or MLflow
def test_launch_with_unreachable_tracking_server(tmp_path):
    uri = f"http://127.0.0.1:{pick_free_port()}"
    assert_user_error(run_search("launch", "--tracking-uri", uri, cwd=tmp_path),
                      f"cannot reach the MLflow tracking server at {uri}")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--num-samples", "0"], "--num-samples must be at least 1"),
     (["--tracking-uri", "http://127.0.0.1:{port}"], "cannot reach the MLflow tracking server")],
    ids=["num-samples-0", "unreachable-tracking"],
)
def test_launch_fails_fast_before_ray_starts(tmp_path, monkeypatch, args, fragment):
    import ray

    import search.tune.launch  # noqa: F401 (imported up front: the timing below is the command's, not the import's)

    monkeypatch.chdir(tmp_path)
    for name in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    ray_was_up = ray.is_initialized()
    port = pick_free_port()
    started = time.perf_counter()
    result = invoke("launch", "--space", "quick", "--num-samples", "2", *[a.format(port=port) for a in args])
    elapsed = time.perf_counter() - started
    assert result.exit_code == 2, result.output
    assert fragment in result.stderr
    assert elapsed < 10, f"took {elapsed:.1f} s: did it start Ray first?"
    assert ray.is_initialized() == ray_was_up  # it did not start (or join) a Ray instance
    assert not (tmp_path / "ray_results").exists()


def test_spaces_validate_warns_about_huge_networks(tmp_path):
    space = tmp_path / "huge.yaml"
    space.write_text("params:\n  n_hidden: {int: [1, 8]}\n  n_neurons: {choice: [64, 4096]}\n")
    result = invoke("spaces", "validate", str(space), "--samples", "10")
    assert result.exit_code == 0, result.output
    # 8 layers of 4096 on 784 inputs, counted by hand: (784+1)*4096 + 7*(4096+1)*4096 + (4096+1)*10
    expected = 785 * 4096 + 7 * 4097 * 4096 + 4097 * 10
    assert f"can build networks of {expected:,} parameters" in result.stderr
    small = invoke("spaces", "validate", "quick")
    assert small.exit_code == 0 and "warning" not in small.stderr
