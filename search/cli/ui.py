"""``search ui``: the MLflow UI on the store ``search launch`` used."""

from __future__ import annotations

import sys

import click

from search.cli.base import cli
from search.cli.options import tracking_options
from search.errors import SearchError


@cli.command()
@tracking_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; loopback unless you say otherwise.")
@click.option("--port", default=5000, show_default=True, type=int, help="Port of the UI.")
def ui(tracking_uri: str | None, experiment: str, host: str, port: int) -> None:
    """Open the MLflow UI on the store `search launch` used, and print the experiment's URL.

    \b
    Examples:
      search ui                                   # ./mlflow.db, http://127.0.0.1:5000
      search ui --tracking-uri sqlite:////data/mlflow.db --port 5001
    """
    import subprocess

    from search import tracking

    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_reachable(uri)
    exp_id = tracking.experiment_id(uri, experiment)
    fragment = f"/#/experiments/{exp_id}" if exp_id else ""
    if uri.startswith(("http://", "https://")):
        click.echo(f"{uri.rstrip('/')}{fragment}")
        return
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    click.echo(f"MLflow UI for {uri}: http://{shown}:{port}{fragment}  (Ctrl-C stops it)")
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port),
               "--workers", "1"]
    try:
        code = subprocess.run(command, check=False).returncode
    except KeyboardInterrupt:
        code = 0
    if code not in (0, -2, 130):
        raise SearchError(f"mlflow server exited with status {code}; is port {port} free? Try --port")
