"""The ``search`` click group: one-line errors for the project's exceptions, logging, quiet libraries."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import click

from search.errors import SearchError


def quiet_tensorflow() -> None:
    """Keep TF's C++ and Python log spam off the terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    # Retrain and evaluate fit and call several models in one process, which TF reports as "retracing":
    # expected here, and not the user's to act on (-v shows it again).
    if logging.getLogger().level >= logging.WARNING:
        logging.getLogger("tensorflow").setLevel(logging.ERROR)


class UserError(click.ClickException):
    """A ``SearchError`` as click shows it: one line, exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class TrialError(UserError):
    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"trial failed: {self.message}", err=True)


def _usage_error(err: click.UsageError, ctx: click.Context) -> UserError:
    """One line for a bad option or value, naming the help of the command that refused it."""
    path = " ".join(["search", *(err.ctx or ctx).command_path.split()[1:]])  # `search`, however it was started
    error = UserError(f"{err.format_message()} (see `{path} --help`)")
    error.exit_code = err.exit_code
    return error


class SearchGroup(click.Group):
    """Turns the project's exceptions into one-line errors, in every subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as err:  # `search --bogus`: the group's own options, one line as well
            raise _usage_error(err, ctx) from None

    def invoke(self, ctx: click.Context) -> Any:
        from search.errors import TrialFailed
        from search.interrupts import interrupt_code

        try:
            return super().invoke(ctx)
        except click.UsageError as err:  # a bad option or value: one line too, with where to read more
            raise _usage_error(err, ctx) from None
        except SearchError as err:
            error = UserError(str(err))
            error.exit_code = err.exit_code
            raise error from None
        except TrialFailed as err:
            raise TrialError(str(err)) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except (KeyboardInterrupt, Exception) as err:  # Ctrl-C or SIGTERM outside the trials (Ray handles those)
            code = interrupt_code(err)
            if code is None:  # not a signal's doing: a bug, shown in full
                raise
            error = UserError("interrupted; every run this command had opened was ended KILLED")
            error.exit_code = code
            raise error from None


def terminate_as_interrupt() -> None:
    """Make SIGTERM unwind like Ctrl-C (``Terminated``), so every run the command opened is closed;
    both are recorded, so an error a signal caused (in an import, in a library) counts as the signal."""
    from search.interrupts import install

    install()


@click.group(cls=SearchGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("-v", "--verbose", count=True, help="More logging on stderr (-v info, -vv debug).")
@click.version_option(package_name="search")
def cli(verbose: int) -> None:
    """Distributed hyperparameter search for Keras networks.

    Ray Tune runs the trials (locally, or on a cluster with --address), MLflow records every
    trial as a nested run, and the best config is retrained and evaluated with Monte-Carlo
    dropout.

    \b
    Start here:
      search launch                      # a search on the bundled digits data
      search spaces list                 # the built-in search spaces
      search trial --space quick         # train one sampled config, in process
    """
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # mlflow sets up its own INFO-level logger when imported; -v decides here too.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", logging.getLevelName(max(level, logging.DEBUG)))
    quiet_tensorflow()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # its tqdm bars are not ours
