"""The one rule for "best", used by the launch summary, the parent run's tags, ``search best``,
the description, retrain and evaluate. Pure: imports only the standard library."""

from __future__ import annotations

import math


def rank_key(value: float, tie_break: float | None, name: str, mode: str) -> tuple[float, float, str]:
    """Sort key, best first: the metric (by ``mode``), then the lower validation loss at the best
    epoch (a few hundred validation examples tie often), then the earlier trial name."""
    sign = -1.0 if mode == "max" else 1.0
    return (sign * value, math.inf if tie_break is None or not math.isfinite(tie_break) else tie_break, name)
