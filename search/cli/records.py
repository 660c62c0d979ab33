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
        return "\n".join(lines)

    emit(result, as_json, text)
