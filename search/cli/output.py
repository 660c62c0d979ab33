"""What commands print: results on stdout (a table, or JSON), progress on stderr (on a terminal only)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import click


def emit(result: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    """Print ``result`` as JSON or as text, on stdout."""
    click.echo(json.dumps(result, indent=2, default=str) if as_json else text(result))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain fixed-width table."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def progress_printer(quiet: bool) -> Callable[[str], None] | None:
    """Writes the live line in place on a terminal; nothing with -q or when stderr is not a terminal."""
    if quiet or not sys.stderr.isatty():
        return None

    def show(line: str) -> None:
        sys.stderr.write("\r\033[K" + line)
        sys.stderr.flush()

    return show


def progress_bar(quiet: bool, label: str) -> Callable[[int, int, str], None] | None:
    """A progress bar on stderr, updated as (done, total, what); none with -q or off a terminal."""
    if quiet or not sys.stderr.isatty():
        return None
    state: dict[str, Any] = {}

    def update(done: int, total: int, what: str) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True)
            bar.__enter__()
        bar.label = f"{label} ({what})"
        bar.update(done - bar.pos)
        if done >= total:
            bar.__exit__(None, None, None)

    return update


def search_report(result: Any) -> str:
    rows = []
    for t in result.top(5):
        cfg = t.config
        rows.append({"trial": t.name, result.metric: t.metric, "epoch": t.best_epoch, "lr": cfg.get("learning_rate"),
                     "batch": cfg.get("batch_size"), "dropout": cfg.get("dropout"), "run_id": t.run_id})
    failed = sum(t.state == "failed" for t in result.trials)
    stopped = sum(t.state == "stopped_early" for t in result.trials)
    lines = [
        f"search {result.name}: {len(result.trials)} trials ({failed} failed, {stopped} stopped early) "
        f"in {result.wall_time_s:.0f} s",
        "",
        table(rows, ["trial", result.metric, "epoch", "lr", "batch", "dropout", "run_id"]),
        "",
        f"parent run: {result.parent_run_id} (experiment {result.experiment})",
        f"MLflow UI:  {result_ui(result)}",
    ]
    return "\n".join(lines)


def result_ui(result: Any) -> str:
    from search.tune.results import ui_command

    return ui_command(result.tracking_uri)


def retrain_report(r: Any) -> str:
    def line(c: Any, label: str) -> str:
        return (f"{label:<10} {c.trial_name}: test {c.score} {c.score_mean:.4f} ± {c.score_std:.4f}, "
                f"test loss {c.loss_mean:.4f} ± {c.loss_std:.4f} ({len(c.seeds)} seeds, {c.epochs} epochs)")

    held = f" less a {r.best.held_out:.0%} calibration slice" if r.best.held_out else ""
    lines = [f"search {r.search}: retrained on train+valid{held}, scored on the test split", line(r.best, "best")]
    if r.runner_up:
        lines.append(line(r.runner_up, "runner-up"))
    if r.ensemble:
        score = r.best.score
        loss = f", test loss {r.ensemble.scores['loss']:.4f}" if "loss" in r.ensemble.scores else ""
        lines.append(f"{'ensemble':<10} of the {r.ensemble.members} seeds: test {score} {r.ensemble.scores[score]:.4f}{loss}")
    lines += ["", r.verdict, "", f"model:      {r.model_uri}"]
    if r.ensemble:
        lines.append(f"ensemble:   {r.ensemble.model_uri}")
    if r.registered:
        lines.append(f"registered: {r.registered}")
    lines.append(f"best seed run: {r.best_seed_run_id}")
    return "\n".join(lines)


def evaluate_report(r: Any) -> str:
    keys = ["accuracy", "rmse", "mae", "r2", "nll", "crps", "brier", "ece", "entropy", "mutual_info", "auroc_max_prob",
            "auroc_entropy", "auroc_mutual_info", "acc_at_50", "acc_at_80", "acc_at_90", "acc_at_95",
            *(f"{kind}_{pct}" for kind in ("coverage", "width") for pct in (50, 80, 90, 95)), "epistemic_std",
            "aleatoric_std"]
    names = {"deterministic": "deterministic", "mc": f"MC dropout (T={r.samples})", "ensemble": "ensemble",
             "ensemble_mc": "ensemble + MC", "temperature": "temperature", "mc_temperature": "MC + temp.",
             "ensemble_temperature": "ensemble + temp.", "ensemble_mc_temperature": "ens. + MC + temp."}
    shown = [k for k in names if k in r.metrics]
    rows = [{"metric": k, **{names[p]: r.metrics[p].get(k) for p in shown}} for k in keys
            if any(k in r.metrics[p] for p in shown)]
    lines = [f"{r.dataset} test split, model {r.model_uri}", "", table(rows, ["metric", *(names[p] for p in shown)])]
    text = " ".join(filter(None, [r.note, r.verdict.replace("**", "")]))
    lines += ["", text] if text else []
    lines += ["", f"evaluate run: {r.run_id}  (artifacts: {', '.join(r.artifacts)})"]
    return "\n".join(lines)
