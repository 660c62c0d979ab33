"""The ``search`` command line. Thin: heavy modules are imported inside the commands.

Results go to stdout (a table, or JSON with ``--json``); logs and progress go to stderr. A
user error prints one line, ``error: ...``, and exits with status 2. One module per command
group; the options they share are defined once in ``options``.
"""

from search.cli import launch, pipelines, records, spaces, trial, ui  # noqa: F401 (each registers its commands)
from search.cli.base import cli
from search.cli.output import emit, progress_bar, progress_printer, table

__all__ = ["cli", "emit", "main", "progress_bar", "progress_printer", "table"]


def main() -> None:
    """Entry point of the ``search`` console script."""
    cli(prog_name="search")
