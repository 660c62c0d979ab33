"""The Ray session: join a cluster or start a local Ray, explain refused connections, size the search.

Ray is imported inside the functions, so the CLI can import this module for free.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from search.errors import ClusterError, SearchError
from search.tune.options import Resources

log = logging.getLogger(__name__)
# The local Ray a search starts has no idle workers started ahead of time. Ray would start one per CPU,
# but Ray Tune gives its trial actors a runtime_env of their own (PL_DISABLE_FORK), so they never run
# in those: Ray starts fresh workers for them and ends the idle ones. Not starting them saved about
# 1.3 s of a 2-trial search's wall on 2 cores (docs/benchmarks.md).
# Its workers run at the priority of the command that started it, as KerasTuner's or Optuna's trials
# run in the user's process: at Ray's default (nice 15) any other busy process on the machine took
# the cores from the trials (a bare fit beside a trial ran 1.5-1.7x faster per epoch; 1.04-1.12x at 0).
_LOCAL_RAY = {"enable_worker_prestart": False, "prestart_worker_first_driver": False, "worker_niceness": 0}
_CONNECTED_HERE = False  # connect() called ray.init in this process: ``released`` may end that connection


def running_local_ray() -> str | None:
    """The address of the Ray that ``ray start`` left running on this machine, if one answers: where
    ``ray.init()`` with no address goes (Ray's lookup: ``$RAY_ADDRESS``, then this one)."""
    import socket

    try:
        address = Path(tempfile.gettempdir(), "ray", "ray_current_cluster").read_text().strip()
        host, _, port = address.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=1.0):
            return address
    except (OSError, ValueError):
        return None


def connect(address: str | None, *, num_cpus: int | None = None, quiet: bool = True) -> str | None:
    """Join the Ray cluster at ``address`` (or ``$RAY_ADDRESS``), else the Ray that ``ray start`` left
    running on this machine, else start a local Ray. Returns the address of a running local Ray it
    joined (it skips Ray's start, about 5 s: docs/benchmarks.md), else None."""
    import ray

    if ray.is_initialized():
        return None
    address = address or os.environ.get("RAY_ADDRESS") or None
    running = None if address else running_local_ray()
    if not log.isEnabledFor(logging.INFO):  # Ray's start-up notices (token auth, dashboard) are not results
        logging.getLogger("ray").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Checkpoints are kept per improvement; Ray's hint about snapshot frequency is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Trials inherit the driver's env: keep TF quiet in every worker.
    runtime_env = {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "3", "ABSL_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}}
    kwargs: dict[str, Any] = {
        "log_to_driver": log.isEnabledFor(logging.INFO),  # worker output only with -v
        # ray.init sets the "ray" logger to this level: WARNING would undo the ERROR above (its notices
        # about token auth or unloggable values are not the user's results); -v shows them.
        "logging_level": logging.INFO if log.isEnabledFor(logging.INFO) else logging.ERROR,
        "runtime_env": runtime_env,
    }
    if address:
        _check_listening(address)
    try:
        if address:
            # Ray's C++ client logs every refused attempt (InvalidAuthToken, ...) straight to fd 2 for
            # 20 s; keep that off the terminal, and give it back only if the connection succeeds.
            with _captured_stderr() as captured:
                ray.init(address=address, **kwargs)
            if captured.text:
                sys.stderr.write(captured.text)
        elif running:
            ray.init(address=running, **kwargs)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, _system_config=_LOCAL_RAY, **kwargs)
    except Exception as err:  # noqa: BLE001 (ray raises many types for a refused connection)
        raise ClusterError(_explain_connect_error(address or running, err)) from None
    global _CONNECTED_HERE
    _CONNECTED_HERE = True
    return running


class released:
    """``with released():`` stops the Ray that ``connect`` connected this process to (a local Ray it started,
    or the cluster it joined) with ``ray.shutdown()`` in a thread while the block runs, and waits for it at
    the end. Ray stops its processes one after another and waits up to a second for each: about 1.5 s, spent
    mostly waiting, which the block's work fills. A connection ``connect`` found open is left as it was."""

    def __enter__(self) -> None:
        global _CONNECTED_HERE
        self._thread: threading.Thread | None = None
        if _CONNECTED_HERE:
            _CONNECTED_HERE = False
            self._thread = threading.Thread(target=_shutdown, name="search-ray-shutdown", daemon=True)
            self._thread.start()

    def __exit__(self, *exc: Any) -> None:
        if self._thread is not None:
            self._thread.join()


