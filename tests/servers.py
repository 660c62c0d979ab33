"""Real processes for the tests: process-group trees, killing them whole, and ``mlflow server``.

Used by the tests that start servers and nodes on loopback (test_cluster, test_query); imports no
project code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import pick_free_port

MLFLOW = str(Path(sys.executable).parent / "mlflow")


# -- processes, by process group --------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, state), from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def group_tree(pgid: int) -> set[int]:
    """Live processes of process group ``pgid`` and all their descendants (Ray workers call setsid)."""
    table = _proc_table()
    pids = {pid for pid, (_, pg, state) in table.items() if pg == pgid and state != "Z"}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, _, state) in table.items():
            if ppid in pids and pid not in pids and state != "Z":
                pids.add(pid)
                grew = True
    return pids


def kill_group(pgid: int, timeout: float = 20.0) -> None:
    """SIGKILL process group ``pgid`` and its descendants, until none is left (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = group_tree(pgid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.3)


def cmdline(pid: int) -> list[str]:
    try:
        return Path("/proc", str(pid), "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


class MlflowServer:
    """``mlflow server`` on a fixed port and store; stop() and start() again, as an operator restarts it."""

    def __init__(self, root: Path, env: dict[str, str], *, store_uri: str | None = None,
                 serve_artifacts: bool = True) -> None:
        """Serve ``store_uri`` (default: ``root/mlflow.db``), with ``root/artifacts`` behind it if
        ``serve_artifacts``; logs go to ``root``."""
        self.root = root
        self.store_uri = store_uri or f"sqlite:///{root / 'mlflow.db'}"
        self.serve_artifacts = serve_artifacts
        self.port = pick_free_port()
        # The job runner (huey consumers) only serves MLflow's GenAI jobs: not needed, and costly here.
        self.env = {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        self.log_path = self.root / f"mlflow-server-{self.starts}.log"
        log = open(self.log_path, "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--backend-store-uri", self.store_uri, "--workers", "1",
             *(["--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts")] if self.serve_artifacts
               else [])],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.uri + "/health", timeout=3) as response:  # noqa: S310
                return response.status == 200
        except OSError:
            return False

    def wait_healthy(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.healthy():
                return
            assert self.proc is not None and self.proc.poll() is None, (
                f"mlflow server exited: {self.log_path.read_text()[-3000:]}"
            )
            time.sleep(0.5)
        raise AssertionError(f"mlflow server not healthy in {timeout} s: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            kill_group(self.proc.pid)
            self.proc.wait(timeout=10)
            self.proc = None

    def ensure_up(self) -> None:
        """A test that failed with the server stopped must not take the next test down with it."""
        if self.proc is None or self.proc.poll() is not None:
            self.stop()
            self.start()
        self.wait_healthy()
