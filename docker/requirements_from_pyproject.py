"""Print pip requirement lines taken from pyproject.toml, for the Docker image build.

The Dockerfile installs the dependencies in a layer of their own, keyed on pyproject.toml
alone, so that editing the code does not reinstall TensorFlow. pyproject.toml stays the
single place where versions are pinned; this script only reads it.

    python requirements_from_pyproject.py pyproject.toml [--extras gpu,test]
        the project's dependencies (plus the named extras), with Ray widened to
        ray[default,tune] at the same pin: the cluster nodes need the dashboard
        (job submission, health endpoints), which only ray[default] installs.

    python requirements_from_pyproject.py pyproject.toml --mlflow-server
        the MLflow requirement at the project's pin, with the `auth` extra (basic auth),
        plus the Postgres drivers: what the `mlflow` image stage needs to run
        `mlflow server` against Postgres.

Standard library only (tomllib, Python >= 3.11), so it runs on a bare python image.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

# name, optional [extras], the rest (version specifier and/or environment marker)
_REQUIREMENT = re.compile(r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?\s*(?P<rest>.*)$")

RAY_NODE_EXTRAS = ("default", "tune")
MLFLOW_SERVER_EXTRAS = ("auth",)
# SQLAlchemy >= 2.1 (what MLflow 3.17 installs) maps a plain postgresql:// URI to psycopg 3;
# SQLAlchemy 2.0 mapped it to psycopg2. Both drivers, so the URI works under either.
POSTGRES_DRIVERS = ("psycopg[binary]>=3.1,<4", "psycopg2-binary>=2.9,<3")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _split(requirement: str) -> tuple[str, list[str], str]:
    match = _REQUIREMENT.match(requirement)
    if match is None:
        raise ValueError(f"cannot parse requirement {requirement!r}")
    extras = [e.strip() for e in (match["extras"] or "").split(",") if e.strip()]
    return match["name"], extras, match["rest"].strip()


def _join(name: str, extras: list[str], rest: str) -> str:
    bracket = f"[{','.join(extras)}]" if extras else ""
    return f"{name}{bracket}{rest}"


def project_requirements(project: dict, extras: list[str]) -> list[str]:
    """The dependencies plus the optional groups in ``extras``, Ray widened for cluster nodes."""
    optional = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {', '.join(unknown)}; pyproject.toml defines: {', '.join(sorted(optional))}")
    lines: list[str] = []
    for requirement in list(project.get("dependencies", [])) + [r for e in extras for r in optional[e]]:
        name, req_extras, rest = _split(requirement)
        if _canonical(name) == "ray":
            req_extras = sorted(set(req_extras) | set(RAY_NODE_EXTRAS))
        lines.append(_join(name, req_extras, rest))
    if not any(_canonical(_split(line)[0]) == "ray" for line in lines):
        raise SystemExit("pyproject.toml does not depend on ray; the cluster image needs it")
    return lines


def mlflow_server_requirements(project: dict) -> list[str]:
    """MLflow as the project pins it (same server and client version) with the `auth` extra
    (Flask-WTF, which `--app-name basic-auth` needs), and the Postgres drivers."""
    pinned = [r for r in project.get("dependencies", []) if _canonical(_split(r)[0]) == "mlflow"]
    if not pinned:
        raise SystemExit("pyproject.toml does not depend on mlflow")
    name, extras, rest = _split(pinned[0])
    return [_join(name, sorted(set(extras) | set(MLFLOW_SERVER_EXTRAS)), rest), *POSTGRES_DRIVERS]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--extras", default="", help="comma-separated optional-dependency groups, e.g. gpu")
    parser.add_argument("--mlflow-server", action="store_true", help="print the MLflow server's requirements instead")
    args = parser.parse_args(argv)
    project = tomllib.loads(args.pyproject.read_text())["project"]
    if args.mlflow_server:
        lines = mlflow_server_requirements(project)
    else:
        extras = [e.strip() for e in args.extras.split(",") if e.strip()]
        lines = project_requirements(project, extras)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
