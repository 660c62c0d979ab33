"""The predictors ``search evaluate`` compares on the test split, and the plain-words verdict on them.

For one model: the deterministic prediction, MC dropout (T samples), the deterministic one with
temperature scaling, and MC dropout with a temperature of its own (Laves et al., 2019: averaging
dropout samples softens the probabilities, so MC dropout needs its own T, lower than the other). For a deep ensemble of the search's seeds (``pipelines.ensemble``):
the mean of the members' probabilities, and MC dropout on every member. Each predictor is an
array of probability samples ``(S, N, K)``: S = 1 for a deterministic one, the members for the
ensemble, members x T for the ensemble with MC dropout. Metrics: ``uncertainty.summarize_predictors``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from search.tracking import tags

LABELS = tags.PREDICTORS  # each predictor's name in words


@dataclass
class Temperature:
    """A temperature and where it was fitted; ``mc_value`` is MC dropout's own (None without dropout)."""

    value: float
    fitted_on: str  # in words: which model, on which split
    mc_value: float | None = None


def predict_all(model: Any, x: np.ndarray, *, mc_samples: int, seed: int, ensemble: Sequence[Any] = (),
                temperature: Temperature | None = None,
                progress: Callable[[int, int, str], None] | None = None) -> dict[str, np.ndarray]:
    """Every predictor's probability samples on ``x``: ``model``'s, and its ensemble's when ``ensemble``
    lists members."""
    from pipelines import mc_dropout as mc
    from pipelines.calibration import scaled
    from pipelines.uncertainty import two_class_if_binary

    out: dict[str, np.ndarray] = {}
    det = mc.deterministic_predict(model, x)
    out["deterministic"] = det[None]
    dropout = mc.has_dropout(model)
    if dropout:
        # One mask per MC sample shared by a chunk's examples: T sampled networks, each applied to
        # the inputs (the Bayesian reading of MC dropout). Each example's predictive distribution is
        # the same as with per-example masks, at a fraction of the random numbers (bench/).
        out["mc"] = mc.mc_predict(model, x, samples=mc_samples, seed=seed, shared_masks=True, progress=progress).samples
    if temperature is not None:
        out["temperature"] = scaled(two_class_if_binary(det), temperature.value)[None]
        if "mc" in out and temperature.mc_value is not None:
            # The temperature applies to the predictive (the samples' mean), as it was fitted.
            out["mc_temperature"] = scaled(two_class_if_binary(out["mc"].mean(axis=0)), temperature.mc_value)[None]
    if len(ensemble) > 1:
        out["ensemble"] = np.stack([mc.deterministic_predict(m, x) for m in ensemble])
        if all(mc.has_dropout(m) for m in ensemble):
            out["ensemble_mc"] = np.concatenate([
                mc.mc_predict(m, x, samples=mc_samples, seed=seed + 1 + i, shared_masks=True).samples
                for i, m in enumerate(ensemble)
            ])
    return out


def calibration_verdict(metrics: Mapping[str, Mapping[str, float]], temperature: Temperature | None = None) -> str:
    """Which predictor is best calibrated (ECE), by how much, and how MC dropout and the ensemble compare
    with the deterministic model, in plain words."""
    ece = {k: v["ece"] for k, v in metrics.items() if "ece" in v}
    if not ece:
        return ""
    order = sorted(ece, key=ece.__getitem__)
    best = order[0]
    lines = [f"Best calibrated on the test split: **{LABELS.get(best, best)}** (ECE {ece[best]:.4f})"]
    if len(order) > 1:
        second = order[1]
        lines[0] += (f", ahead of {LABELS.get(second, second)} ({ece[second]:.4f}); "
                     f"the worst is {LABELS.get(order[-1], order[-1])} ({ece[order[-1]]:.4f}).")
    else:
        lines[0] += "."
    det = ece.get("deterministic")
    for kind in ("mc", "temperature", "mc_temperature", "ensemble", "ensemble_mc"):
        if kind in ece and det is not None:
            diff = ece[kind] - det
            word = "better" if diff < 0 else ("worse" if diff > 0 else "no different")
            lines.append(f"{LABELS[kind]} is {word} calibrated than the deterministic model "
                         f"(ECE {ece[kind]:.4f} vs {det:.4f}, {diff:+.4f}); NLL {metrics[kind]['nll']:.4f} vs "
                         f"{metrics['deterministic']['nll']:.4f}.")
    if temperature is not None:
        mc_t = "" if temperature.mc_value is None else f" (MC dropout's own: {temperature.mc_value:.3f})"
        lines.append(f"Temperature T = {temperature.value:.3f}{mc_t}, fitted on {temperature.fitted_on}.")
    return " ".join(lines)
