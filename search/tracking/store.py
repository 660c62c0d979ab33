"""The tracking store: resolve its URI, check it can be used, open a client, retry writes.

Trials and later commands run in other directories and on other machines, so a tracking URI is
always made absolute here. mlflow is imported inside the functions (only ``search/tracking/``
imports it at all), so importing this module is cheap.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from search.errors import TrackingError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
T = TypeVar("T")


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite in the working directory; never relative.

    Trials and later commands run in other directories, so a relative ``sqlite:///mlflow.db``
    would point somewhere else there. A bare path ending in ``.db`` is a SQLite file. Folder
    (``file:``) stores are refused: MLflow 3 no longer accepts them.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https", "databricks", "postgresql", "mysql", "mssql"):
        return uri
    if parsed.scheme == "" and Path(uri).suffix in (".db", ".sqlite", ".sqlite3"):
        return f"sqlite:///{Path(uri).expanduser().resolve()}"
    if parsed.scheme == "sqlite":
        path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else uri[len("sqlite://") :]
        if path in ("", ":memory:"):
            raise TrackingError("an in-memory SQLite store cannot be shared with trials; give a file, e.g. sqlite:///mlflow.db")
        return f"sqlite:///{Path(path).expanduser().resolve()}"
    if parsed.scheme in ("", "file"):
        raise TrackingError(
            f"{uri} is a folder store, which MLflow 3 does not accept; give a SQLite file "
            "(sqlite:///PATH/mlflow.db) or a tracking server (http://HOST:PORT)"
        )
    raise TrackingError(f"unsupported tracking URI {uri!r}; use sqlite:///PATH/mlflow.db or http(s)://HOST:PORT")


def check_reachable(uri: str, timeout: float = 5.0, *, must_exist: bool = False) -> None:
    """Raise ``TrackingError`` unless the store at ``uri`` can be used now (and, with ``must_exist``,
    already holds a store: commands that only read must not create an empty one)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (user's own server)
                if response.status != 200:
                    raise TrackingError(f"MLflow server at {uri} answered {response.status} on /health")
        except urllib.error.HTTPError as err:
            if err.code in (401, 403):
                raise TrackingError(
                    f"MLflow server at {uri} refused us ({err.code}); set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
                ) from None
            raise TrackingError(f"MLflow server at {uri} answered {err.code} on /health; is it an MLflow server?") from None
        except (urllib.error.URLError, OSError, socket.timeout) as err:
            reason = getattr(err, "reason", err)
            raise TrackingError(
                f"cannot reach the MLflow tracking server at {uri} ({reason}); start it, or pass another --tracking-uri"
            ) from None
    elif parsed.scheme == "sqlite":
        path = Path(uri[len("sqlite:///") :])
        if path.is_dir():
            raise TrackingError(f"the SQLite store {uri} is a folder; give a file in it, e.g. sqlite:///{path / 'mlflow.db'}")
        if not path.parent.is_dir() or not os.access(path.parent, os.W_OK):
            raise TrackingError(f"cannot write the SQLite store {uri}: {path.parent} is not a writable folder")
        if must_exist and not path.is_file():
            raise TrackingError(f"no tracking store at {uri}; run `search launch` first, or pass the store with --tracking-uri")
        if path.is_file() and not _is_sqlite(path):
            raise TrackingError(f"{path} is not a SQLite database; give the mlflow.db that `search launch` wrote")


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError:
        return False
    return head == b"SQLite format 3\x00" or head == b""  # an empty file is one SQLite will create tables in


def client(uri: str) -> MlflowClient:
    """An ``MlflowClient`` for ``uri`` (which must already be resolved)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri)


def retrying(fn: Callable[[], T], *, deadline_s: float, what: str) -> T:
    """Call ``fn`` until it succeeds or ``deadline_s`` seconds pass (a tracking server restart)."""
    start = time.monotonic()
    delay = 0.5
    while True:
        try:
            return fn()
        except Exception as err:  # noqa: BLE001 (mlflow raises many types for a lost connection)
            if _is_user_error(err):  # refused outright: no retry, and no deadline to name
                raise TrackingError(f"MLflow did not accept {what}: {_first_line(err)}") from None
            if time.monotonic() - start + delay > deadline_s:
                raise TrackingError(f"MLflow did not accept {what} within {deadline_s:.0f} s: {_first_line(err)}") from None
            log.warning("MLflow unavailable (%s); retrying %s in %.1f s", _first_line(err), what, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def _is_user_error(err: Exception) -> bool:
    from mlflow.exceptions import MlflowException

    code = getattr(err, "error_code", "")
    return isinstance(err, MlflowException) and code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    if text and ("NewConnectionError" in text[0] or "Connection refused" in text[0]):
        return "connection refused"  # urllib3's 300-character account of it says no more
    return text[0][:300] if text else type(err).__name__


def git_commit(path: Path | None = None) -> str | None:
    """The git commit of the working directory, if it is a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=path or Path.cwd(), capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def experiment_id(uri: str, experiment: str) -> str | None:
    """The id of ``experiment`` in the store at ``uri``, or None if it does not exist."""
    exp = client(uri).get_experiment_by_name(experiment)
    return exp.experiment_id if exp is not None else None
