"""Scratch folders that a killed process does not leave behind for good.

Every temporary folder the tool makes (checkpoints on the workers, the KerasTuner oracle's files,
artifacts on their way to MLflow) goes in ``<tmp>/search-scratch-<uid>/<pid>/``: one folder per
process. A process ended normally removes its own folders; one killed with SIGKILL cannot, so
``sweep`` (run as a search starts, and as each trial starts on its node) removes the folders of
processes that no longer exist. Standard library only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def root() -> Path:
    """The folder that holds every process's scratch folders, for this user."""
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return Path(tempfile.gettempdir()) / f"search-scratch-{uid}"


def make(prefix: str) -> str:
    """A new empty folder in this process's scratch; the caller removes it."""
    own = root() / str(os.getpid())
    own.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix=prefix, dir=own)


@contextlib.contextmanager
def folder(prefix: str) -> Iterator[str]:
    """A scratch folder for the ``with`` block, removed after it."""
    path = make(prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process under a reused pid: leave it
        return True
    return True


def sweep() -> int:
    """Remove the scratch of processes that have ended; the number of process folders removed."""
    removed = 0
    try:
        entries = list(root().iterdir())
    except FileNotFoundError:
        return 0
    for entry in entries:
        if entry.name.isdigit() and int(entry.name) != os.getpid() and not _alive(int(entry.name)):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
    return removed
