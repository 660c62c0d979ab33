"""The predictors ``search evaluate`` compares on the test split, and the plain-words verdict on them.

For one model: the deterministic prediction and MC dropout (T samples). For a deep ensemble of
the search's seeds (``pipelines.ensemble``): the mean of the members' probabilities, and MC
dropout on every member. Each predictor is an array of probability samples ``(S, N, K)``: S = 1
for a deterministic one, the members for the ensemble, members x T for the ensemble with MC
dropout. Each can have a temperature of its own (``with_temperatures``), fitted on held-out
predictions of the same predictor (``fit_temperatures``): averaging dropout samples or members
softens the probabilities, so each needs its own T (Laves et al., 2019; Rahaman and Thiery,
2021). Metrics: ``uncertainty.summarize_predictors``.
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
    """Each predictor's temperature (keyed like ``tags.SCALED``: deterministic, mc, ensemble, ensemble_mc)
    and where they were fitted."""

    values: dict[str, float]
    fitted_on: str  # in words: which model, on which split


def fit_temperatures(predictions: Mapping[str, np.ndarray], y: Any, fitted_on: str) -> Temperature:
    """A temperature for each predictor that can have one, fitted on its predictive (the samples' mean)
    on held-out ``y``."""
    from pipelines.calibration import fit_temperature
    from pipelines.uncertainty import two_class_if_binary

    return Temperature({kind: fit_temperature(two_class_if_binary(p.mean(axis=0)), y)
                        for kind, p in predictions.items() if kind in tags.SCALED}, fitted_on)


def with_temperatures(predictions: Mapping[str, np.ndarray], temperature: Temperature | None) -> dict[str, np.ndarray]:
    """``predictions`` and, for each with a temperature, its scaled twin (``tags.SCALED``), in the table's order."""
    from pipelines.calibration import scaled
    from pipelines.uncertainty import two_class_if_binary

    out = dict(predictions)
    for kind, t in (temperature.values if temperature else {}).items():
        if kind in predictions:  # the temperature applies to the predictive (the samples' mean), as it was fitted
            out[tags.SCALED[kind]] = scaled(two_class_if_binary(predictions[kind].mean(axis=0)), t)[None]
    return {k: out[k] for k in LABELS if k in out}


def predict_all(model: Any, x: np.ndarray, *, mc_samples: int, seed: int, ensemble: Sequence[Any] = (),
                progress: Callable[[int, int, str], None] | None = None) -> dict[str, np.ndarray]:
    """Every predictor's probability samples on ``x``: ``model``'s, and its ensemble's when ``ensemble``
    lists members."""
    from pipelines import mc_dropout as mc

    out: dict[str, np.ndarray] = {}
    det = mc.deterministic_predict(model, x)
    out["deterministic"] = det[None]
    dropout = mc.has_dropout(model)
    if dropout:
        # One mask per MC sample shared by a chunk's examples: T sampled networks, each applied to
        # the inputs (the Bayesian reading of MC dropout). Each example's predictive distribution is
        # the same as with per-example masks, at a fraction of the random numbers (bench/).
        out["mc"] = mc.mc_predict(model, x, samples=mc_samples, seed=seed, shared_masks=True, progress=progress).samples
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
    with the deterministic model, raw and each with its own temperature, in plain words."""
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
    raw = [k for k in tags.SCALED if k != "deterministic"]
    lines.append(_against(metrics, "deterministic", raw, "Against the deterministic model"))
    lines.append(_against(metrics, "temperature", [tags.SCALED[k] for k in raw],
                          "Each with its own temperature, against the temperature-scaled deterministic model"))
    if temperature is not None and temperature.values:
        each = ", ".join(f"{LABELS[k]} {t:.3f}" for k, t in temperature.values.items())
        lines.append(f"Temperatures: {each}; fitted on {temperature.fitted_on}.")
    return " ".join(filter(None, lines))


def _against(metrics: Mapping[str, Mapping[str, float]], base: str, kinds: Sequence[str], words: str) -> str:
    """One sentence: each of ``kinds``' ECE and NLL beside ``base``'s (a negative difference is better)."""
    if base not in metrics or "ece" not in metrics[base]:
        return ""
    ref = metrics[base]
    parts = [f"{LABELS[k]} {metrics[k]['ece']:.4f} ({metrics[k]['ece'] - ref['ece']:+.4f}; NLL {metrics[k]['nll']:.4f})"
             for k in kinds if k in metrics and "ece" in metrics[k]]
    if not parts:
        return ""
    return f"{words} (ECE {ref['ece']:.4f}, NLL {ref['nll']:.4f}; lower is better): {', '.join(parts)}."
