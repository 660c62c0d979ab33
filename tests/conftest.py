"""Shared fixtures: a real local Ray (2 CPUs), a free loopback port, and a finished search store.

Everything is real: Ray runs in this process, MLflow writes a SQLite store under a temporary
folder, and a port is one the kernel just handed out on 127.0.0.1.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# A small space whose trials differ only in the learning rate: three trials, three epochs each.
STORE_SPACE = """\
description: a tiny space for the pipeline tests
params:
  n_hidden: 1
  n_neurons: 32
  dropout: 0.2
  optimizer: adam
  learning_rate: {choice: [0.003, 0.01]}
  batch_size: 64
  augment_shift: auto     # as the default space: the retrained, evaluated and served models shift in training
  epochs: 3
"""


def pick_free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def free_port() -> Callable[[], int]:
    """``free_port()`` gives a fresh free loopback port at each call."""
    return pick_free_port


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray with 2 CPUs for the module's tests (reused if one is already up)."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def search_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A finished 3-trial random search over ``STORE_SPACE`` on digits, run in process on a real Ray:
    ``{"uri": its store, "parent": its parent run id, "root": the folder holding both}``. One per test
    session, shared by the modules that read it; tests that add runs to it (retrain, evaluate) must
    not assume they are alone."""
    root = tmp_path_factory.mktemp("store")
    result = random_search(root, STORE_SPACE, num_samples=3, name="pipe")
    return {"uri": result.tracking_uri, "parent": result.parent_run_id, "root": root}


def random_search(root: Path, space_text: str, *, num_samples: int, name: str) -> Any:
    """A finished random FIFO search over ``space_text`` on digits, in process on a real Ray (started for it
    when none is running), into ``root``'s SQLite store; its ``LaunchResult``."""
    import ray

    from search.tune import LaunchOptions
    from search.tune.launch import launch

    space = root / "space.yaml"
    space.write_text(space_text)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        return launch(LaunchOptions.from_flat(
            space=str(space), num_samples=num_samples, searcher="random", scheduler="fifo", name=name, quiet=True,
            tracking_uri=f"sqlite:///{root}/mlflow.db", storage_path=str(root / "ray"),
        ))
    finally:
        if started:
            ray.shutdown()
