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
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535), help="Port of the UI.")
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
    tracking.check_reachable(uri, must_exist=True)
    exp_id = tracking.experiment_id(uri, experiment)
    fragment = f"/#/experiments/{exp_id}" if exp_id else ""
    if uri.startswith(("http://", "https://")):
        click.echo(f"{uri.rstrip('/')}{fragment}")
        return
    _check_port_free(host, port)
    exposed = host not in ("127.0.0.1", "localhost", "::1")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port),
               "--workers", "1"]
    if exposed:
        # MLflow answers 403 to any Host header but localhost and private IPs; on purpose, remote access works.
        command += ["--allowed-hosts", "*"]
        click.echo(f"warning: --host {host} serves the store {uri} to anyone who can reach port {port} of this "
                   "machine, with no login; use the default 127.0.0.1 and an SSH tunnel to keep it private", err=True)
    click.echo(f"MLflow UI for {uri}: http://{shown}:{port}{fragment}  (Ctrl-C stops it)")
    try:
        code = subprocess.run(command, check=False).returncode
    except KeyboardInterrupt:
        code = 0
    if code not in (0, -2, 130):
        raise SearchError(f"mlflow server exited with status {code}; is port {port} free? Try --port")


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port something already listens on: the server would fail after printing a dead URL."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is free; a listener is not
        try:
            sock.bind((host, port))
        except OSError as err:
            raise SearchError(f"cannot serve on {host}:{port} ({err.strerror or err}); is another UI running? "
                              "pick another with --port") from None
