"""Static checks of the container setup in docker/: Dockerfile, compose files, Kubernetes manifests.

No Docker engine or Kubernetes cluster exists where these tests run, so nothing is built or
started here: the files are parsed and their wiring checked (ports on loopback, token auth on
every Ray node, health checks and start order, volumes, MLflow's Postgres backend and served
artifacts, the KubeRay resources and the Secrets they reference). Where the `docker` client
with its compose plugin is installed, `docker compose config` (which needs no daemon) checks
the compose files as Compose itself reads them. Needs only pyyaml.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
COMPOSE_AUTH = DOCKER / "compose.auth.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
K8S = DOCKER / "k8s"

RAY_SERVICES = ("ray-head", "ray-worker", "ray-worker-gpu")
TOKEN = "0123456789abcdef" * 4
BASE_ENV = {"RAY_AUTH_TOKEN": TOKEN}
AUTH_ENV = {**BASE_ENV, "MLFLOW_TRACKING_PASSWORD": "a-long-enough-password", "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 32}


# --------------------------------------------------------------------------- interpolation

class InterpolationError(ValueError):
    pass


_TEMPLATE = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^{}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?$", re.S)


def interpolate_string(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution for one string: $VAR, ${VAR}, ${VAR:-default},
    ${VAR-default}, ${VAR:?error}, ${VAR?error}, ${VAR:+alt}, ${VAR+alt}, and $$ for a literal $."""

    def substitute(match: re.Match) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        braced = _BRACED.match(match["braced"])
        if braced is None:
            raise InterpolationError(f"invalid interpolation {match[0]!r}")
        name, op, arg = braced["name"], braced["op"], braced["arg"]
        value = env.get(name)
        if op is None:
            return value or ""
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op == ":?":
            if not value:
                raise InterpolationError(f"{name}: {arg}")
            return value
        if op == "?":
            if value is None:
                raise InterpolationError(f"{name}: {arg}")
            return value
        if op == ":+":
            return arg if value else ""
        return arg if value is not None else ""  # "+"

    return _TEMPLATE.sub(substitute, text)


def interpolate(node, env: dict[str, str]):
    if isinstance(node, str):
        return interpolate_string(node, env)
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    return node


def test_interpolation_helper():
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate_string("${SET:-d}/${UNSET:-d}/${EMPTY:-d}/${EMPTY-d}/${UNSET-d}", env) == "x/d/d//d"
    assert interpolate_string("$$HOME ${SET:+alt} ${UNSET:+alt}. $SET", env) == "$HOME alt . x"
    assert interpolate_string("${SET:?boom}", env) == "x"
    with pytest.raises(InterpolationError, match="UNSET: boom"):
        interpolate_string("${UNSET:?boom}", env)
    with pytest.raises(InterpolationError):
        interpolate_string("${EMPTY:?boom}", env)


# --------------------------------------------------------------------------- loading

def load_compose(path: Path = COMPOSE, env: dict[str, str] | None = None) -> dict:
    """A compose file as Compose reads it with ``env`` (default: only RAY_AUTH_TOKEN set)."""
    return interpolate(yaml.safe_load(path.read_text()), BASE_ENV if env is None else env)


@pytest.fixture(scope="module")
def compose() -> dict:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return {key: (None if value is None else str(value)) for key, value in env.items()}


def command(service: dict) -> list[str]:
    cmd = service.get("command")
    if isinstance(cmd, str):
        return cmd.split()
    return [str(part) for part in cmd or []]


