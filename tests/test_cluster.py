"""A real multi-node Ray cluster on loopback, a real MLflow server, and the faults a cluster meets.

One module-wide stack is shared by every test: a Ray head and a second Ray node (token
authentication on, each node with its own --temp-dir: nodes on one host do not need to share
one), and an ``mlflow server`` with a SQLite store and served artifacts. ``search launch`` always
runs as a subprocess, so the driver is a separate process, as a user runs it.

Every process is started in a new session and cleaned up by its process group (plus the Ray
workers its raylet started, which Ray puts in sessions of their own), never with ``ray stop``:
other Ray instances on this machine are not ours to stop.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import pick_free_port
from servers import MlflowServer, cmdline, group_tree, kill_group

pytest.importorskip("ray")
pytest.importorskip("mlflow")

from search import tracking  # noqa: E402
from search.tune.trainable import EARLIER  # noqa: E402

pytestmark = [pytest.mark.slow]

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
MLFLOW = str(BIN / "mlflow")
SEARCH = [sys.executable, "-m", "search.cli"]
LAUNCH_TIMEOUT_S = 480


class RayNode:
    """One ``ray start`` (head or worker) in a session of its own."""

    def __init__(self, root: Path, label: str, env: dict[str, str], *, head_port: int | None = None,
                 address: str | None = None) -> None:
        self.label = label
        # Ray's socket paths live under the temp dir and must stay under 107 bytes (AF_UNIX), which
        # pytest's tmp paths can exceed; a short folder under /tmp keeps them in bounds.
        self.temp_dir = Path(tempfile.mkdtemp(prefix=f"r{label[0]}", dir="/tmp"))
        args = [RAY, "start", "--num-cpus=1", "--node-ip-address=127.0.0.1", f"--temp-dir={self.temp_dir}",
                "--disable-usage-stats", "--object-store-memory=200000000", f"--resources={json.dumps({label: 1})}"]
        if head_port:
            args += ["--head", f"--port={head_port}", "--include-dashboard=false",
                     f"--ray-client-server-port={pick_free_port()}", f"--dashboard-port={pick_free_port()}"]
        else:
            args += [f"--address={address}"]
        log = open(root / f"ray-start-{label}.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pgid = self.proc.pid
        self.log_path = root / f"ray-start-{label}.log"

    def wait_started(self, timeout: float = 240) -> None:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"ray start ({self.label}) did not finish in {timeout} s") from None
        assert rc == 0, f"ray start ({self.label}) failed: {self.log_path.read_text()[-3000:]}"

    @property
    def raylet_pid(self) -> int:
        for pid in group_tree(self.pgid):
            argv = cmdline(pid)
            if argv and argv[0].endswith("/raylet"):
                return pid
        raise AssertionError(f"no raylet of node {self.label} is running")

    @property
    def node_id(self) -> str:
        for arg in cmdline(self.raylet_pid):
            if arg.startswith("--node_id="):
                return arg.split("=", 1)[1]
        raise AssertionError(f"the raylet of node {self.label} has no --node_id")

    def kill(self) -> None:
        kill_group(self.pgid)


class Stack:
    def __init__(self, root: Path, env: dict[str, str], head: RayNode, node2: RayNode, server: MlflowServer,
                 port: int) -> None:
        self.root = root
        self.env = env
        self.head = head
        self.node2 = node2
        self.server = server
        self.address = f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("cluster")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32), RAY_USAGE_STATS_ENABLED="0",
               PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    server = MlflowServer(root / "mlflow", env)
    server.root.mkdir()
    nodes: list[RayNode] = []
    try:
        server.start()  # it starts slowly: let it come up while Ray starts
        port = pick_free_port()
        head = RayNode(root, "head", env, head_port=port)
        nodes.append(head)
        head.wait_started()
        node2 = RayNode(root, "node2", env, address=f"127.0.0.1:{port}")
        nodes.append(node2)
        node2.wait_started()
        server.wait_healthy()
        with pytest.MonkeyPatch.context() as mp:
            # This process polls MLflow while the server may be away: fail fast, poll again.
            mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
            yield Stack(root, env, head, node2, server, port)
    finally:
        server.stop()
        for node in reversed(nodes):
            node.kill()


# -- driving `search launch` and reading MLflow -----------------------------------------------
def launch_args(stack: Stack, name: str, *extra: str, space: str = "quick", num_samples: int = 4,
                max_epochs: int = 2, concurrency: int = 2) -> list[str]:
    return [*SEARCH, "launch", "--address", stack.address, "--tracking-uri", stack.server.uri, "--experiment", name,
            "--space", space, "--num-samples", str(num_samples), "--max-epochs", str(max_epochs),
            "--searcher", "random", "--scheduler", "fifo", "--concurrency", str(concurrency), "--name", name,
            "--storage-path", str(stack.root / "ray-results"), "-q", "--json", *extra]


class Driver:
    """A ``search launch`` subprocess in a session of its own."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.out = open(cwd / f"driver-{time.monotonic_ns()}.out", "w+")  # noqa: SIM115
        self.err = open(cwd / f"driver-{time.monotonic_ns()}.err", "w+")  # noqa: SIM115
        self.proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=self.out, stderr=self.err, start_new_session=True)

    def wait(self, timeout: float = LAUNCH_TIMEOUT_S) -> tuple[int, str, str]:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"search launch did not end in {timeout} s; stderr: {self.stderr()[-3000:]}") from None
        self.out.seek(0)
        return rc, self.out.read(), self.stderr()

    def stderr(self) -> str:
        self.err.flush()
        return Path(self.err.name).read_text()

    def stdout(self) -> str:
        self.out.flush()
        return Path(self.out.name).read_text()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        kill_group(self.proc.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def driver(args: list[str], stack: Stack, **env: str) -> Iterator[Driver]:
    d = Driver(args, {**stack.env, **env}, stack.root)
    try:
        yield d
    finally:
        if d.alive():
            d.kill()


def run_launch(args: list[str], stack: Stack, **env: str) -> tuple[int, str, str]:
    with driver(args, stack, **env) as d:
        return d.wait()


def trial_runs(uri: str, experiment: str) -> list[Any]:
    mlc = tracking.client(uri)
    exp = mlc.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return list(mlc.search_runs([exp.experiment_id], filter_string=f"tags.`{tracking.ROLE}` = 'trial'", max_results=1000))


def wait_for_runs(d: Driver, stack: Stack, experiment: str, ready: Any, what: str, timeout: float = 300) -> list[Any]:
    """Poll MLflow until ``ready(runs)`` holds; fail if the driver exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert d.alive(), (f"search launch exited (rc {d.proc.returncode}) before {what}; "
                           f"stdout: {d.stdout()[-1500:]}; stderr: {d.stderr()[-3000:]}")
        try:
            runs = trial_runs(stack.server.uri, experiment)
        except Exception:  # noqa: BLE001 (the experiment may be being created)
            runs = []
        if ready(runs):
            return runs
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout} s")


def stepped(runs: list[Any]) -> list[Any]:
    """Runs that logged at least one epoch."""
    return [r for r in runs if "val_accuracy" in r.data.metrics]


def assert_one_final_run_per_trial(uri: str, experiment: str, n: int) -> list[Any]:
    runs = trial_runs(uri, experiment)
    ids = [r.data.tags[tracking.TRIAL_ID] for r in runs]
    assert len(ids) == n and len(set(ids)) == n, sorted(ids)
    states = {r.data.tags[tracking.TRIAL_ID]: (r.info.status, r.data.tags.get(tracking.END_STATE)) for r in runs}
    assert all(s in ("FINISHED", "FAILED") and e for s, e in states.values()), states
    return runs


def assert_full_history(uri: str, runs: list[Any], epochs: int) -> None:
    """Every epoch of every run is in MLflow (a step may repeat where a trial re-ran it from a checkpoint)."""
    mlc = tracking.client(uri)
    for run in runs:
        steps = sorted({m.step for m in mlc.get_metric_history(run.info.run_id, "val_accuracy")})
        assert steps == list(range(1, epochs + 1)), (run.data.tags[tracking.TRIAL_ID], steps)


def patient_space(stack: Stack, *, slow: bool = False) -> str:
    """The quick space without early stopping, so trials last exactly --max-epochs (faults hit them running).

    ``slow``: batches of 4 and one step per compiled call, about 0.5 s an epoch instead of 0.05 s, for a
    fault that must land while a given trial is between epochs (a whole fast trial fits between two polls).
    """
    from search.space import load_space

    path = stack.root / f"quick-patient{'-slow' if slow else ''}.yaml"
    if not path.exists():
        source = load_space("quick").source
        assert "patience: 3" in source and "batch_size: 32" in source
        source = source.replace("patience: 3", "patience: 100")
        if slow:
            source = source.replace("batch_size: 32", "batch_size: 4\n  steps_per_execution: 1")
        path.write_text(source)
    return str(path)


# -- the tests ---------------------------------------------------------------------------------
def test_missing_or_wrong_token_is_a_one_line_error(stack: Stack) -> None:
    home = stack.root / "home-without-token"  # no ~/.ray/auth_token to fall back on
    home.mkdir(exist_ok=True)
    args = [*SEARCH, "launch", "--address", stack.address, "--tracking-uri", f"sqlite:///{stack.root}/token.db",
            "--space", "quick", "--num-samples", "1", "--max-epochs", "1", "--storage-path", str(stack.root / "r0"), "-q"]
    base = {k: v for k, v in stack.env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}
    cases = {
        "no auth settings": {},
        "token mode, no token": {"RAY_AUTH_MODE": "token"},
        "wrong token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)},
    }
    procs = {  # at once: each refused connection takes Ray ~20 s to give up on
        case: subprocess.Popen(args, env={**base, **extra, "HOME": str(home)}, cwd=stack.root, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
        for case, extra in cases.items()
    }
    try:
        for case, proc in procs.items():
            _, err = proc.communicate(timeout=240)
            lines = err.strip().splitlines()
            assert proc.returncode == 2, (case, err[-3000:])
            assert len(lines) == 1 and lines[0].startswith("error:"), (case, err[-3000:])
            assert "RAY_AUTH_TOKEN" in lines[0] and "RAY_AUTH_MODE=token" in lines[0], (case, lines[0])
            assert f"the Ray cluster at {stack.address} requires token authentication" in lines[0], (case, lines[0])
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                kill_group(proc.pid)


def test_search_runs_on_both_nodes_and_the_best_model_comes_back(stack: Stack, tmp_path: Path) -> None:
    stack.server.ensure_up()
    rc, out, err = run_launch(launch_args(stack, "c1"), stack)
    assert rc == 0, err[-3000:]
    result = json.loads(out)
    runs = assert_one_final_run_per_trial(stack.server.uri, "c1", 4)
    assert all(r.info.status == "FINISHED" for r in runs)
    nodes = {r.data.tags.get(tracking.NODE_ID) for r in runs}
    assert nodes == {stack.head.node_id, stack.node2.node_id}, (nodes, stack.head.node_id, stack.node2.node_id)
    assert {r.data.tags[tracking.NODE] for r in runs} != {""}

    import keras
    import mlflow

    best_run_id = result["best"]["run_id"]
    assert tracking.client(stack.server.uri).get_run(result["parent_run_id"]).data.tags["search.best_run_id"] == best_run_id
    local = mlflow.artifacts.download_artifacts(run_id=best_run_id, artifact_path="model/model.keras",
                                                tracking_uri=stack.server.uri, dst_path=str(tmp_path))
    model = keras.saving.load_model(local)
    assert model.output_shape[-1] == 10  # digits


def test_a_worker_node_dies_and_its_trials_are_retried_elsewhere(stack: Stack) -> None:
    stack.server.ensure_up()
    victim = RayNode(stack.root, "victim", stack.env, address=stack.address)
    try:
        victim.wait_started()
        victim_id = victim.node_id
        args = launch_args(stack, "worker-dies", "--max-failures", "2", space=patient_space(stack, slow=True),
                           num_samples=4, max_epochs=12, concurrency=3)
        with driver(args, stack) as d:
            on_victim = wait_for_runs(
                d, stack, "worker-dies",
                lambda runs: [r for r in stepped(runs) if r.data.tags.get(tracking.NODE_ID) == victim_id
                              and r.info.status == "RUNNING"],
                "trial running on the victim node",
            )
            hit = {r.data.tags[tracking.TRIAL_ID] for r in on_victim if r.data.tags.get(tracking.NODE_ID) == victim_id}
            victim.kill()  # the raylet's process group and the workers it started: the node is gone
            rc, _, err = d.wait()
        assert rc == 0, err[-3000:]
        runs = assert_one_final_run_per_trial(stack.server.uri, "worker-dies", 4)
        assert all(r.info.status == "FINISHED" for r in runs), {r.data.tags[tracking.TRIAL_ID]: r.info.status for r in runs}
        for run in runs:
            if run.data.tags[tracking.TRIAL_ID] in hit:  # moved to a surviving node and finished there
                assert run.data.tags[tracking.NODE_ID] in {stack.head.node_id, stack.node2.node_id}
        assert_full_history(stack.server.uri, runs, 12)
    finally:
        victim.kill()


def test_the_driver_dies_and_resume_completes_the_search(stack: Stack) -> None:
    stack.server.ensure_up()
    args = launch_args(stack, "driver-dies", space=patient_space(stack), num_samples=4, max_epochs=6)
    with driver(args, stack) as d:
        wait_for_runs(d, stack, "driver-dies", lambda runs: stepped(runs), "first child run with an epoch")
        os.killpg(d.proc.pid, signal.SIGKILL)
        d.proc.wait(timeout=30)
    before = trial_runs(stack.server.uri, "driver-dies")
    assert 1 <= len(before) < 4 or any(r.info.status == "RUNNING" for r in before)
    rc, _, err = run_launch(args + ["--resume"], stack)
    assert rc == 0, err[-3000:]
    runs = assert_one_final_run_per_trial(stack.server.uri, "driver-dies", 4)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert_full_history(stack.server.uri, runs, 6)
    parents = tracking.list_searches(stack.server.uri, "driver-dies")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


def _tune_epochs(stack: Stack, name: str) -> dict[str, list[int]]:
    """trial id -> the epochs Ray Tune received, from each trial's result.json (a coalesced report carries
    the epochs since the last one)."""
    out: dict[str, list[int]] = {}
    for path in Path(stack.root / "ray-results", name).glob("*/result.json"):
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                epochs = [int(r["epoch"]) for r in row.get(EARLIER, [])] + [int(row["epoch"])]
                out.setdefault(row["trial_id"], []).extend(epochs)
    return out


def test_the_tracking_server_restarts_and_no_metric_is_lost(stack: Stack) -> None:
    stack.server.ensure_up()
    epochs = 8
    args = launch_args(stack, "server-restarts", "--tracking-retry-s", "400", space=patient_space(stack),
                       num_samples=4, max_epochs=epochs)
    with driver(args, stack) as d:
        wait_for_runs(d, stack, "server-restarts", lambda runs: stepped(runs), "first child run with an epoch")
        stack.server.stop()
        time.sleep(5)
        assert d.alive(), d.stderr()[-3000:]
        stack.server.start()
        stack.server.wait_healthy()
        rc, _, err = d.wait()
    assert rc == 0, err[-3000:]
    assert "MLflow unavailable" in err  # the Tracker did meet the outage, and retried
    runs = assert_one_final_run_per_trial(stack.server.uri, "server-restarts", 4)
    assert all(r.info.status == "FINISHED" for r in runs)
    mlc = tracking.client(stack.server.uri)
    reported = _tune_epochs(stack, "server-restarts")
    for run in runs:
        trial_id = run.data.tags[tracking.TRIAL_ID]
        assert sorted(reported[trial_id]) == list(range(1, epochs + 1)), reported[trial_id]
        for key in ("val_accuracy", "loss", "epoch_time_s"):
            steps = sorted(m.step for m in mlc.get_metric_history(run.info.run_id, key))
            assert steps == list(range(1, epochs + 1)), (trial_id, key, steps)
        assert run.data.metrics["epochs_run"] == epochs


def test_the_tracking_server_stays_down_then_resume_completes(stack: Stack) -> None:
    stack.server.ensure_up()
    args = launch_args(stack, "server-down", "--tracking-retry-s", "10", space=patient_space(stack),
                       num_samples=4, max_epochs=10)
    try:
        with driver(args, stack) as d:
            wait_for_runs(d, stack, "server-down", lambda runs: stepped(runs), "first child run with an epoch")
            stack.server.stop()
            started = time.monotonic()
            rc, _, err = d.wait(timeout=180)
            stopped_after = time.monotonic() - started
        lines = err.strip().splitlines()
        assert rc == 2, err[-3000:]
        assert lines[-1].startswith("error: MLflow did not accept"), err[-3000:]
        assert "search launch --name server-down --resume" in lines[-1], lines[-1]
        assert stopped_after < 120, stopped_after
    finally:
        stack.server.start()
        stack.server.wait_healthy()
    parents = tracking.list_searches(stack.server.uri, "server-down")
    assert len(parents) == 1 and parents[0].info.status == "RUNNING"  # nothing was marked while the server was away
    rc, _, err = run_launch(args + ["--resume"], stack)
    assert rc == 0, err[-3000:]
    runs = assert_one_final_run_per_trial(stack.server.uri, "server-down", 4)
    assert_full_history(stack.server.uri, runs, 10)
    parents = tracking.list_searches(stack.server.uri, "server-down")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
