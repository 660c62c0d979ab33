"""The layout's rules, read from the code itself: module size, import limits, one spelling per name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted([*ROOT.glob("search/**/*.py"), *ROOT.glob("pipelines/**/*.py")])
MAX_LINES = 400
MAX_FUNCTION_LINES = 60


def imports(path: Path) -> set[str]:
    """Top-level package names a module imports, anywhere in it (inside functions too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_the_modules_exist() -> None:
    assert len(MODULES) > 30  # the glob found the packages; the rules below are not vacuous


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_is_over_400_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_long_functions_say_why(path: Path) -> None:
    """A function over 60 lines carries a comment that says why it is one function."""
    text = path.read_text()
    lines = text.splitlines()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            body = lines[node.lineno - 1 : node.end_lineno]
            if len(body) > MAX_FUNCTION_LINES:
                assert any("# One function on purpose" in line for line in body), f"{node.name}: {len(body)} lines"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_only_tracking_imports_mlflow(path: Path) -> None:
    if "search/tracking/" not in path.as_posix():
        assert "mlflow" not in imports(path)


@pytest.mark.parametrize("module", ["config", "errors", "model", "optimizers", "train", "space", "data", "plots"])
def test_the_core_imports_neither_ray_nor_mlflow(module: str) -> None:
    paths = [ROOT / f"search/{module}.py"] if (ROOT / f"search/{module}.py").exists() else \
        sorted((ROOT / "search" / module).glob("*.py"))
    assert paths
    for path in paths:
        heavy = imports(path) & {"ray", "mlflow"}
        # a space compiles itself for Ray Tune, inside the one method that returns a Ray domain
        allowed = {"ray"} if path.name in ("dimensions.py",) else set()
        assert heavy <= allowed, (path, heavy)


def test_tag_names_are_spelled_once() -> None:
    """Every tag name of search/tracking/tags.py stands there alone, never as a literal elsewhere."""
    from search.tracking import tags

    names = {v for k, v in vars(tags).items() if k.isupper() and isinstance(v, str) and "." in v}
    assert {"search.role", "search.trial_id", "mlflow.parentRunId", "search.best_run_id"} <= names
    for path in MODULES:
        if path.name == "tags.py":
            continue
        literals = {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)}
        assert not literals & names, (path, literals & names)


def test_registries_cover_the_vocabulary() -> None:
    from search import config
    from search.data import DATASETS
    from search.optimizers import OPTIMIZERS, SCHEDULES

    assert set(OPTIMIZERS) == set(config.OPTIMIZERS)
    assert set(SCHEDULES) == set(config.SCHEDULES)
    assert {"digits", "mnist", "fashion_mnist"} <= set(DATASETS)


def test_cli_choices_come_from_the_registries() -> None:
    from search.cli import cli
    from search.tune.algorithms import SCHEDULERS, SEARCHERS

    params = {p.name: p for p in cli.commands["launch"].params}
    assert list(params["searcher"].type.choices) == list(SEARCHERS)
    assert list(params["scheduler"].type.choices) == list(SCHEDULERS)


def test_only_results_touches_rays_private_state() -> None:
    for path in MODULES:
        if path.name != "results.py":
            assert "_experiment_analysis" not in path.read_text() and "_local_tuner" not in path.read_text(), path


def test_every_package_is_installed() -> None:
    """``pip install .`` (the Docker image) installs only the packages pyproject.toml lists."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {p.parent.relative_to(ROOT).as_posix().replace("/", ".") for p in ROOT.glob("search/**/__init__.py")}
    found |= {p.parent.relative_to(ROOT).as_posix().replace("/", ".") for p in ROOT.glob("pipelines/**/__init__.py")}
    assert found <= listed, found - listed
