"""Options shared between commands, each defined once (as mlflow's ``cli.py`` does)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from search.tasks import TASKS
from search.tune.algorithms import SCHEDULERS, SEARCHERS, choices_help

F = TypeVar("F", bound=Callable[..., Any])


SEED = click.IntRange(0, 2**32 - 1)  # NumPy's, TF's and Ray's seeds are 32-bit


def seed_option(help_text: str) -> Callable[[F], F]:
    return click.option("--seed", default=0, show_default=True, type=SEED, help=help_text)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(f)


def quiet_option(f: F) -> F:
    return click.option("-q", "--quiet", is_flag=True, help="No progress display; results only.")(f)


def dataset_options(f: F) -> F:
    f = click.option("--train-limit", type=click.IntRange(min=1), metavar="N",
                     help="Keep N training examples (stratified, fixed seed); valid and test stay whole.")(f)
    f = click.option("--classes", metavar="A,B,...",
                     help="Keep these classes (names or ids), relabelled 0..k-1 in this order, e.g. 8,9.")(f)
    f = click.option(
        "--target", default="label", show_default=True, help="Label column of a CSV dataset."
    )(f)
    f = click.option("--task", default="auto", show_default=True,
                     type=click.Choice(["auto", *TASKS]),
                     help="What the target is. auto: a built-in dataset's own; for a file, regression when the "
                          "target holds many distinct non-integer numbers, else classification.")(f)
    f = click.option(
        "--data-dir",
        envvar="SEARCH_DATA_DIR",
        type=click.Path(file_okay=False),
        help="Folder with the MNIST/Fashion-MNIST IDX .gz files [env: SEARCH_DATA_DIR].",
    )(f)
    return click.option(
        "--dataset",
        default="digits",
        show_default=True,
        help="digits (bundled), diabetes (bundled, regression), mnist, fashion_mnist, or a .csv/.npz path.",
    )(f)


def _experiment_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not value.strip():  # MLflow refuses it only after Ray and the data are up; say so before anything starts
        raise click.BadParameter(f"must be a non-empty experiment name, got {value!r}")
    return value


def tracking_options(f: F) -> F:
    f = click.option("--experiment", default="search", show_default=True, callback=_experiment_name,
                     help="MLflow experiment name.")(f)
    return click.option(
        "--tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        help="MLflow store or server [env: MLFLOW_TRACKING_URI; default: sqlite:///$PWD/mlflow.db].",
    )(f)


def search_options(f: F) -> F:
    """The options of a search, shared by ``launch`` and ``pipeline``."""
    opts = [
        click.option("--space", help="Search space: built-in name or YAML path [default: default; regression for a "
                                      "regression task]."),
        dataset_options,
        click.option("--num-samples", default=16, show_default=True, type=int, help="Trials to run."),
        click.option("--max-epochs", type=int, help="Epochs per trial (default: the space's `epochs`)."),
        click.option("--searcher", default="tpe", show_default=True, type=click.Choice(list(SEARCHERS)),
                     help=choices_help(SEARCHERS) + "."),
        click.option("--scheduler", type=click.Choice(list(SCHEDULERS)),
                     help="Trial scheduler [default: asha when --num-samples > --concurrency, else fifo]."),
        click.option("--transfer-from", metavar="RUN_ID|MODEL_URI",
                     help="Reuse the hidden layers of this model (a search, retrain or trial run, or a model URI) as "
                          "the space's reuse_layers, freeze_epochs and unfreeze_lr_factor say."),
        click.option("--warm-start", "warm_start", multiple=True, metavar="NAME|RUN_ID",
                     help="Seed the searcher with the finished trials of this earlier search (repeatable); those "
                          "outside the space are skipped and counted. tpe and bayes learn from them; random cannot."),
        click.option("--metric", help="Metric the search optimizes [default: val_accuracy for classification, "
                                       "val_rmse for regression]."),
        click.option("--mode", type=click.Choice(["max", "min"]),
                     help="Whether a larger metric is better; it must agree with the metric [default: min for a "
                          "loss or an error, else max]."),
        click.option("--concurrency", type=int, help="Trials at once [default: as many as the CPUs allow]."),
        click.option("--cpus-per-trial", default=1.0, show_default=True, type=float, help="CPUs per trial (TF threads follow)."),
        click.option("--gpus-per-trial", default=0.0, show_default=True, type=float, help="GPUs per trial; 0.5 shares a GPU."),
        click.option("--address", envvar="RAY_ADDRESS", help="Ray cluster to join [env: RAY_ADDRESS; default: a local Ray]."),
        tracking_options,
        click.option("--name", help="Search name (the parent run's name) [default: SPACE-DATASET-TIME]."),
        seed_option("Searcher seed."),
        click.option("--storage-path", envvar="SEARCH_STORAGE_PATH", help="Ray results and checkpoints [default: ./ray_results]."),
        click.option("--resume", is_flag=True, help="Continue the interrupted search --name."),
        click.option("--max-failures", default=0, show_default=True, type=click.IntRange(min=0),
                     help="Retries of a trial lost to a crash."),
        click.option("--report-every-s", default=0.5, show_default=True, type=click.FloatRange(min=0),
                     help="A trial reports to Ray Tune at most about this often, several short epochs per report "
                          "(0: every epoch); MLflow still records every epoch, and schedulers decide at exact epochs."),
        click.option("--tracking-retry-s", default=120.0, show_default=True, type=click.FloatRange(min=0),
                     help="How long MLflow writes are retried while the tracking server is away; then the search "
                          "stops with an error, and --resume continues it."),
    ]
    for option in reversed(opts):
        f = option(f)
    return f


def launch_options(kwargs: dict[str, Any], quiet: bool) -> Any:
    """``LaunchOptions`` from a command's keyword arguments (those that are launch options), with the
    names of those the user gave (on the command line or in the environment), which --resume needs."""
    from click.core import ParameterSource

    from search.tune import LaunchOptions

    known = set(LaunchOptions().flat())
    ctx = click.get_current_context()
    given = frozenset(k for k in known if k in kwargs and ctx.get_parameter_source(k) in
                      (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT))
    return LaunchOptions.from_flat(given=given, **{k: v for k, v in kwargs.items() if k in known}, quiet=quiet)


def retrain_options(f: F) -> F:
    opts = [
        click.option("--epochs", type=int,
                     help="Epochs [default: where the best trial's validation curve, smoothed over 5 epochs, peaked]."),
        click.option("--seeds", default=3, show_default=True, type=int, help="Retrain with this many seeds: mean ± std."),
        click.option("--register", metavar="NAME", help="Register the best seed's model in the Model Registry."),
        click.option("--compare-runner-up", is_flag=True, help="Also retrain the runner-up, to tell a real lead from luck."),
        click.option("--calibration-fraction", "held_out", default=0.1, show_default=True,
                     type=click.FloatRange(0, 0.5, max_open=True),
                     help="Share of train+valid no seed trains on: it picks the search's model among the seeds, and "
                          "evaluate fits its temperatures (a regressor's noise) on it. 0 trains on all of it, and the "
                          "model is seed 0's."),
    ]
    for option in reversed(opts):
        f = option(f)
    return f


def evaluate_options(f: F) -> F:
    opts = [
        click.option("--mc-samples", default=100, show_default=True, type=int, help="MC dropout samples T."),
    ]
    for option in reversed(opts):
        f = option(f)
    return f
