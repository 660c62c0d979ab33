"""The parent run's description (``mlflow.note.content``): markdown sections, with UI links.

A search's description starts with its settings (``search_overview``); ``### `` sections are
added as the work goes on: the best trial, retraining, evaluation (``SECTIONS``, in that
order). ``set_section`` replaces one section (or adds it in order), so each command rewrites
only its own. Pure functions of plain values: no mlflow here (``Tracker.update_section``
writes the result).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from search.plots.numbers import (
    GROUPS,
    NA,
    as_text,
    group_stats,
    is_finite,
    short_number,
)
from search.tracking import tags
from search.tracking.ranking import rank_key

SECTIONS = ("Best trial", "Importance", "Retrain", "Evaluate")


def run_link(experiment_id: str, run_id: str, text: str, artifact: str | None = None) -> str:
    """A markdown link into the MLflow UI, relative to the page (``#/experiments/ID/runs/RUN``)."""
    target = f"#/experiments/{experiment_id}/runs/{run_id}" + (f"/artifacts/{artifact}" if artifact else "")
    return f"[{_md(text)}]({target})"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("[", "\\[").replace("]", "\\]")


def set_section(note: str, heading: str, body: str, order: Sequence[str] = SECTIONS) -> str:
    """``note`` with its ``### heading`` section replaced by ``body`` (or added, in ``order``)."""
    lines = (note or "").rstrip("\n").split("\n") if note else []
    starts = [i for i, line in enumerate(lines) if line.startswith("### ")]

    def end_of(i: int) -> int:
        return next((j for j in starts if j > i), len(lines))

    block = [f"### {heading}", "", *body.strip("\n").split("\n"), ""]
    for i in starts:
        if lines[i][4:].strip() == heading:
            return "\n".join(lines[:i] + block + lines[end_of(i):]).rstrip("\n") + "\n"
    rank = order.index(heading) if heading in order else len(order)
    later = [i for i in starts if lines[i][4:].strip() in order and order.index(lines[i][4:].strip()) > rank]
    at = later[0] if later else len(lines)
    head = lines[:at]
    if head and head[-1].strip():
        head = [*head, ""]
    return "\n".join(head + block + lines[at:]).rstrip("\n") + "\n"


def config_table(config: Mapping[str, Any], keys: Sequence[str] | None = None) -> str:
    """A two-column markdown table of ``config`` (only ``keys``, in that order, when given)."""
    rows = ["| key | value |", "|---|---|"]
    for key in keys if keys is not None else list(config):
        if key in config:
            value = config[key]
            rows.append(f"| `{key}` | {_md(short_number(value) if isinstance(value, float) else as_text(value))} |")
    return "\n".join(rows)


def best_section(
    *,
    experiment_id: str,
    parent_run_id: str,
    trials: Sequence[Mapping[str, Any]],
    metric: str,
    mode: str,
    wall_time_s: float | None = None,
    plots: Sequence[str] = (),
    defaults: Mapping[str, Any] | None = None,
) -> str:
    """The ``Best trial`` section: the best trial (linked), its config, the plots, and what won."""
    scored = [t for t in trials if is_finite(t.get("value"))]
    failed = sum(t.get("state") == "failed" for t in trials)
    stopped = sum(t.get("state") == "stopped_early" for t in trials)
    took = f" in {wall_time_s:.0f} s" if wall_time_s is not None else ""
    counts = f"{len(trials)} trials ({failed} failed, {stopped} stopped early){took}"
    if not scored:
        return f"No trial reported {metric}: {counts}."
    best = min(scored, key=lambda t: rank_key(float(t["value"]), t.get("tie_break"), str(t.get("name") or ""), mode))
    link = run_link(experiment_id, best["run_id"], best.get("name") or best["run_id"]) if best.get("run_id") else best.get("name")
    epoch = f" at epoch {best['best_epoch']}" if best.get("best_epoch") is not None else ""
    configs = [t["config"] for t in trials]
    varying = [k for k in best["config"] if len({json.dumps(c.get(k, NA), default=str) for c in configs}) > 1]
    lines = [f"{link}: **{metric} {float(best['value']):.4f}**{epoch}, the best of {counts}.", ""]
    if varying and len(varying) < len(best["config"]):
        lines += ["What the search chose (the keys its trials differed in; the rest is in `best_config.json`):", ""]
        lines += [config_table(best["config"], varying), ""]
    else:
        lines += [config_table(best["config"]), ""]
    if len(trials) > 1:
        values = [t.get("value") for t in trials]
        lines += [f"Mean {metric} by group, best first:", ""]
        for name, keys in GROUPS.items():
            stats = [g for g in group_stats(configs, values, keys, mode=mode, defaults=defaults) if g.mean is not None]
            if len(stats) > 1:
                cells = [f"{_md(g.label)} {g.mean:.4f} (n={len(g.values)})" for g in stats]
                lines.append(f"- {name}: **{cells[0]}**" + "".join(f" · {c}" for c in cells[1:]))
        if lines[-1].startswith("- "):
            lines.append("")
        else:
            del lines[-2:]  # no group had two scored values to compare
    if plots:
        lines.append("Plots: " + " · ".join(run_link(experiment_id, parent_run_id, Path(p).stem.replace("_", " "), p)
                                           for p in plots))
    return "\n".join(lines).strip("\n")


def _mean_std(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def retrain_section(*, experiment_id: str, entries: Sequence[Mapping[str, Any]], verdict: str, model_uri: str,
                    registered: str | None = None, ensemble: Mapping[str, Any] | None = None) -> str:
    """The ``Retrain`` section: the test score's mean ± std per retrained config, seed runs linked.

    Each entry: ``label``, ``trial_name``, ``trial_run_id``, ``score`` (``accuracy``; ``rmse`` for a
    regressor), ``score_mean``, ``score_std``, ``loss_mean``, ``loss_std``, ``epochs`` and ``seeds``
    (a list of ``{seed, run_id}``). ``ensemble`` holds ``test_<score>`` and ``test_loss``.
    """
    score = entries[0].get("score", "accuracy") if entries else "accuracy"
    rows = [f"| | trial | test {score} | test loss | epochs | seed runs |", "|---|---|---|---|---|---|"]
    for e in entries:
        seeds = " ".join(run_link(experiment_id, s["run_id"], f"seed {s['seed']}") for s in e["seeds"])
        trial = run_link(experiment_id, e["trial_run_id"], str(e["trial_name"]).split(" ")[0])
        rows.append(f"| {e['label']} | {trial} | **{_mean_std(e['score_mean'], e['score_std'])}** | "
                    f"{_mean_std(e['loss_mean'], e['loss_std'])} | {e['epochs']} | {seeds} |")
    n = len(entries[0]["seeds"]) if entries else 0
    if ensemble:
        link = run_link(experiment_id, ensemble["run_id"], "ensemble run")
        loss = f"{ensemble['test_loss']:.4f}" if "test_loss" in ensemble else ""
        rows.append(f"| deep ensemble of {ensemble['members']} | (the best's seeds) | **{ensemble[f'test_{score}']:.4f}** | "
                    f"{loss} | | {link} |")
    held = float(entries[0].get("held_out") or 0) if entries else 0.0
    less = f" less a {held:.0%} calibration slice (evaluate fits its temperatures there)" if held else ""
    lines = [f"Retrained on train+valid{less} with {n} seed{'s' if n != 1 else ''}, scored on the test split "
             "(mean ± std over seeds):", "", *rows, "", verdict, "", f"Model: `{model_uri}` ("
             + (f"the seed with the best {score} on the calibration slice; the test split picked nothing)" if held
                else "seed 0: with no calibration slice, no unseen data was left to pick a seed on)")]
    if registered:
        lines[-1] += f", registered as `{registered}`"
    if ensemble:
        lines.append(f"Deep ensemble (the mean of the seeds' outputs, one Keras model): `{ensemble['model_uri']}`")
    return "\n".join(lines)


EVALUATE_KEYS = (("accuracy", "accuracy"), ("nll", "NLL"), ("ece", "ECE"), ("brier", "Brier"),
                 ("auroc_max_prob", "AUROC of errors (max prob)"))
REGRESSION_KEYS = (("rmse", "RMSE"), ("mae", "MAE"), ("r2", "R²"), ("nll", "NLL"), ("crps", "CRPS"),
                   ("coverage_90", "90% coverage"), ("width_90", "90% width"))


def evaluate_section(*, experiment_id: str, run_id: str, model_uri: str, dataset: str, samples: int,
                     metrics: Mapping[str, Mapping[str, float]], artifacts: Sequence[str] = (), note: str = "") -> str:
    """The ``Evaluate`` section: each predictor's accuracy, NLL, ECE, Brier and AUROC (a regressor's RMSE,
    MAE, R², NLL, CRPS and 90% interval); the run and plots linked."""
    keys = REGRESSION_KEYS if any("rmse" in m for m in metrics.values()) else EVALUATE_KEYS
    head = ["| predictor | " + " | ".join(label for _, label in keys) + " |", "|---|" + "---|" * len(keys)]
    names = {**tags.PREDICTORS, "mc": f"MC dropout (T={samples})"}
    for kind in names:
        if kind in metrics:
            cells = [f"{metrics[kind][k]:.4f}" if is_finite(metrics[kind].get(k)) else "" for k, _ in keys]
            head.append(f"| {names[kind]} | " + " | ".join(cells) + " |")
    lines = [f"{run_link(experiment_id, run_id, 'evaluate run')} of `{model_uri}` on the {dataset} test split:", "", *head]
    if note:
        lines += ["", note]
    pngs = [a for a in artifacts if a.endswith(".png")]
    if pngs:
        lines += ["", "Plots: " + " · ".join(run_link(experiment_id, run_id, Path(a).stem, a) for a in pngs)]
    return "\n".join(lines)


def search_overview(*, space: str, about: str, dimensions: int, dataset: str, settings: Mapping[str, str]) -> str:
    """The top of a search's description: what it searches, on what data, with which settings."""
    about = " ".join(about.split()).rstrip(".")
    lines = [
        f"**Search** over space **{space}**" + (f" ({about})" if about else "")
        + f", {dimensions} sampled dimensions, on **{dataset}**.",
        "",
        "| setting | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in settings.items()),
        "",
    ]
    return "\n".join(lines)


def importance_section(*, experiment_id: str, parent_run_id: str, scores: Mapping[str, float], trials: int,
                       evaluator: str, metric: str, left_out: Sequence[str] = (), note: str = "",
                       plot: str | None = None) -> str:
    """The ``Importance`` section: each key's share of the metric's variance, or why there is none."""
    if note:
        return note[0].upper() + note[1:] + "."
    lines = [f"Which hyperparameters mattered for `{metric}`: each key's share of its variance over the {trials} "
             f"scored trials ({evaluator}, Optuna's evaluator).", "", "| key | share |", "|---|---|"]
    lines += [f"| `{k}` | {v:.3f} |" for k, v in scores.items()]
    if left_out:
        lines += ["", "Left out, since some trials lack them (conditional keys): "
                  + ", ".join(f"`{k}`" for k in left_out) + "."]
    if plot:
        lines += ["", "Plot: " + run_link(experiment_id, parent_run_id, "importance", plot)]
    return "\n".join(lines)
