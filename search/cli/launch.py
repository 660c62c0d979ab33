"""``search launch`` and ``search pipeline`` (launch, retrain, evaluate in one command)."""

from __future__ import annotations

import sys

import click
from typing import Any

from search.cli.base import cli, terminate_as_interrupt
from search.cli.options import evaluate_options, json_option, launch_options, quiet_option, retrain_options, search_options
from search.cli.output import emit, evaluate_report, progress_bar, progress_printer, retrain_report, search_report


@cli.command()
@search_options
@json_option
@quiet_option
def launch(as_json: bool, quiet: bool, **kwargs: Any) -> None:
    """Run a hyperparameter search with Ray Tune, recording every trial in MLflow.

    With no options: the `default` space on the bundled digits data, 16 trials with TPE,
    locally. Each trial is a nested MLflow run under the search's parent run.

    \b
    Examples:
      search launch
      search launch --space quick --num-samples 8 --searcher random
      search launch --dataset fashion_mnist --data-dir ~/data --num-samples 64 --scheduler asha
      search launch --address ray://head:10001 --tracking-uri http://mlflow:5000
      search launch --name my-search --resume            # continue after Ctrl-C
      search launch --warm-start my-search --num-samples 8  # start from what my-search learned
    """
    from search.tune.launch import launch as run_launch

    terminate_as_interrupt()
    printer = progress_printer(quiet)
    result = run_launch(announce(launch_options(kwargs, quiet)), progress=printer, notice=notice_printer(quiet))
    if printer:
        sys.stderr.write("\n")
    emit(result.to_dict(), as_json, lambda _: search_report(result))


@cli.command()
@search_options
@retrain_options
@evaluate_options
@json_option
@quiet_option
def pipeline(as_json: bool, quiet: bool, epochs: int | None, seeds: int, register: str | None,
             compare_runner_up: bool, held_out: float, mc_samples: int, **kwargs: Any) -> None:
    """Launch a search, retrain its best config, and evaluate it with MC dropout: one command.

    \b
    Examples:
      search pipeline
      search pipeline --space quick --num-samples 8 --seeds 2 --mc-samples 50
    """
    from pipelines import evaluate as evaluating
    from pipelines import retrain as retraining
    from search import tracking
    from search.tune.launch import launch as run_launch

    terminate_as_interrupt()
    # Every stage's options are checked before the search: a bad --seeds must not cost a search first.
    opts = announce(launch_options(kwargs, quiet))
    retraining.check_options(seeds=seeds, epochs=epochs, held_out=held_out)
    evaluating.check_options(mc_samples=mc_samples)
    if register is not None:
        uri = tracking.resolve_tracking_uri(opts.tracking.tracking_uri)
        tracking.check_reachable(uri)
        tracking.check_model_name(uri, register)
    printer = progress_printer(quiet)
    searched = run_launch(opts, progress=printer, notice=notice_printer(quiet))
    if printer:
        sys.stderr.write("\n")
    retrained = retraining.retrain(tracking_uri=searched.tracking_uri, experiment=searched.experiment,
                            parent_run=searched.parent_run_id, epochs=epochs, seeds=seeds, register=register,
                            compare_runner_up=compare_runner_up, data_dir=kwargs.get("data_dir"), held_out=held_out,
                            progress=progress_bar(quiet, "retraining"))
    evaluated = evaluating.evaluate(tracking_uri=searched.tracking_uri, experiment=searched.experiment,
                             run_id=retrained.best_seed_run_id, mc_samples=mc_samples, seed=kwargs.get("seed", 0),
                             data_dir=kwargs.get("data_dir"), progress=progress_bar(quiet, "MC sampling"))
    report = {"search": searched.to_dict(), "retrain": retrained.to_dict(), "evaluate": evaluated.to_dict(),
              "runs": {"search": searched.parent_run_id, "retrain": retrained.best_seed_run_id,
                       "evaluate": evaluated.run_id}}
    emit(report, as_json, lambda _: "\n\n".join([search_report(searched), retrain_report(retrained),
                                                   evaluate_report(evaluated)]))


def notice_printer(quiet: bool) -> Any:
    """One-line messages on stderr (what a warm start took); none with -q."""
    return None if quiet else (lambda line: click.echo(line, err=True))


def announce(opts: Any) -> Any:
    """Check the options; say on stderr which mode is in use when it was inferred from a --metric."""
    from search.tune.options import validate

    validate(opts)
    given = opts.given or frozenset()
    if opts.search.mode is None and "metric" in given and not opts.run.quiet and not opts.run.resume:
        click.echo(f"metric {opts.search.metric}: mode {opts.mode} (inferred; --mode sets it)", err=True)
    return opts
