"""``--warm-start``: the finished trials of earlier searches, as evaluated points for a new searcher.

``gather`` reads each earlier search's trial runs from MLflow (their config and their best epoch's
value of the metric, the value "best" ranks by) and keeps those that are points of the new space,
as searcher values (``Space.encode``). Trials outside the space are skipped and counted, with the
first reason. The searcher factories (``search.tune.algorithms``) hand the points to the
searcher: Optuna's ``add_trials``, the KerasTuner oracle's completed trials. Reads MLflow only
through ``search.tracking``; imports nothing heavy.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from search.errors import SearchError, SpaceError, TrackingError
from search.tracking import SearchRecord, tags
from search.tracking.record import config_of

if TYPE_CHECKING:
    from search.space import Space

log = logging.getLogger(__name__)
RUN_ID = re.compile(r"[0-9a-f]{32}")
# A budget more than a choice (--max-epochs sets it too): where the new space does not sample it, an
# earlier trial counts whatever it was.
BUDGET_KEYS = ("epochs",)


@dataclass(frozen=True)
class Evaluated:
    """One earlier trial: its searcher values in the new space and its score."""

    values: dict[str, Any]
    score: float
    source: str  # the trial's run id


@dataclass
class WarmStart:
    """What the earlier searches give the new one."""

    points: list[Evaluated] = field(default_factory=list)
    searches: list[SearchRecord] = field(default_factory=list)
    outside: int = 0  # finished trials whose config is not a point of the new space
    unscored: int = 0  # trials without a finite value of the metric (failed, or stopped before one)
    first_reason: str = ""

    @property
    def skipped(self) -> int:
        return self.outside + self.unscored

    def summary(self) -> str:
        """One line for stderr and the description: what was taken, and what was skipped and why."""
        names = ", ".join(s.name for s in self.searches)
        text = f"warm start: {len(self.points)} trials from {names}"
        parts = []
        if self.outside:
            parts.append(f"{self.outside} outside the space (the first: {self.first_reason})")
        if self.unscored:
            parts.append(f"{self.unscored} without a result")
        return text + (f"; skipped {'; '.join(parts)}" if parts else "")


def find_search(uri: str, experiment: str, ref: str) -> SearchRecord:
    """The search ``ref`` names: a parent run id, else a search name in ``experiment``."""
    try:
        if RUN_ID.fullmatch(ref):
            return SearchRecord.find(uri, experiment, run_id=ref)
        return SearchRecord.find(uri, experiment, name=ref)
    except TrackingError as err:
        raise SearchError(f"--warm-start {ref}: {err}") from None


def gather(uri: str, experiment: str, refs: Sequence[str], space: Space, *, metric: str) -> WarmStart:
    """The evaluated points of the searches ``refs`` in ``space``."""
    out = WarmStart()
    key = tags.best_metric(metric)
    for ref in refs:
        record = find_search(uri, experiment, ref)
        if record.metric != metric:
            raise SearchError(f"--warm-start {ref}: that search optimized {record.metric}, this one {metric}; its "
                              f"trials' scores do not carry over: warm-start with the same --metric")
        if record.run_id in {s.run_id for s in out.searches}:
            continue
        out.searches.append(record)
        for run in record.children(tags.ROLE_TRIAL):
            score = run.data.metrics.get(key)
            if score is None or not math.isfinite(score):
                out.unscored += 1
                continue
            try:
                values = space.encode(config_of(run), budget=BUDGET_KEYS)
            except SpaceError as err:
                out.outside += 1
                out.first_reason = out.first_reason or f"{run.info.run_name}: {str(err).split(': ', 1)[-1]}"
                continue
            out.points.append(Evaluated(values, float(score), run.info.run_id))
    return out
