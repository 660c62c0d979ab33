"""The engine: Ray Tune runs a search's trials, locally or on a cluster.

- ``options``: the grouped settings (``LaunchOptions``) and their validation;
- ``algorithms``: searchers and schedulers as registries;
- ``session``: connect to or start Ray, and size the search;
- ``trainable``: one trial, on a worker (with its checkpoint policy);
- ``callbacks``: the MLflow writer and the live view, on the driver;
- ``results``: the one adapter over Ray's ``ResultGrid``, and ``SearchResult``;
- ``summary``: what the search writes on its parent run;
- ``kerastuner``, ``kt_oracle``: the ``bayes`` searcher, KerasTuner's oracle driven by Ray;
- ``launch``: the lifecycle of one search.

Ray is imported by the modules that run the search, not here: ``from search.tune import
LaunchOptions`` is cheap; ``from search.tune.launch import launch`` loads the engine.
"""

from __future__ import annotations

from typing import Any

from search.tune.options import LaunchOptions

__all__ = ["LaunchOptions", "SearchResult", "TrialSummary", "ui_command"]

_LAZY = {"SearchResult": "search.tune.results", "TrialSummary": "search.tune.results",
         "ui_command": "search.tune.results"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'search.tune' has no attribute {name!r}")
