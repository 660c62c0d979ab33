"""The README cannot drift from the project.

* Every command in its fenced ``bash`` blocks is run here (a fast variant, in ``tmp_path``),
  or mapped to the test that runs it (``COVERED``), or excluded with the reason (``EXCLUDED``):
  a new README command fails ``test_every_readme_command_is_accounted_for`` until it is one of
  the three.
* README command 2 is what ``.ci/run`` runs, and command 1 is the same install without the
  test extra, then ``search launch`` (which ``tests/test_tuner.py`` runs).
* Its CLI reference is the live ``--help`` of every command. After changing the CLI, rewrite
  it with ``python tests/test_readme.py --write-cli-reference``.
* The screenshots it shows exist (``tests/test_browser.py`` takes them), and so do its links.
* What it promises about the CLI: shell completion, and progress only on a terminal without -q.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CI = REPO / ".ci" / "run"
_SCRIPT = Path(sys.executable).with_name("search")
BIN = _SCRIPT.parent if _SCRIPT.is_file() else None
_SCRUB = ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "SEARCH_DATA_DIR", "SEARCH_STORAGE_PATH", "MLFLOW_LOGGING_LEVEL")
HELP_WIDTH = 100  # the CLI's max_content_width; the reference is rendered at it
REFERENCE_START, REFERENCE_END = "<!-- cli-reference:start -->", "<!-- cli-reference:end -->"

COMMAND_1 = ("python3.11 -m venv .venv && . .venv/bin/activate && pip install -q --upgrade pip && "
             "pip install -q -e . && search launch")
COMMAND_2 = ("python3.11 -m venv .venv && . .venv/bin/activate && pip install -q --upgrade pip && "
             'pip install -q -e ".[test]" && pytest -q')

# Appended to a README `search launch` to make it small; click takes the last value of an option.
FAST_LAUNCH = "--num-samples 1 --max-epochs 1 --searcher random --scheduler fifo --concurrency 1 -q"


@dataclass
class Run:
    """How this file runs a README command: ``command`` (default: the README's, plus ``append``)
    in bash, in a temp folder that holds the README's ``my_space.yaml``, a ``data.csv`` and a
    ``data.npz``, with ``HOME`` there too; then ``then``; the output must contain ``expect``."""

    expect: str
    append: str = ""
    command: str | None = None
    then: str = ""
    slow: bool = False
    why: str = ""


RUN: dict[str, Run] = {
    "search spaces validate my_space.yaml": Run(expect="my_space.yaml: ok (", why="the README's YAML example"),
    "search launch --dataset data.npz": Run(expect="1 trials (0 failed", append=FAST_LAUNCH, slow=True),
    'eval "$(_SEARCH_COMPLETE=bash_source search)"': Run(
        expect="complete -o nosort -F _search_completion search", then="complete -p search"),
    'eval "$(_SEARCH_COMPLETE=zsh_source search)"': Run(
        # zsh need not be installed: check the script that the line would evaluate.
        expect="#compdef search", command="_SEARCH_COMPLETE=zsh_source search"),
    "mkdir -p ~/.config/fish/completions && _SEARCH_COMPLETE=fish_source search > ~/.config/fish/completions/search.fish":
        Run(expect="complete --no-files --command search", then="cat ~/.config/fish/completions/search.fish"),
}

# README command -> the test that runs it ("path::name"; the path relative to the repository).
COVERED: dict[str, str] = {
    # A CSV by a relative path with its label column, as the README has it (with --classes on top):
    "search launch --dataset data.csv --target label":
        "tests/test_reliability.py::test_a_dataset_and_its_subset_are_found_from_anywhere_and_an_edit_is_refused",
    COMMAND_1: "tests/test_tuner.py::test_search_records_parent_and_nested_trials",  # install: see test_command_1_...
    COMMAND_2: "tests/test_readme.py::test_command_2_is_what_ci_runs",
    "search ui": "tests/test_browser.py::test_ui_lists_the_search_with_its_trials_nested",
    "search runs": "tests/test_browser.py::test_runs_and_best_read_the_store",
    "search best": "tests/test_browser.py::test_runs_and_best_read_the_store",
    "search importance": "tests/test_importance.py::test_search_importance_reads_the_store_and_writes_the_parent",
    "search retrain": "tests/test_browser.py::test_the_search_run_holds_its_plots_and_a_description_with_links",
    "search evaluate": "tests/test_browser.py::test_ui_shows_the_reliability_diagram",
    "search launch --name my-search --num-samples 64": "tests/test_reliability.py::test_signal_mid_trial_then_resume_gives_one_run_per_trial",
    "search launch --name my-search --resume": "tests/test_reliability.py::test_signal_mid_trial_then_resume_gives_one_run_per_trial",
    "search launch --dataset houses.csv --target price":
        "tests/test_regression.py::test_every_command_follows_the_regression_task",
    "search launch --name first --num-samples 16": "tests/test_warm_start.py::test_a_warm_started_search_records_where_it_started",
    "search launch --name second --warm-start first --num-samples 16":
        "tests/test_warm_start.py::test_a_warm_started_search_records_where_it_started",
}

EXCLUDED: dict[str, str] = {
    "mlflow models serve -m runs:/<ensemble run id>/model --env-manager local -p 5001":
        "a placeholder run id; tests/test_ensemble.py::test_the_ensemble_serves_with_mlflow_models_serve serves a real one",
    "search launch --dataset fashion_mnist --data-dir ~/data --num-samples 64 --max-epochs 30 --scheduler asha":
        "needs the Fashion-MNIST files (or a download) and hours of CPU; the IDX reader is tested in tests/test_data.py",
    "search pipeline --dataset diabetes":
        "minutes of CPU (16 trials of up to 100 epochs, 3 seeds, T=100); bench/bench_regression.py runs it, and "
        "tests/test_regression.py::test_every_command_follows_the_regression_task runs the same pipeline on a tiny CSV",
    'pip install -e ".[gpu]"': "installs CUDA TensorFlow (gigabytes); only useful with a GPU",
    "search launch --gpus-per-trial 0.5 --cpus-per-trial 1": "needs a GPU",
    "ray job submit --address http://127.0.0.1:8265 -- search launch --tracking-uri http://mlflow:5000 --num-samples 64":
        "needs a Ray cluster and an MLflow server (docker/; tests/test_docker.py and tests/test_cluster.py)",
}


# =========================================================================== reading the README


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.M | re.S)


def strip_comment(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` outside quotes, at the start or after a blank)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def readme_commands(text: str | None = None) -> list[str]:
    """Every command of the README's bash blocks: continuation lines joined, comments dropped,
    blanks collapsed; a ``&&`` chain is one command."""
    commands: list[str] = []
    for block in bash_blocks(text if text is not None else README.read_text()):
        pending = ""
        for raw in block.splitlines():
            line = strip_comment(raw).rstrip()
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line = " ".join((pending + line).split())
            pending = ""
            if line:
                commands.append(line)
    return commands


def test_command_parsing() -> None:
    text = "```bash\n# a comment\nsearch ui   # opens it\n\nray job submit -- \\\n    search launch --x 1\n" \
           "eval \"$(A=b search)\"        # bash\n```\n```text\nnot a command\n```\n"
    assert readme_commands(text) == ["search ui", "ray job submit -- search launch --x 1", 'eval "$(A=b search)"']


# =========================================================================== every command accounted for


def test_every_readme_command_is_accounted_for() -> None:
    commands = readme_commands()
    assert len(commands) == len(set(commands)), "a README command appears twice; one entry would cover both"
    kinds = [set(RUN), set(COVERED), set(EXCLUDED)]
    assert not (kinds[0] & kinds[1] or kinds[0] & kinds[2] or kinds[1] & kinds[2]), "a command is in two lists"
    unknown = [c for c in commands if not any(c in k for k in kinds)]
    assert not unknown, f"README commands that no test runs, covers or excludes: {unknown}"
    stale = sorted((kinds[0] | kinds[1] | kinds[2]) - set(commands))
    assert not stale, f"listed here but no longer in the README: {stale}"


def test_covering_tests_exist() -> None:
    for command, target in COVERED.items():
        path, _, name = target.partition("::")
        tree = ast.parse((REPO / path).read_text())
        names = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert name in names, f"{command!r} is said to be covered by {target}, which does not exist"


def test_command_2_is_what_ci_runs() -> None:
    commands = readme_commands()
    assert commands[:2] == [COMMAND_1, COMMAND_2], "the README's first block must hold the two commands"
    lines = [line.strip() for line in CI.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert '"$PY" -m venv .venv && ' + COMMAND_2.split(" -m venv .venv && ", 1)[1] == lines[-1], \
        ".ci/run must end with README command 2 (with $PY for python3.11)"


def test_command_1_is_command_2_without_the_test_extra_then_search_launch() -> None:
    # Same install as CI runs, so command 1's install is exercised by CI; its `search launch`
    # (the default space, 16 trials) is what tests/test_tuner.py runs in small.
    assert COMMAND_1.replace('-e . && search launch', '-e ".[test]" && pytest -q') == COMMAND_2


def _data_files(folder: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 40)
    x = rng.normal(size=(len(y), 6)) + y[:, None] * 1.5
    rows = ["f0,f1,f2,f3,f4,f5,label"] + [",".join(f"{v:.4f}" for v in xi) + f",{yi}" for xi, yi in zip(x, y, strict=True)]
    (folder / "data.csv").write_text("\n".join(rows) + "\n")
    np.savez(folder / "data.npz", x=x.astype("float32"), y=y)


def readme_yaml_example() -> str:
    (block,) = [b for b in re.findall(r"^```yaml\n(.*?)^```", README.read_text(), flags=re.M | re.S)
                if b.startswith("# my_space.yaml")]
    return block


def _params(run: dict[str, Run]) -> list[object]:
    return [pytest.param(cmd, marks=[pytest.mark.slow] if r.slow else [], id=cmd[:60]) for cmd, r in run.items()]


@pytest.mark.parametrize("command", _params(RUN))
def test_readme_command_runs(command: str, tmp_path: Path) -> None:
    if BIN is None:
        pytest.fail("the `search` console script is not installed next to this Python: pip install -e .")
    run = RUN[command]
    (tmp_path / "my_space.yaml").write_text(readme_yaml_example())
    _data_files(tmp_path)
    line = run.command or f"{command} {run.append}".strip()
    script = f"set -e -o pipefail\n{line}\n{run.then}\n"
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update(HOME=str(tmp_path), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}")
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{line!r} exited {proc.returncode}:\n{output[-3000:]}"
    assert run.expect in output, f"{line!r} did not print {run.expect!r}:\n{output[-3000:]}"


# =========================================================================== the CLI reference


def live_commands() -> list[list[str]]:
    """Every command and group, as the words after ``search`` (``[]`` is ``search`` itself)."""
    from search.cli import cli

    out: list[list[str]] = []

    def walk(command: click.Command, words: list[str]) -> None:
        out.append(words)
        if isinstance(command, click.Group):
            for name in command.list_commands(click.Context(command)):
                walk(command.commands[name], [*words, name])

    walk(cli, [])
    return out


def live_help(words: list[str]) -> str:
    from search.cli import cli

    result = CliRunner().invoke(cli, [*words, "--help"], prog_name="search", terminal_width=HELP_WIDTH)
    assert result.exit_code == 0, result.output
    return result.output.rstrip() + "\n"


def render_cli_reference() -> str:
    from search.cli import cli

    parts = [REFERENCE_START]
    for words in live_commands():
        command = cli
        for word in words:
            command = command.commands[word]  # type: ignore[attr-defined]
        summary = command.get_short_help_str(limit=90) if words else "global options and the list of commands"
        name = " ".join(["search", *words])
        parts += ["", f"<details><summary><code>{name}</code>: {summary}</summary>", "",
                  "```text", f"$ {name} --help", live_help(words).rstrip(), "```", "", "</details>"]
    parts.append(REFERENCE_END)
    return "\n".join(parts)


def readme_reference(text: str) -> dict[str, str]:
    """``search X --help`` -> the help text shown under it in the README."""
    out = {}
    for block in re.findall(r"^```text\n(.*?)^```", text, flags=re.M | re.S):
        first, _, rest = block.partition("\n")
        if first.startswith("$ search") and first.endswith(" --help"):
            out[first[2:]] = rest
    return out


def test_cli_reference_is_the_live_help() -> None:
    text = README.read_text()
    shown = readme_reference(text)
    expected = {" ".join(["search", *w, "--help"]): live_help(w) for w in live_commands()}
    hint = "run `python tests/test_readme.py --write-cli-reference` after changing the CLI"
    assert sorted(shown) == sorted(expected), f"the README's CLI reference lists other commands than the CLI; {hint}"
    for command, text_ in expected.items():
        assert shown[command] == text_, f"the README's `{command}` differs from the live output; {hint}"
    start, end = text.index(REFERENCE_START), text.index(REFERENCE_END) + len(REFERENCE_END)
    assert text[start:end] == render_cli_reference(), hint


def write_cli_reference() -> None:
    text = README.read_text()
    start, end = text.index(REFERENCE_START), text.index(REFERENCE_END) + len(REFERENCE_END)
    README.write_text(text[:start] + render_cli_reference() + text[end:])


# =========================================================================== screenshots and links


def test_screenshots_and_links_exist() -> None:
    from PIL import Image

    text = README.read_text()
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"docs/img/ui-runs.png", "docs/img/ui-trial-metrics.png", "docs/img/ui-reliability.png"} <= set(images)
    for image in images:
        with Image.open(REPO / image) as png:  # tests/test_browser.py writes them
            assert png.format == "PNG" and png.size[0] >= 800, image
    for link in re.findall(r"(?<!!)\[[^\]]*\]\(([^)#]+)\)", text):
        if "://" not in link:
            assert (REPO / link).exists(), link
    anchors = {"#" + re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", text, re.M)}
    for anchor in re.findall(r"\]\((#[^)]+)\)", text):
        assert anchor in anchors, anchor


# =========================================================================== what the README promises


def test_shell_completion_completes_commands_and_choices(tmp_path: Path) -> None:
    if BIN is None:
        pytest.fail("the `search` console script is not installed next to this Python: pip install -e .")
    env = {**os.environ, "_SEARCH_COMPLETE": "bash_source"}
    script = subprocess.run([str(BIN / "search")], env=env, capture_output=True, text=True, timeout=60)
    assert script.returncode == 0 and "_search_completion()" in script.stdout
    assert "complete -o nosort -F _search_completion search" in script.stdout

    def complete(line: str) -> list[str]:
        words = line.split(" ")
        env = {**os.environ, "_SEARCH_COMPLETE": "bash_complete", "COMP_WORDS": line, "COMP_CWORD": str(len(words) - 1)}
        out = subprocess.run([str(BIN / "search")], env=env, capture_output=True, text=True, timeout=60)
        return [item.partition(",")[2] for item in out.stdout.split()]

    assert complete("search la") == ["launch"]
    assert set(complete("search spaces ")) >= {"list", "show", "validate"}
    assert complete("search launch --searcher ") == ["random", "tpe", "bayes"]


class _Terminal:
    def __init__(self, tty: bool) -> None:
        self.tty, self.written = tty, ""

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        self.written += text
        return len(text)

    def flush(self) -> None:
        pass


@pytest.mark.parametrize("tty", [True, False])
@pytest.mark.parametrize("quiet", [True, False])
def test_progress_only_on_a_terminal_and_never_with_q(monkeypatch: pytest.MonkeyPatch, tty: bool, quiet: bool) -> None:
    from search import cli

    terminal = _Terminal(tty)
    monkeypatch.setattr(sys, "stderr", terminal)
    printer = cli.progress_printer(quiet)
    bar = cli.progress_bar(quiet, "retraining")
    shown = tty and not quiet
    assert (printer is not None) == shown and (bar is not None) == shown
    if shown:
        printer("trials: 1 running")
        bar(1, 2, "seed 1")
        bar(2, 2, "done")
        assert "\r" in terminal.written and "retraining" in terminal.written


def test_the_docker_note_on_working_dir() -> None:
    text = README.read_text()
    assert "--working-dir ." not in readme_commands().__str__()
    assert "without `--working-dir .`" in text and "docker/README.md" in text


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-cli-reference"]:
        write_cli_reference()
        print(f"wrote the CLI reference into {README}")
    else:
        sys.exit("usage: python tests/test_readme.py --write-cli-reference")


# =========================================================================== the Extending section


def _count_csv(folder: Path) -> Path:
    """A small CSV (synthetic) whose target is a count, for the README's task example."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 2))
    visits = rng.poisson(np.exp(0.5 * x[:, 0] + 1))
    path = folder / "counts.csv"
    path.write_text("a,b,visits\n" + "".join(f"{a:.3f},{b:.3f},{v}\n" for (a, b), v in zip(x, visits, strict=True)))
    return path


def extending_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## 10. Extending"):text.index("## Development")]
    return re.findall(r"^```python\n(.*?)^```", section, flags=re.M | re.S)


@pytest.mark.slow  # imports Ray, Optuna and Keras
def test_extending_examples_are_one_registry_entry_each(tmp_path: Path) -> None:
    """Each example of the README's Extending section, run as it is: the new entry works."""
    from search.config import TrialConfig
    from search.data.registry import DATASETS, load_dataset
    from search.optimizers import OPTIMIZERS
    from search.space import load_space
    from search.tune.algorithms import SCHEDULERS, SEARCHERS, Plan, make_scheduler, make_searcher

    from search.tasks import TASKS
    from search.train import fit

    blocks = extending_blocks()
    assert len(blocks) == 5
    added = [("median", SCHEDULERS), ("qmc", SEARCHERS), ("lion", OPTIMIZERS), ("wine", DATASETS), ("count", TASKS)]
    try:
        for block in blocks:
            exec(compile(block, "README.md", "exec"), {})  # noqa: S102 (the README's own example)
        assert all(name in registry for name, registry in added)
        plan = Plan(space=load_space("quick"), metric="val_accuracy", mode="max", seed=0, num_samples=4,
                    concurrency=2, max_t=5)
        assert type(make_scheduler("median", plan)).__name__ == "MedianStoppingRule"
        assert type(make_searcher("qmc", plan)._sampler).__name__ == "QMCSampler"
        entry = OPTIMIZERS["lion"]
        assert type(entry.cls(learning_rate=1e-3, **entry.knobs(TrialConfig({})))).__name__ == "Lion"
        wine = load_dataset("wine")
        assert wine.n_classes == 3 and len(wine.train) + len(wine.valid) + len(wine.test) == 178
        counts = _count_csv(tmp_path)
        data = load_dataset(str(counts), target="visits", task="count")  # a numeric target, as the entry says
        assert data.task == "count" and data.train.y.dtype.kind == "f"
        history = fit({"n_hidden": 1, "n_neurons": 8, "epochs": 2}, data, seed=0).history
        assert {"loss", "mae", "val_loss", "val_mae"} <= set(history[-1])
    finally:
        for name, registry in added:
            registry.pop(name, None)
