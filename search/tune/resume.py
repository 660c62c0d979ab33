"""What ``--resume`` takes from the recorded search, and what it refuses.

A resumed search continues the search that was started: its space (the recorded YAML), dataset,
searcher, scheduler, budget and seed come from its parent run. A flag given on resume that
contradicts the record is refused with one line, before anything is touched; a search that
already finished is not reopened. Ray's ``Tuner.restore`` cannot change a search's budget, so
another ``--num-samples`` is refused too, with what to do instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from search.errors import SearchError
from search.tracking import SearchRecord, tags
from search.tune.options import LaunchOptions

if TYPE_CHECKING:
    from search.space import Space


def _optional_int(text: str) -> int | None:
    return int(text) if text not in ("", "None", "null") else None


# option -> (the parent run's param that records it, how to read it back)
RECORDED: dict[str, tuple[str, Callable[[str], Any]]] = {
    "space": ("space", str),
    "dataset": ("dataset", str),
    "data_dir": ("data_dir", lambda v: v or None),
    "target": ("target", str),
    "task": ("task", str),
    "classes": ("classes", lambda v: v or None),
    "train_limit": ("train_limit", _optional_int),
    "num_samples": ("num_samples", int),
    "searcher": ("searcher", str),
    "transfer_from": ("transfer_from", lambda v: v or None),
    "warm_start": ("warm_start", lambda v: tuple(json.loads(v)) if v else ()),
    "scheduler": ("scheduler", str),
    "metric": ("metric", str),
    "mode": ("mode", str),
    "seed": ("seed", int),
    "max_epochs": ("max_epochs_option", _optional_int),
    "concurrency": ("concurrency", int),
    "cpus_per_trial": ("cpus_per_trial", float),
    "gpus_per_trial": ("gpus_per_trial", float),
}


def resumed_options(opts: LaunchOptions, record: SearchRecord) -> LaunchOptions:
    """``opts`` with the recorded settings; a ``SearchError`` for a given flag that differs."""
    if record.parent.info.status == "FINISHED":
        raise SearchError(f"search {record.name} already finished (run {record.run_id}); there is nothing to resume: "
                          "start a new search with another --name")
    current = {**opts.flat(), "mode": opts.search.mode}
    changes: dict[str, Any] = {}
    conflicts: list[str] = []
    for option, (param, parse) in RECORDED.items():
        if param not in record.params:
            continue  # recorded by an older version: the flag's value stands
        recorded = parse(record.params[param])
        given = opts.given is None or option in opts.given
        if given and current[option] is not None and current[option] != recorded:
            flag = "--" + option.replace("_", "-")
            conflicts.append(f"{flag} {current[option]} (the search has {recorded})")
        changes[option] = recorded
    if conflicts:
        raise SearchError(
            f"search {record.name} was started with other settings: {'; '.join(conflicts)}. A resumed search keeps "
            "its settings: drop those flags to continue it, or start a new search with another --name"
        )
    return LaunchOptions.from_flat(given=opts.given, **{**opts.flat(), **changes})


def recorded_space(record: SearchRecord) -> Space | None:
    """The space the search ran over, from its ``space.yaml`` artifact (None if it has none)."""
    from search.space import parse_space

    text = record.artifact_text(tags.SPACE_ARTIFACT)
    if text is None:
        return None
    name = record.tags.get(tags.SPACE) or record.params.get("space", "space")
    return parse_space(text, name=name, origin=f"{record.params.get('space', name)} (as search {record.name} recorded it)")