def _shutdown() -> None:
    import ray

    try:
        ray.shutdown()
    except Exception as err:  # noqa: BLE001 (Ray's own atexit hook tries again at exit)
        log.warning("ray.shutdown failed: %s", err)


def _check_listening(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds when nothing listens at a ``HOST:PORT`` (or ``ray://HOST:PORT``) address: Ray
    itself retries a dead address for minutes before it gives up."""
    import socket

    target = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or address in ("auto", "local"):
        return  # "auto" and other forms are Ray's to resolve
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as err:
        raise ClusterError(f"nothing answers at the Ray address {address} ({err.strerror or err}); start the cluster "
                           "(ray start --head) or fix --address (or RAY_ADDRESS)") from None


class _captured_stderr:
    """Redirect file descriptor 2 (C++ logs included) to a temporary file; ``.text`` after."""

    text = ""

    def __enter__(self) -> _captured_stderr:
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile(mode="w+b")
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode(errors="replace")
        self._file.close()
        if exc[0] is not None and self.text:
            log.debug("Ray's output while connecting:\n%s", self.text)


# Ray reports a refused token as a ConnectionError whose cause holds the AuthenticationError.
_AUTH_MARKERS = ("invalidauthtoken", "authenticationerror", "unauthenticated", "authentication token")


def _is_auth_error(err: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = f"{type(current).__name__}: {current}".lower()
        if any(marker in text for marker in _AUTH_MARKERS):
            return True
        current = current.__cause__ or current.__context__
    return False


def _explain_connect_error(address: str | None, err: Exception) -> str:
    text = str(err)
    if _is_auth_error(err):
        mode = os.environ.get("RAY_AUTH_MODE", "")
        has_token = bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                         or Path("~/.ray/auth_token").expanduser().is_file())
        if mode.lower() != "token":
            given = f"RAY_AUTH_MODE is {mode!r}, so no token was sent; " if mode else "no token was sent; "
        else:
            given = "the token given was refused; " if has_token else "no token was found; "
        return (
            f"the Ray cluster at {address} requires token authentication: {given}set RAY_AUTH_MODE=token and "
            "RAY_AUTH_TOKEN (or put the token in ~/.ray/auth_token) to the cluster's token"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    if address:
        return f"cannot connect to the Ray cluster at {address}: {first}; check --address (or RAY_ADDRESS)"
    return f"cannot start a local Ray: {first}"


def resolve_concurrency(resources: Resources, num_samples: int) -> int:
    """How many trials run at once; an error if the cluster cannot run that many."""
    import ray

    cluster = ray.cluster_resources()
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    fit = int(cpus // resources.cpus_per_trial) if resources.cpus_per_trial else num_samples
    if resources.gpus_per_trial:
        if gpus < resources.gpus_per_trial:
            raise SearchError(f"--gpus-per-trial {resources.gpus_per_trial:g}, but the cluster has {gpus:g} GPUs; use 0 on a CPU-only cluster")
        fit = min(fit, int(gpus // resources.gpus_per_trial))
    if fit < 1:
        raise SearchError(f"--cpus-per-trial {resources.cpus_per_trial:g} is more than the cluster's {cpus:g} CPUs")
    if resources.concurrency is None:
        return max(1, min(fit, num_samples))
    if resources.concurrency > fit:
        raise SearchError(
            f"--concurrency {resources.concurrency} needs {resources.concurrency * resources.cpus_per_trial:g} CPUs at "
            f"{resources.cpus_per_trial:g} per trial, but the cluster has {cpus:g}; lower --concurrency or --cpus-per-trial"
        )
    return resources.concurrency


class quiet_ray_output:
    """Ray Tune prints its own tables and hints on stdout; keep stdout for results. With ``quiet``,
    its log of each failed trial (a traceback) stays off the terminal too: the reasons are in MLflow."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __enter__(self) -> None:
        self._stdout = sys.stdout
        sys.stdout = sys.stderr if not self.quiet else open(os.devnull, "w")  # noqa: SIM115
        self._level = logging.getLogger("ray.tune").level
        if self.quiet:
            logging.getLogger("ray.tune").setLevel(logging.CRITICAL)

    def __exit__(self, *exc: Any) -> None:
        if sys.stdout is not sys.stderr:
            sys.stdout.close()
        sys.stdout = self._stdout
        logging.getLogger("ray.tune").setLevel(self._level)