def option(cmd: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in an argument list."""
    for i, part in enumerate(cmd):
        if part == name and i + 1 < len(cmd):
            return cmd[i + 1]
        if part.startswith(name + "="):
            return part.split("=", 1)[1]
    return None


def parse_port(entry) -> dict:
    """A ports entry, short ("[HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTO]") or long syntax."""
    if isinstance(entry, dict):
        return {"host_ip": entry.get("host_ip"), "published": str(entry.get("published", "")), "target": str(entry["target"])}
    text = str(entry).split("/", 1)[0]
    if text.startswith("["):  # IPv6 host address: [::1]:8265:8265
        host_ip, rest = text[1:].split("]:", 1)
        published, target = rest.split(":", 1)
        return {"host_ip": host_ip, "published": published, "target": target}
    parts = text.split(":")
    if len(parts) == 3:
        return {"host_ip": parts[0], "published": parts[1], "target": parts[2]}
    if len(parts) == 2:
        return {"host_ip": None, "published": parts[0], "target": parts[1]}
    return {"host_ip": None, "published": "", "target": parts[0]}


def named_volume_sources(service: dict) -> dict[str, str]:
    """target -> source for the named volumes a service mounts (not bind mounts)."""
    found = {}
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            if entry.get("type", "volume") == "volume" and entry.get("source"):
                found[entry["target"]] = entry["source"]
            continue
        parts = str(entry).split(":")
        if len(parts) >= 2 and not parts[0].startswith((".", "/", "~", "$")):
            found[parts[1]] = parts[0]
    return found


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# --------------------------------------------------------------------------- compose: services

def test_compose_has_the_services(services):
    assert {"ray-head", "ray-worker", "ray-worker-gpu", "mlflow", "postgres"} <= set(services)


def test_only_the_gpu_worker_is_behind_a_profile(services):
    assert services["ray-worker-gpu"].get("profiles") == ["gpu"]
    for name in ("ray-head", "ray-worker", "mlflow", "postgres"):
        assert not services[name].get("profiles"), f"{name} must start without a profile"


def test_every_published_port_binds_loopback_by_default(services):
    published = 0
    for name, service in services.items():
        for entry in service.get("ports") or []:
            port = parse_port(entry)
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {entry!r} beyond the loopback interface"
            assert port["published"], f"{name}: {entry!r} publishes on a random host port"
            published += 1
    assert published >= 4


def test_bind_address_overrides_every_published_port():
    services = load_compose(env={**BASE_ENV, "BIND_ADDRESS": "10.1.2.3"})["services"]
    hosts = {parse_port(e)["host_ip"] for s in services.values() for e in s.get("ports") or []}
    assert hosts == {"10.1.2.3"}


def test_head_publishes_dashboard_gcs_and_client(services):
    ports = {parse_port(e)["target"]: parse_port(e)["published"] for e in services["ray-head"]["ports"]}
    assert ports == {"8265": "8265", "6379": "6379", "10001": "10001"}


def test_head_command(services):
    cmd = command(services["ray-head"])
    assert cmd[:3] == ["ray", "start", "--head"]
    assert "--block" in cmd
    assert option(cmd, "--port") == "6379"
    assert option(cmd, "--dashboard-host") == "0.0.0.0"
    assert option(cmd, "--dashboard-port") == "8265"
    assert option(cmd, "--ray-client-server-port") == "10001"
    assert option(cmd, "--num-cpus").isdigit()


@pytest.mark.parametrize("name", ["ray-worker", "ray-worker-gpu"])
def test_workers_join_the_head(services, name):
    cmd = command(services[name])
    assert cmd[:2] == ["ray", "start"]
    assert "--head" not in cmd
    assert option(cmd, "--address") == "ray-head:6379"
    assert "--block" in cmd


def test_ray_worker_is_scalable(services):
    worker = services["ray-worker"]
    for key in ("container_name", "ports", "hostname"):
        assert not worker.get(key), f"ray-worker sets {key}: `--scale ray-worker=N` needs it unset"


def test_no_service_fixes_a_container_name(services):
    for name, service in services.items():
        assert "container_name" not in service, f"{name} sets container_name"


def test_mlflow_server(services):
    mlflow = services["mlflow"]
    cmd = command(mlflow)
    assert cmd[:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in cmd
    backend = option(cmd, "--backend-store-uri")
    assert backend is not None and backend.startswith("postgresql://") and "@postgres:5432/" in backend
    assert option(cmd, "--artifacts-destination") == "/mlartifacts"
    assert option(cmd, "--host") == "0.0.0.0"
    assert option(cmd, "--port") == "5000"
    # MLflow's DNS-rebinding guard must let the Ray nodes (Host: mlflow:5000) and the host's
    # browser (127.0.0.1:5000, localhost:5000) through.
    allowed = option(cmd, "--allowed-hosts").split(",")
    assert "mlflow:5000" in allowed and "127.0.0.1:*" in allowed and "localhost:*" in allowed
    assert named_volume_sources(mlflow).get("/mlartifacts") == "mlflow-artifacts"
    ports = [parse_port(e) for e in mlflow["ports"]]
    assert [(p["published"], p["target"]) for p in ports] == [("5000", "5000")]


def test_mlflow_backend_matches_postgres_settings():
    env = {**BASE_ENV, "POSTGRES_USER": "u", "POSTGRES_PASSWORD": "p", "POSTGRES_DB": "d"}
    services = load_compose(env=env)["services"]
    assert option(command(services["mlflow"]), "--backend-store-uri") == "postgresql://u:p@postgres:5432/d"
    assert environment(services["postgres"]) == {"POSTGRES_USER": "u", "POSTGRES_PASSWORD": "p", "POSTGRES_DB": "d"}


def test_postgres(services):
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:16")
    assert not postgres.get("ports"), "postgres must not be published"
    assert named_volume_sources(postgres).get("/var/lib/postgresql/data") == "postgres-data"
    assert set(environment(postgres)) == {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}


# --------------------------------------------------------------------------- compose: health and order

def test_every_service_has_a_healthcheck(services):
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert len(check["test"]) > 1


def _python_check(service: dict) -> tuple[str, list[str]]:
    test = service["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"], test
    return test[3], test[4:]


@pytest.mark.parametrize("name", ["ray-head", "ray-worker", "ray-worker-gpu", "mlflow"])
def test_python_healthchecks_compile_and_hit_public_endpoints(services, name):
    code, urls = _python_check(services[name])
    compile(code, f"<{name} healthcheck>", "exec")
    assert urls and all(u.startswith("http://127.0.0.1:") for u in urls)
    # Under Ray token auth only the health endpoints are public: /api/version answers 401.
    assert not any("/api/version" in u for u in urls)


def test_ray_healthchecks_check_gcs_on_the_head_and_the_raylet_everywhere(services):
    _, head_urls = _python_check(services["ray-head"])
    assert "http://127.0.0.1:8265/api/gcs_healthz" in head_urls
    assert any(u.startswith("http://127.0.0.1:52365/api/") for u in head_urls)
    for name in ("ray-worker", "ray-worker-gpu"):
        _, urls = _python_check(services[name])
        assert urls == ["http://127.0.0.1:52365/api/local_raylet_healthz"]


def test_mlflow_and_postgres_healthchecks(services):
    _, urls = _python_check(services["mlflow"])
    assert urls == ["http://127.0.0.1:5000/health"]
    test = services["postgres"]["healthcheck"]["test"]
    assert "pg_isready" in " ".join(test)
    # $$ keeps the variables for the container's shell instead of compose's interpolation.
    assert "${POSTGRES_USER}" in test[1]


def test_depends_on_waits_for_healthy_services(services):
    expected = {
        "ray-head": {"mlflow"},
        "ray-worker": {"ray-head"},
        "ray-worker-gpu": {"ray-head"},
        "mlflow": {"postgres"},
    }
    for name, deps in expected.items():
        depends = services[name].get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on needs the long form with a condition"
        assert set(depends) == deps, name
        for dep, spec in depends.items():
            assert spec.get("condition") == "service_healthy", f"{name} -> {dep}"
            assert services[dep].get("healthcheck"), f"{name} waits on {dep}, which has no healthcheck"
    assert not services["postgres"].get("depends_on")


# --------------------------------------------------------------------------- compose: auth, env, volumes

@pytest.mark.parametrize("name", RAY_SERVICES)
def test_ray_token_auth_on_every_ray_service(services, name):
    env = environment(services[name])
    assert env.get("RAY_AUTH_MODE") == "token"
    assert env.get("RAY_AUTH_TOKEN") == TOKEN
    assert env.get("MLFLOW_TRACKING_URI") == "http://mlflow:5000"
    assert env.get("SEARCH_DATA_DIR") == "/data"


def test_ray_services_are_exactly_those_that_run_ray(services):
    runs_ray = {name for name, s in services.items() if command(s)[:2] == ["ray", "start"]}
    assert runs_ray == set(RAY_SERVICES)


def test_compose_refuses_to_start_without_a_token():
    raw = yaml.safe_load(COMPOSE.read_text())
    with pytest.raises(InterpolationError, match="RAY_AUTH_TOKEN"):
        interpolate(raw, {})
    with pytest.raises(InterpolationError, match="RAY_AUTH_TOKEN"):
        interpolate(raw, {"RAY_AUTH_TOKEN": ""})


def test_named_volumes_are_declared_and_used(compose, services):
    declared = set(compose.get("volumes") or {})
    used = set()
    for name, service in services.items():
        for target, source in named_volume_sources(service).items():
            assert source in declared, f"{name} mounts undeclared volume {source!r} at {target}"
            used.add(source)
    assert {"postgres-data", "mlflow-artifacts", "search-data", "ray-results"} <= declared
    assert declared == used, f"declared but unused: {declared - used}"


@pytest.mark.parametrize("name", RAY_SERVICES)
def test_ray_nodes_share_data_and_tune_storage(services, name):
    volumes = named_volume_sources(services[name])
    assert volumes.get("/data") == "search-data"
    # Tune's default storage path is ~/ray_results (HOME=/home/search in the image): shared,
    # because trials on workers checkpoint where the driver on the head reads.
    assert volumes.get("/home/search/ray_results") == "ray-results"


def test_ray_nodes_get_shared_memory_and_an_init(services):
    for name in RAY_SERVICES:
        assert services[name].get("shm_size"), name
        assert services[name].get("init") is True, name


def test_gpu_worker_reserves_nvidia_gpus_and_builds_the_gpu_image(services):
    gpu = services["ray-worker-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) and (d.get("count") == "all" or d.get("device_ids")) for d in devices)
    assert gpu["build"]["args"]["EXTRAS"] == "gpu"
    assert gpu["image"] != services["ray-worker"]["image"]
    assert services["ray-worker"]["build"]["args"]["EXTRAS"] == ""


def test_builds_use_the_repo_root_and_the_dockerfile(services):
    stages = dockerfile_stages()
    for name, service in services.items():
        build = service.get("build")
        if build is None:
            continue
        assert build["context"] == "..", name
        assert build["dockerfile"] == "docker/Dockerfile", name
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        if "target" in build:
            assert build["target"] in stages, f"{name}: no stage {build['target']!r}"
    assert services["mlflow"]["build"]["target"] == "mlflow"
    assert "build" not in services["postgres"]


# --------------------------------------------------------------------------- compose.auth.yaml

def test_basic_auth_override():
    base = load_compose(env=AUTH_ENV)["services"]
    override = load_compose(COMPOSE_AUTH, env=AUTH_ENV)
    mlflow = override["services"]["mlflow"]
    cmd = command(mlflow)
    assert cmd == command(base["mlflow"]) + ["--app-name", "basic-auth"], "the override must repeat compose.yaml's command"
    env = environment(mlflow)
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == AUTH_ENV["MLFLOW_TRACKING_PASSWORD"]
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == AUTH_ENV["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == "admin"
    assert named_volume_sources(mlflow)[mlflow["working_dir"]] == "mlflow-auth"
    assert "mlflow-auth" in override["volumes"]
    head = environment(override["services"]["ray-head"])
    assert head == {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": AUTH_ENV["MLFLOW_TRACKING_PASSWORD"]}


def test_basic_auth_override_refuses_missing_secrets():
    raw = yaml.safe_load(COMPOSE_AUTH.read_text())
    with pytest.raises(InterpolationError, match="MLFLOW_TRACKING_PASSWORD"):
        interpolate(raw, BASE_ENV)
    with pytest.raises(InterpolationError, match="MLFLOW_FLASK_SERVER_SECRET_KEY"):
        interpolate(raw, {**BASE_ENV, "MLFLOW_TRACKING_PASSWORD": "x" * 12})


# --------------------------------------------------------------------------- Dockerfile

def dockerfile_lines() -> list[str]:
    """Instructions with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append((current + stripped).strip())
        current = ""
    if current:
        lines.append(current.strip())
    return lines


def dockerfile_stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (the unnamed stages get their index)."""
    stages: dict[str, list[str]] = {}
    name = None
    for line in dockerfile_lines():
        if line.upper().startswith("FROM "):
            match = re.match(r"FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
            name = match[2] or str(len(stages))
            stages[name] = [line]
        elif name is not None:
            stages[name].append(line)
    return stages


def test_dockerfile_base_image_is_a_build_arg():
    lines = dockerfile_lines()
    first_from = next(i for i, line in enumerate(lines) if line.upper().startswith("FROM "))
    args = [line for line in lines[:first_from] if line.upper().startswith("ARG ")]
    assert "ARG BASE_IMAGE=python:3.11-slim" in args
    assert re.match(r"FROM\s+\$\{?BASE_IMAGE\}?\b", lines[first_from])


def test_dockerfile_stages_and_default_target():
    stages = dockerfile_stages()
    assert list(stages)[-1] == "project", "the Ray node image must be the default (last) target"
    assert {"base", "mlflow", "project"} <= set(stages)
    project = " ".join(stages["project"])
    assert "ARG EXTRAS" in project
    assert "pip install" in project and "/tmp/src" in project
    assert "--extras" in project and "${EXTRAS}" in project
    assert "--mlflow-server" in " ".join(stages["mlflow"])


@pytest.mark.parametrize("stage", ["mlflow", "project"])
def test_dockerfile_runs_as_a_non_root_user(stage):
    users = [line.split(None, 1)[1] for line in dockerfile_stages()[stage] if line.upper().startswith("USER ")]
    assert users, f"stage {stage} sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_environment():
    base = " ".join(dockerfile_stages()["base"])
    for setting in ("PYTHONUNBUFFERED=1", "HOME=/home/search", "SEARCH_DATA_DIR=/data"):
        assert setting in base, setting
    assert "useradd" in base and "--uid" in base
    # The mount points of compose's named volumes exist and belong to the user.
    for path in ("/data", "/mlartifacts", "/var/lib/mlflow-auth", "/home/search/ray_results"):
        assert path in base, path
    assert "chown" in base


def test_dockerignore_lets_in_what_the_build_reads():
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "an allowlist: exclude everything, then re-include"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    # The folders `pip install .` reads the packages from (package-dir maps search.spaces to spaces/).
    setuptools = pyproject()["tool"]["setuptools"]
    package_dir = setuptools.get("package-dir", {})
    folders = {package_dir.get(p, p.replace(".", "/")).split("/")[0] for p in setuptools["packages"]}
    assert folders >= {"search", "pipelines", "spaces"}
    for folder in folders:
        assert folder in allowed, f"{folder}/ is left out of the build context"
    assert "pyproject.toml" in allowed
    assert pyproject()["project"]["readme"] in allowed
    assert "docker/requirements_from_pyproject.py" in allowed
    for mounted in re.findall(r"source=([^,\s]+)", DOCKERFILE.read_text()):
        if mounted != ".":
            assert mounted in allowed, f"the Dockerfile mounts {mounted}, which the dockerignore leaves out"


# --------------------------------------------------------------------------- requirements helper

def _requirements_module():
    spec = importlib.util.spec_from_file_location("requirements_from_pyproject", DOCKER / "requirements_from_pyproject.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ray_pin(requirements: list[str]) -> str:
    (line,) = [r for r in requirements if re.match(r"^ray\b", r)]
    return re.sub(r"^ray(\[[^\]]*\])?", "", line)


def test_image_requirements_come_from_pyproject():
    module = _requirements_module()
    project = pyproject()["project"]
    cpu = module.project_requirements(project, [])
    assert len(cpu) == len(project["dependencies"])
    ray_line = next(r for r in cpu if r.startswith("ray["))
    assert "default" in ray_line and "tune" in ray_line, "cluster nodes need ray[default] for the dashboard"
    assert _ray_pin(cpu) == _ray_pin(project["dependencies"]), "the image must keep the project's Ray pin"
    gpu = module.project_requirements(project, ["gpu"])
    assert set(project["optional-dependencies"]["gpu"]) <= set(gpu)
    with pytest.raises(SystemExit):
        module.project_requirements(project, ["no-such-extra"])


def test_mlflow_server_requirements_keep_the_client_pin():
    module = _requirements_module()
    project = pyproject()["project"]
    mlflow_pin = next(r for r in project["dependencies"] if re.match(r"^mlflow\b", r))
    lines = module.mlflow_server_requirements(project)
    # Same version as the client, plus `auth` (Flask-WTF) for --app-name basic-auth.
    assert lines[0] == re.sub(r"^mlflow", "mlflow[auth]", mlflow_pin)
    # SQLAlchemy 2.1 maps postgresql:// to psycopg 3, 2.0 to psycopg2: both are installed.
    assert any(line.startswith("psycopg[binary]") for line in lines)
    assert any(line.startswith("psycopg2-binary") for line in lines)


def test_requirements_script_runs():
    out = subprocess.run(
        [sys.executable, str(DOCKER / "requirements_from_pyproject.py"), str(ROOT / "pyproject.toml"), "--extras", "gpu"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    assert any(line.startswith("ray[default,tune]") for line in out)
    assert any("and-cuda" in line for line in out)


# --------------------------------------------------------------------------- Kubernetes

def k8s_documents() -> dict[str, list[dict]]:
    docs = {}
    for path in sorted(K8S.glob("*.yaml")):
        docs[path.name] = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return docs


def k8s_objects(kind: str) -> list[dict]:
    return [d for docs in k8s_documents().values() for d in docs if d.get("kind") == kind]


def test_k8s_files_parse():
    docs = k8s_documents()
    assert {"raycluster.yaml", "rayjob.yaml", "mlflow.yaml", "secret.example.yaml", "storage.yaml"} <= set(docs)
    for name, objects in docs.items():
        assert objects, f"{name} is empty"
        for obj in objects:
            assert obj.get("apiVersion") and obj.get("kind") and obj.get("metadata", {}).get("name"), name


def _walk(node):
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def _assert_token_env(env: dict[str, dict], where: str):
    assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", where
    ref = env.get("RAY_AUTH_TOKEN", {}).get("valueFrom", {}).get("secretKeyRef")
    assert ref == {"name": "search-ray-auth", "key": "auth_token"}, where


@pytest.fixture(scope="module")
def raycluster() -> dict:
    (cluster,) = k8s_objects("RayCluster")
    return cluster


def test_raycluster_shape(raycluster):
    assert raycluster["apiVersion"] == "ray.io/v1"
    spec = raycluster["spec"]
    head = spec["headGroupSpec"]
    assert head["template"]["spec"]["containers"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"
    groups = spec["workerGroupSpecs"]
    assert groups and len({g["groupName"] for g in groups}) == len(groups)
    for group in groups:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        assert group["template"]["spec"]["containers"]
        assert "rayStartParams" in group


def test_raycluster_ray_version_matches_the_project_pin(raycluster):
    ray_dep = next(r for r in pyproject()["project"]["dependencies"] if re.match(r"^ray\b", r))
    lower = re.search(r">=\s*([0-9.]+)", ray_dep)[1]
    assert raycluster["spec"]["rayVersion"].startswith(lower)


def test_raycluster_token_auth_on_every_ray_container(raycluster):
    spec = raycluster["spec"]
    pods = [("head", spec["headGroupSpec"]["template"])] + [(g["groupName"], g["template"]) for g in spec["workerGroupSpecs"]]
    for name, template in pods:
        ray_container = template["spec"]["containers"][0]
        env = _env(ray_container)
        _assert_token_env(env, name)
        assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow:5000", name
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True, name
    if spec.get("enableInTreeAutoscaling"):
        _assert_token_env({e["name"]: e for e in spec["autoscalerOptions"]["env"]}, "autoscaler")


def test_raycluster_head_ports_and_gpu_group(raycluster):
    head = raycluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in head["ports"]} >= {6379, 8265, 10001}
    gpu_groups = [g for g in raycluster["spec"]["workerGroupSpecs"] if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"].get("limits", {})]
    assert gpu_groups and all(g["template"]["spec"]["containers"][0]["image"] != head["image"] for g in gpu_groups)


def test_rayjob_targets_the_cluster_with_the_token():
    (job,) = k8s_objects("RayJob")
    (cluster,) = k8s_objects("RayCluster")
    assert job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert spec["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
    entrypoint = spec["entrypoint"].split()
    assert entrypoint[:2] == ["search", "launch"]
    assert option(entrypoint, "--tracking-uri") == "http://mlflow:5000"
    storage = option(entrypoint, "--storage-path")
    assert storage and storage.startswith("/shared/"), "Tune's storage must be the volume every pod shares"
    pod = spec["submitterPodTemplate"]["spec"]
    assert pod["restartPolicy"] == "Never"
    _assert_token_env(_env(pod["containers"][0]), "submitter")


def test_mlflow_deployment():
    (deployment,) = [d for d in k8s_objects("Deployment") if d["metadata"]["name"] == "mlflow"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    argv = container.get("command", []) + container.get("args", [])
    assert argv[:2] == ["mlflow", "server"]
    assert "--serve-artifacts" in argv
    assert option(argv, "--host") == "0.0.0.0"
    assert option(argv, "--port") == "5000"
    backend = _env(container)["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]
    assert backend == {"name": "search-mlflow-db", "key": "backend-store-uri"}
    secret = next(s for s in k8s_objects("Secret") if s["metadata"]["name"] == "search-mlflow-db")
    assert secret["stringData"]["backend-store-uri"].startswith("postgresql://")
    services = {s["metadata"]["name"]: s for s in k8s_objects("Service")}
    assert any(p["port"] == 5000 for p in services["mlflow"]["spec"]["ports"])
    assert "postgres" in services
    assert any(s["metadata"]["name"] == "postgres" for s in k8s_objects("StatefulSet"))


def test_k8s_references_resolve():
    """Every Secret key and PersistentVolumeClaim the manifests use is defined in this folder."""
    secrets = {s["metadata"]["name"]: set(s.get("stringData", {})) | set(s.get("data", {})) for s in k8s_objects("Secret")}
    claims = {c["metadata"]["name"] for c in k8s_objects("PersistentVolumeClaim")}
    used_secrets, used_claims = 0, 0
    for docs in k8s_documents().values():
        for obj in docs:
            if obj["kind"] == "Secret":
                continue
            for node in _walk(obj):
                ref = node.get("secretKeyRef")
                if isinstance(ref, dict):
                    assert ref["key"] in secrets.get(ref["name"], set()), ref
                    used_secrets += 1
                pvc = node.get("persistentVolumeClaim")
                if isinstance(pvc, dict):
                    assert pvc["claimName"] in claims, pvc
                    used_claims += 1
    assert used_secrets and used_claims


# --------------------------------------------------------------------------- README

def test_readme_covers_the_operations():
    readme = (DOCKER / "README.md").read_text()
    for needle in (
        "docker compose -f docker/compose.yaml up -d --build",
        "ray job submit --address http://127.0.0.1:8265",
        "--scale ray-worker=",
        "--profile gpu",
        "compose.auth.yaml",
        "down -v",
        "kubectl apply",
        "port-forward",
        "RAY_AUTH_MODE=token",
        "What was and was not run",
    ):
        assert needle in readme, needle


# --------------------------------------------------------------------------- docker compose itself

def _docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _docker_compose_available(), reason="no docker client with the compose plugin")
@pytest.mark.parametrize(
    "args, env",
    [
        (["-f", "docker/compose.yaml"], BASE_ENV),
        (["-f", "docker/compose.yaml", "--profile", "gpu"], BASE_ENV),
        (["-f", "docker/compose.yaml", "-f", "docker/compose.auth.yaml"], AUTH_ENV),
    ],
)
def test_docker_compose_config(args, env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_", "POSTGRES_", "BIND_ADDRESS"))}
    result = subprocess.run(
        ["docker", "compose", *args, "config", "-q"], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    missing = subprocess.run(
        ["docker", "compose", *args, "config", "-q"], cwd=ROOT, env=clean, capture_output=True, text=True
    )
    assert missing.returncode != 0 and "RAY_AUTH_TOKEN" in missing.stderr
