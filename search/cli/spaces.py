"""``search spaces list|show|validate``."""

from __future__ import annotations

import click

from search.cli.base import SearchGroup, cli
from search.cli.options import json_option
from search.cli.output import emit


@cli.group(cls=SearchGroup)
def spaces() -> None:
    """List, show and validate search spaces."""


@spaces.command("list")
@json_option
def spaces_list(as_json: bool) -> None:
    """List the built-in search spaces.

    \b
    Examples:
      search spaces list
      search spaces list --json
    """
    from search.space import builtin_names, load_space

    rows = [{"name": n, "description": load_space(n).description} for n in builtin_names()]
    emit(rows, as_json, lambda rs: "\n".join(f"{r['name']:<15} {r['description']}" for r in rs))


@spaces.command("show")
@click.argument("name")
@click.option("--yaml", "as_yaml", is_flag=True, help="Print the space's YAML source.")
def spaces_show(name: str, as_yaml: bool) -> None:
    """Show a space's dimensions and conditions (NAME is built-in or a path).

    \b
    Example:
      search spaces show default
    """
    from search.space import load_space

    space = load_space(name)
    click.echo(space.source if as_yaml else space.describe())


@spaces.command("validate")
@click.argument("path")
@click.option("--samples", default=1000, show_default=True, type=click.IntRange(min=1), help="Configs to draw and check.")
@click.option("--features", default=784, show_default=True, type=click.IntRange(min=1),
              help="Input features to size the networks for (784: MNIST's 28x28).")
@click.option("--max-params", default=20_000_000, show_default=True, type=click.IntRange(min=1),
              help="Warn when the space can build a network with more parameters than this.")
def spaces_validate(path: str, samples: int, features: int, max_params: int) -> None:
    """Check a space file: its syntax, keys, ranges and conditions, and draw sample configs.

    It also warns when the space can build networks too large to train comfortably
    (over --max-params parameters on --features inputs).

    \b
    Example:
      search spaces validate my_space.yaml
    """
    from search.space import load_space

    space = load_space(path)
    for cfg in space.samples(samples, seed=0):
        space.validate_config(cfg)
    click.echo(f"{path}: ok ({len(space.sampled)} dimensions, {samples} sampled configs valid)")
    depth, width = int(space.max_value("n_hidden")), int(space.max_value("n_neurons"))
    largest = largest_network(depth, width, features=features, classes=10)
    if largest > max_params:
        click.echo(f"warning: {path} can build networks of {largest:,} parameters ({depth} hidden layers of "
                   f"{width} units on {features} inputs), over --max-params {max_params:,}: such trials may run out "
                   "of memory; narrow n_hidden or n_neurons", err=True)


def largest_network(depth: int, width: int, *, features: int, classes: int) -> int:
    """Weights of the widest, deepest MLP of a space: constant width, biases included (batch norm
    adds 4 per unit, at most a few percent more)."""
    return (features + 1) * width + (depth - 1) * (width + 1) * width + (width + 1) * classes
