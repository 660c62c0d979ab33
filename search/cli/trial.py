"""``search trial``: one config, trained in process."""

from __future__ import annotations

import json
from typing import Any

import click

from search.cli.base import cli
from search.cli.options import dataset_options, json_option, quiet_option, seed_option, tracking_options
from search.errors import SearchError


@cli.command()
@click.option("--space", "space_name", default="quick", show_default=True, help="Space to sample from (name or path).")
@dataset_options
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Fix a key (repeatable).")
@seed_option("Seed for the sampled config and the weights.")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs (default: the config's `epochs`).")
@click.option("--transfer-from", metavar="RUN_ID|MODEL_URI",
              help="Reuse the hidden layers of this model (with --set reuse_layers=N); read from --tracking-uri.")
@tracking_options
@json_option
@quiet_option
def trial(
    space_name: str,
    dataset: str,
    data_dir: str | None,
    target: str,
    task: str,
    classes: str | None,
    train_limit: int | None,
    overrides: tuple[str, ...],
    seed: int,
    epochs: int | None,
    transfer_from: str | None,
    tracking_uri: str | None,
    experiment: str,
    as_json: bool,
    quiet: bool,
) -> None:
    """Train one config in process: sampled from --space with --seed, then --set overrides.

    \b
    Examples:
      search trial --space quick --dataset digits
      search trial --set activation=selu --set initializer=lecun_normal --set standardize=true
      search trial --dataset diabetes --set loss=gaussian_nll
    """
    from search.data import load_subset
    from search.tasks import get_task
    from search.train import fit

    cfg = _config(space_name, seed, overrides)
    data = load_subset(dataset, data_dir=data_dir, target=target, classes=classes, train_limit=train_limit, task=task)
    spec = get_task(data.task)
    if not quiet:
        click.echo(data.describe(), err=True)
        click.echo("config: " + json.dumps(cfg, default=str), err=True)

    def show(row: dict[str, float], _model: Any) -> None:
        if not as_json:
            values = "  ".join(f"{k} {row[k]:.4f}" for k in spec.epoch_metrics if k in row)
            click.echo(f"epoch {int(row['epoch']):3d}  {values}  lr {row['lr']:.2e}  {row['epoch_time_s']:.2f}s")

    source = _source(transfer_from, tracking_uri) if transfer_from else None
    result = fit(cfg, data, epochs=epochs, report=show, seed=seed, source=source)
    best = result.best(spec.metric, spec.mode)
    summary = {"config": cfg, "task": data.task, "epochs": result.epochs, "best_epoch": int(best["epoch"]),
               spec.metric: best[spec.metric], "val_loss": best["val_loss"], "history": result.history}
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        click.echo(
            f"result: {spec.metric} {best[spec.metric]:.4f}  val_loss {best['val_loss']:.4f}  "
            f"(best epoch {int(best['epoch'])} of {result.epochs})"
        )


def _config(space_name: str, seed: int, overrides: tuple[str, ...]) -> dict[str, Any]:
    """A config sampled from the space with ``seed``, then the ``--set`` overrides, checked."""
    from search import config as vocab
    from search.space import load_space

    cfg = load_space(space_name).sample(seed)
    given: dict[str, str] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise SearchError(f"--set {item}: expected KEY=VALUE, e.g. --set n_hidden=3")
        key = key.strip()
        if key in given:  # the last would win silently
            raise SearchError(f"--set {key} is given twice ({given[key]!r}, then {text!r}); keep one")
        given[key] = text
        cfg[key] = vocab.parse_value(key, text)
    cfg = {k: v for k, v in cfg.items() if vocab.applies(k, cfg)}  # e.g. momentum after --set optimizer=adam
    vocab.check_config(cfg)
    return cfg


def _source(transfer_from: str, tracking_uri: str | None) -> Any:
    """The hidden layers of the model --transfer-from names, read from the store."""
    from search import tracking

    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_reachable(uri, must_exist=True)
    return tracking.transfer_source(uri, transfer_from)[1]
