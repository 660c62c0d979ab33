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
@click.option("--samples", default=1000, show_default=True, help="Configs to draw and check.")
def spaces_validate(path: str, samples: int) -> None:
    """Check a space file: its syntax, keys, ranges and conditions, and draw sample configs.

    \b
    Example:
      search spaces validate my_space.yaml
    """
    from search.space import load_space

    space = load_space(path)
    for cfg in space.samples(samples, seed=0):
        space.validate_config(cfg)
    click.echo(f"{path}: ok ({len(space.sampled)} dimensions, {samples} sampled configs valid)")
