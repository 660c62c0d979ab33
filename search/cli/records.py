"""``search runs`` and ``search best``: read the store."""

from __future__ import annotations

from typing import Any

import click

from search.cli.base import cli
from search.cli.options import json_option, tracking_options
from search.cli.output import emit, table


@cli.command()
@tracking_options
@json_option
def runs(tracking_uri: str | None, experiment: str, as_json: bool) -> None:
    """List searches (parent runs) with their best metric, newest first.

    \b
    Examples:
      search runs
      search runs --tracking-uri http://mlflow:5000 --json
    """
    from search import tracking

    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_reachable(uri, must_exist=True)
    rows = [record.overview() for record in tracking.SearchRecord.all(uri, experiment)]
    emit(rows, as_json, lambda rs: table(rs, ["name", "status", "space", "trials", "metric", "best", "run_id"]) if rs
         else f"no searches in experiment {experiment!r} at {uri}")


@cli.command()
@tracking_options
@click.option("--name", help="Search name [default: the newest search].")
@click.option("--parent-run", help="Parent run id of the search.")
@json_option
def best(tracking_uri: str | None, experiment: str, name: str | None, parent_run: str | None, as_json: bool) -> None:
    """Print the best trial's config and metrics, read from MLflow.

    \b
    Examples:
      search best
      search best --name my-search --json | jq .config
    """
    from search import tracking

    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_reachable(uri, must_exist=True)
    record = tracking.SearchRecord.find(uri, experiment, name=name, run_id=parent_run)
    result = record.trial_view(record.best_trial())
    metric = record.metric

    def text(r: dict[str, Any]) -> str:
        lines = [f"{r['trial']}  {metric} {r['value']:.4f} at epoch {r['best_epoch']}  (run {r['run_id']})"]
        lines += [f"  {k:<18} {v}" for k, v in sorted(r["config"].items())]
        if r["search_status"] != "FINISHED":  # interrupted or running: --resume may still find better
            lines.append(f"(search {r['search']} is {r['search_status']}: the best so far)")
        return "\n".join(lines)

    emit(result, as_json, text)


@cli.command()
@tracking_options
@click.option("--name", help="Search name [default: the newest search].")
@click.option("--parent-run", help="Parent run id of the search.")
@click.option("--evaluator", default="fanova", show_default=True, type=click.Choice(["fanova", "ped-anova"]),
              help="Optuna's importance evaluator (PED-ANOVA compares the best 10% of the trials with the rest: "
                   "give it a hundred or more).")
@json_option
def importance(tracking_uri: str | None, experiment: str, name: str | None, parent_run: str | None, evaluator: str,
               as_json: bool) -> None:
    """Which hyperparameters mattered: each key's share of the metric's variance over the trials.

    Read from the search's trial runs in MLflow, computed with Optuna's fANOVA (or PED-ANOVA)
    evaluator, and written on the parent run too (a plot and a description section). With fewer
    than 10 scored trials it says so instead of printing noise.

    \b
    Examples:
      search importance
      search importance --name my-search --evaluator ped-anova --json
    """
    from search import tracking
    from search.importance import record_importance

    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_reachable(uri, must_exist=True)
    record = tracking.SearchRecord.find(uri, experiment, name=name, run_id=parent_run)
    trials = record.ranked_trials()
    found = record_importance(record.writer(), record.run_id, record.experiment_id,
                              [tracking.config_of(t) for t in trials], [record.score(t) for t in trials],
                              metric=record.metric, mode=record.mode, evaluator=evaluator)
    rows = [{"key": k, "share": v} for k, v in found.scores.items()]

    def text(_: Any) -> str:
        if found.note:
            return f"search {record.name}: {found.note}"
        lines = [f"search {record.name}: share of the variance of {record.metric} over {found.trials} trials "
                 f"({evaluator})", "", table(rows, ["key", "share"])]
        if found.left_out:
            lines += ["", "left out (some trials lack them): " + ", ".join(found.left_out)]
        return "\n".join(lines)

    emit({"search": record.name, "metric": record.metric, **found.to_dict()}, as_json, text)
