"""The ``search`` command line. Thin: heavy modules are imported inside the commands.

Results go to stdout (a table, or JSON with ``--json``); logs and progress go to stderr. A
user error prints one line, ``error: ...``, and exits with status 2. One module per command
group; the options they share are defined once in ``options``.
"""

import sys
from typing import NoReturn

from search.cli import launch, pipelines, records, spaces, trial, ui  # noqa: F401 (each registers its commands)
from search.cli.base import cli
from search.cli.output import emit, progress_bar, progress_printer, table

__all__ = ["cli", "emit", "exit_now", "main", "progress_bar", "progress_printer", "table"]


def main() -> None:
    """Entry point of the ``search`` console script."""
    try:
        cli(prog_name="search")
    except SystemExit as done:  # click ends every command with sys.exit, errors included
        exit_now(done.code)
    exit_now(0)


def exit_now(code: int | str | None) -> NoReturn:
    """Exit as Python would, less tearing down every imported module one by one (about 0.7 s once
    mlflow and Ray are imported; docs/benchmarks.md): join the other non-daemon threads, run the
    atexit hooks (Ray's shutdown, logging's flush, weakref finalizers such as temporary folders),
    flush stdout and stderr, then ``os._exit``. Only a finished command gets here: an uncaught
    exception still goes through Python's own exit, with its traceback."""
    import atexit
    import os
    import threading

    threading._shutdown()  # what Python's exit does first: stop idle thread pools, join non-daemon threads
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("text"): Python prints it and exits 1
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()  # what Py_Finalize runs first; the module teardown after it is what is skipped
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)
