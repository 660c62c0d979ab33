"""``search retrain`` and ``search evaluate``."""

from __future__ import annotations

import click

from search.cli.base import cli, terminate_as_interrupt
from search.cli.options import evaluate_options, json_option, quiet_option, retrain_options, seed_option, tracking_options
from search.cli.output import emit, evaluate_report, progress_bar, retrain_report


@cli.command()
@tracking_options
@click.option("--name", help="Search name [default: the newest search].")
@click.option("--parent-run", help="Parent run id of the search.")
@retrain_options
@click.option("--data-dir", envvar="SEARCH_DATA_DIR", help="Dataset folder, if the search used one.")
@json_option
@quiet_option
def retrain(tracking_uri: str | None, experiment: str, name: str | None, parent_run: str | None, epochs: int | None,
            seeds: int, register: str | None, compare_runner_up: bool, held_out: float, data_dir: str | None,
            as_json: bool, quiet: bool) -> None:
    """Retrain a search's best config on train+valid with several seeds; score the test split.

    A calibration slice of train+valid (--calibration-fraction) is held out of every seed's
    training: the seed that scores best on it becomes the search's model, and evaluate fits its
    temperatures on it. The config is read from MLflow, so this works in a later shell or on
    another machine. Each seed is a child run (role=retrain) of the search with its model in
    MLflow's Keras flavor; with 2 seeds or more, so is their deep ensemble.

    \b
    Examples:
      search retrain
      search retrain --name my-search --seeds 5 --compare-runner-up --register digits-mlp
    """
    from pipelines.retrain import retrain as run_retrain

    terminate_as_interrupt()
    result = run_retrain(tracking_uri=tracking_uri, experiment=experiment, name=name, parent_run=parent_run,
                         epochs=epochs, seeds=seeds, register=register, compare_runner_up=compare_runner_up,
                         data_dir=data_dir, held_out=held_out, progress=progress_bar(quiet, "retraining"))
    emit(result.to_dict(), as_json, lambda _: retrain_report(result))


@cli.command()
@tracking_options
@click.option("--run-id", help="A retrain, trial or search run [default: the newest search's best retrain].")
@click.option("--model-uri", help="Any MLflow model URI (runs:/..., models:/NAME/VERSION).")
@evaluate_options
@click.option("--dataset", help="Dataset [default: the one the search used].")
@click.option("--data-dir", envvar="SEARCH_DATA_DIR", help="Dataset folder, if needed.")
@seed_option("Seed of the MC sampling.")
@json_option
@quiet_option
def evaluate(tracking_uri: str | None, experiment: str, run_id: str | None, model_uri: str | None, mc_samples: int,
             dataset: str | None, data_dir: str | None, seed: int, as_json: bool, quiet: bool) -> None:
    """Evaluate a model with Monte-Carlo dropout: accuracy, NLL, Brier, ECE, entropy, BALD, AUROC, coverage.

    Dropout layers become MC layers (stochastic at inference) while BatchNormalization stays in
    inference mode. Compared on the test split: the model deterministic, with MC dropout, the
    retrain's deep ensemble, the ensemble with MC dropout, and each of the four with its own
    temperature (fitted on the retrain's calibration slice; for a model retrained without one, on
    the validation split with the best trial's model). Metrics, predictions.npz and the plots go
    to a child run tagged role=evaluate.

    \b
    Examples:
      search evaluate
      search evaluate --run-id 3f2c... --mc-samples 200
      search evaluate --model-uri models:/digits-mlp/1 --json
    """
    from pipelines.evaluate import evaluate as run_evaluate

    terminate_as_interrupt()
    result = run_evaluate(tracking_uri=tracking_uri, experiment=experiment, run_id=run_id, model_uri=model_uri,
                          mc_samples=mc_samples, dataset=dataset, data_dir=data_dir, seed=seed,
                          progress=progress_bar(quiet, "MC sampling"))
    emit(result.to_dict(), as_json, lambda _: evaluate_report(result))
