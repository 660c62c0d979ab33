"""The ``search`` command line. Thin: heavy modules are imported inside the commands.

Results go to stdout (a table, or JSON with ``--json``); logs and progress go to stderr. A
user error prints one line, ``error: ...``, and exits with status 2.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from search.errors import SearchError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("search")


# -- shared options, defined once -------------------------------------------------------------
def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(f)


def quiet_option(f: F) -> F:
    return click.option("-q", "--quiet", is_flag=True, help="No progress display; results only.")(f)


def dataset_options(f: F) -> F:
    f = click.option(
        "--target", default="label", show_default=True, help="Label column of a CSV dataset."
    )(f)
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
        help="digits (bundled), mnist, fashion_mnist, or a .csv/.npz path.",
    )(f)


def tracking_options(f: F) -> F:
    f = click.option("--experiment", default="search", show_default=True, help="MLflow experiment name.")(f)
    return click.option(
        "--tracking-uri",
        envvar="MLFLOW_TRACKING_URI",
        help="MLflow store or server [env: MLFLOW_TRACKING_URI; default: sqlite:///$PWD/mlflow.db].",
    )(f)


def emit(result: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    """Print ``result`` as JSON or as text, on stdout."""
    click.echo(json.dumps(result, indent=2, default=str) if as_json else text(result))


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A plain fixed-width table."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}"
        return "" if v is None else str(v)

    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def quiet_tensorflow() -> None:
    """Keep TF's C++ and Python log spam off the terminal."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


# -- the group --------------------------------------------------------------------------------
class UserError(click.ClickException):
    """A ``SearchError`` as click shows it: one line, exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class TrialError(UserError):
    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"trial failed: {self.message}", err=True)


class SearchGroup(click.Group):
    """Turns the project's exceptions into one-line errors, in every subcommand."""

    def invoke(self, ctx: click.Context) -> Any:
        from search.errors import TrialFailed

        try:
            return super().invoke(ctx)
        except SearchError as err:
            error = UserError(str(err))
            error.exit_code = err.exit_code
            raise error from None
        except TrialFailed as err:
            raise TrialError(str(err)) from None


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


# -- spaces -----------------------------------------------------------------------------------
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


# -- trial ------------------------------------------------------------------------------------
@cli.command()
@click.option("--space", "space_name", default="quick", show_default=True, help="Space to sample from (name or path).")
@dataset_options
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Fix a key (repeatable).")
@click.option("--seed", default=0, show_default=True, help="Seed for the sampled config and the weights.")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs (default: the config's `epochs`).")
@json_option
@quiet_option
def trial(
    space_name: str,
    dataset: str,
    data_dir: str | None,
    target: str,
    overrides: tuple[str, ...],
    seed: int,
    epochs: int | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Train one config in process: sampled from --space with --seed, then --set overrides.

    \b
    Examples:
      search trial --space quick --dataset digits
      search trial --set activation=selu --set initializer=lecun_normal --set standardize=true
    """
    from search import config as vocab
    from search.data import load_dataset
    from search.space import load_space
    from search.train import fit

    cfg = load_space(space_name).sample(seed)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise SearchError(f"--set {item}: expected KEY=VALUE, e.g. --set n_hidden=3")
        cfg[key.strip()] = vocab.parse_value(key.strip(), text)
    cfg = {k: v for k, v in cfg.items() if vocab.applies(k, cfg)}  # e.g. momentum after --set optimizer=adam
    vocab.check_config(cfg)
    data = load_dataset(dataset, data_dir=data_dir, target=target)
    if not quiet:
        click.echo(data.describe(), err=True)
        click.echo("config: " + json.dumps(cfg, default=str), err=True)

    def show(row: dict[str, float], _model: Any) -> None:
        if not as_json:
            click.echo(
                f"epoch {int(row['epoch']):3d}  loss {row['loss']:.4f}  acc {row['accuracy']:.4f}  "
                f"val_loss {row['val_loss']:.4f}  val_acc {row['val_accuracy']:.4f}  "
                f"lr {row['lr']:.2e}  {row['epoch_time_s']:.2f}s"
            )

    result = fit(cfg, data, epochs=epochs, report=show, seed=seed)
    best = result.best()
    summary = {"config": cfg, "epochs": result.epochs, "best_epoch": int(best["epoch"]),
               "val_accuracy": best["val_accuracy"], "val_loss": best["val_loss"], "history": result.history}
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        click.echo(
            f"result: val_accuracy {best['val_accuracy']:.4f}  val_loss {best['val_loss']:.4f}  "
            f"(best epoch {int(best['epoch'])} of {result.epochs})"
        )


# -- launch -----------------------------------------------------------------------------------
def search_options(f: F) -> F:
    """The options of a search, shared by ``launch`` and ``pipeline``."""
    opts = [
        click.option("--space", default="default", show_default=True, help="Search space: built-in name or YAML path."),
        dataset_options,
        click.option("--num-samples", default=16, show_default=True, type=int, help="Trials to run."),
        click.option("--max-epochs", type=int, help="Epochs per trial (default: the space's `epochs`)."),
        click.option("--searcher", default="tpe", show_default=True, type=click.Choice(["random", "tpe", "bayes"]),
                     help="random: Ray's variant generator; tpe: Optuna TPE; bayes: KerasTuner's Bayesian optimization."),
        click.option("--scheduler", type=click.Choice(["fifo", "asha", "hyperband", "pbt"]),
                     help="Trial scheduler [default: asha when --num-samples > --concurrency, else fifo]."),
        click.option("--metric", default="val_accuracy", show_default=True, help="Metric the search optimizes."),
        click.option("--mode", default="max", show_default=True, type=click.Choice(["max", "min"])),
        click.option("--concurrency", type=int, help="Trials at once [default: as many as the CPUs allow]."),
        click.option("--cpus-per-trial", default=1.0, show_default=True, type=float, help="CPUs per trial (TF threads follow)."),
        click.option("--gpus-per-trial", default=0.0, show_default=True, type=float, help="GPUs per trial; 0.5 shares a GPU."),
        click.option("--address", envvar="RAY_ADDRESS", help="Ray cluster to join [env: RAY_ADDRESS; default: a local Ray]."),
        tracking_options,
        click.option("--name", help="Search name (the parent run's name) [default: SPACE-DATASET-TIME]."),
        click.option("--seed", default=0, show_default=True, type=int, help="Searcher seed."),
        click.option("--storage-path", envvar="SEARCH_STORAGE_PATH", help="Ray results and checkpoints [default: ./ray_results]."),
        click.option("--resume", is_flag=True, help="Continue the interrupted search --name."),
        click.option("--max-failures", default=0, show_default=True, type=int, help="Retries of a trial lost to a crash."),
        click.option("--tracking-retry-s", default=120.0, show_default=True, type=click.FloatRange(min=0),
                     help="How long MLflow writes are retried while the tracking server is away; then the search "
                          "stops with an error, and --resume continues it."),
    ]
    for option in reversed(opts):
        f = option(f)
    return f


def launch_options(kwargs: dict[str, Any], quiet: bool) -> Any:
    from search.tuner import LaunchOptions

    fields = set(LaunchOptions.__dataclass_fields__)
    return LaunchOptions(**{k: v for k, v in kwargs.items() if k in fields}, quiet=quiet)


def progress_printer(quiet: bool) -> Callable[[str], None] | None:
    """Writes the live line in place on a terminal; nothing with -q or when stderr is not a terminal."""
    if quiet or not sys.stderr.isatty():
        return None

    def show(line: str) -> None:
        sys.stderr.write("\r\033[K" + line)
        sys.stderr.flush()

    return show


def search_report(result: Any) -> str:
    rows = []
    for t in result.top(5):
        cfg = t.config
        rows.append({"trial": t.name, result.metric: t.metric, "epoch": t.best_epoch, "lr": cfg.get("learning_rate"),
                     "batch": cfg.get("batch_size"), "dropout": cfg.get("dropout"), "run_id": t.run_id})
    failed = sum(t.state == "failed" for t in result.trials)
    stopped = sum(t.state == "stopped_early" for t in result.trials)
    lines = [
        f"search {result.name}: {len(result.trials)} trials ({failed} failed, {stopped} stopped early) "
        f"in {result.wall_time_s:.0f} s",
        "",
        table(rows, ["trial", result.metric, "epoch", "lr", "batch", "dropout", "run_id"]),
        "",
        f"parent run: {result.parent_run_id} (experiment {result.experiment})",
        f"MLflow UI:  {result_ui(result)}",
    ]
    return "\n".join(lines)


def result_ui(result: Any) -> str:
    from search.tuner import ui_command

    return ui_command(result.tracking_uri)


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
    """
    from search.tuner import launch as run_launch

    printer = progress_printer(quiet)
    result = run_launch(launch_options(kwargs, quiet), progress=printer)
    if printer:
        sys.stderr.write("\n")
    emit(result.to_dict(), as_json, lambda _: search_report(result))


# -- runs and best ----------------------------------------------------------------------------
@cli.command()
@tracking_options
@json_option
def runs(tracking_uri: str | None, experiment: str, as_json: bool) -> None:
    """List searches (parent runs) with their best metric, newest first.

    \b
    Examples:
      search runs
      search runs --tracking-uri http://mlflow:5000 --json
    """
    from search import tracking

    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_reachable(uri)
    rows = []
    for run in tracking.list_searches(uri, experiment):
        metric = run.data.params.get("metric", "val_accuracy")
        rows.append({
            "name": run.info.run_name, "run_id": run.info.run_id, "status": run.info.status,
            "space": run.data.params.get("space"), "trials": _int(run.data.metrics.get("trials")),
            "metric": metric, "best": run.data.metrics.get(f"best_{metric}"),
        })
    emit(rows, as_json, lambda rs: table(rs, ["name", "status", "space", "trials", "metric", "best", "run_id"]) if rs
         else f"no searches in experiment {experiment!r} at {uri}")


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


@cli.command()
@tracking_options
@click.option("--name", help="Search name [default: the newest search].")
@click.option("--parent-run", help="Parent run id of the search.")
@json_option
def best(tracking_uri: str | None, experiment: str, name: str | None, parent_run: str | None, as_json: bool) -> None:
    """Print the best trial's config and metrics, read from MLflow.

    \b
    Examples:
      search best
      search best --name my-search --json | jq .config
    """
    from search import tracking

    uri = tracking.resolve_tracking_uri(tracking_uri)
    tracking.check_reachable(uri)
    parent = tracking.find_parent(uri, experiment, name=name, run_id=parent_run)
    metric = parent.data.params.get("metric", "val_accuracy")
    mode = parent.data.params.get("mode", "max")
    trials = tracking.trials_of(uri, parent, f"best_{metric}", mode)
    if not trials:
        raise SearchError(f"search {parent.info.run_name} has no finished trial with {metric}")
    top = trials[0]
    result = {
        "search": parent.info.run_name, "parent_run_id": parent.info.run_id, "run_id": top.info.run_id,
        "trial": top.info.run_name, "metric": metric, "value": top.data.metrics[f"best_{metric}"],
        "best_epoch": _int(top.data.metrics.get("best_epoch")), "config": tracking.config_of(top),
        "metrics": dict(top.data.metrics),
    }

    def text(r: dict[str, Any]) -> str:
        lines = [f"{r['trial']}  {metric} {r['value']:.4f} at epoch {r['best_epoch']}  (run {r['run_id']})"]
        lines += [f"  {k:<18} {v}" for k, v in sorted(r["config"].items())]
        return "\n".join(lines)

    emit(result, as_json, text)


# -- pipelines ----------------------------------------------------------------------------------
def progress_bar(quiet: bool, label: str) -> Callable[[int, int, str], None] | None:
    """A progress bar on stderr, updated as (done, total, what); none with -q or off a terminal."""
    if quiet or not sys.stderr.isatty():
        return None
    state: dict[str, Any] = {}

    def update(done: int, total: int, what: str) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = click.progressbar(length=total, label=label, file=sys.stderr, show_pos=True)
            bar.__enter__()
        bar.label = f"{label} ({what})"
        bar.update(done - bar.pos)
        if done >= total:
            bar.__exit__(None, None, None)

    return update


def retrain_options(f: F) -> F:
    opts = [
        click.option("--epochs", type=int, help="Epochs [default: the best trial's best epoch]."),
        click.option("--seeds", default=3, show_default=True, type=int, help="Retrain with this many seeds: mean ± std."),
        click.option("--register", metavar="NAME", help="Register the best seed's model in the Model Registry."),
        click.option("--compare-runner-up", is_flag=True, help="Also retrain the runner-up, to tell a real lead from luck."),
    ]
    for option in reversed(opts):
        f = option(f)
    return f


def retrain_report(r: Any) -> str:
    def line(c: Any, label: str) -> str:
        return (f"{label:<10} {c.trial_name}: test accuracy {c.accuracy_mean:.4f} ± {c.accuracy_std:.4f}, "
                f"test loss {c.loss_mean:.4f} ± {c.loss_std:.4f} ({len(c.seeds)} seeds, {c.epochs} epochs)")

    lines = [f"search {r.search}: retrained on train+valid, scored on the test split", line(r.best, "best")]
    if r.runner_up:
        lines.append(line(r.runner_up, "runner-up"))
    lines += ["", r.verdict, "", f"model:      {r.model_uri}"]
    if r.registered:
        lines.append(f"registered: {r.registered}")
    lines.append(f"best seed run: {r.best_seed_run_id}")
    return "\n".join(lines)


@cli.command()
@tracking_options
@click.option("--name", help="Search name [default: the newest search].")
@click.option("--parent-run", help="Parent run id of the search.")
@retrain_options
@click.option("--data-dir", envvar="SEARCH_DATA_DIR", help="Dataset folder, if the search used one.")
@json_option
@quiet_option
def retrain(tracking_uri: str | None, experiment: str, name: str | None, parent_run: str | None, epochs: int | None,
            seeds: int, register: str | None, compare_runner_up: bool, data_dir: str | None, as_json: bool,
            quiet: bool) -> None:
    """Retrain a search's best config on train+valid with several seeds; score the test split.

    The config is read from MLflow, so this works in a later shell or on another machine.
    Each seed is a child run (role=retrain) of the search; the best seed's model is logged with
    MLflow's Keras flavor.

    \b
    Examples:
      search retrain
      search retrain --name my-search --seeds 5 --compare-runner-up --register digits-mlp
    """
    from pipelines.retrain import retrain as run_retrain

    result = run_retrain(tracking_uri=tracking_uri, experiment=experiment, name=name, parent_run=parent_run,
                         epochs=epochs, seeds=seeds, register=register, compare_runner_up=compare_runner_up,
                         data_dir=data_dir, progress=progress_bar(quiet, "retraining"))
    emit(result.to_dict(), as_json, lambda _: retrain_report(result))


def evaluate_report(r: Any) -> str:
    keys = ["accuracy", "nll", "brier", "ece", "entropy", "mutual_info", "auroc_max_prob", "auroc_entropy",
            "auroc_mutual_info", "acc_at_50", "acc_at_80", "acc_at_90", "acc_at_95"]
    det, mc = r.metrics.get("deterministic", {}), r.metrics.get("mc", {})
    rows = [{"metric": k, "deterministic": det.get(k), f"MC dropout (T={r.samples})": mc.get(k)} for k in keys
            if k in det or k in mc]
    lines = [f"{r.dataset} test split, model {r.model_uri}", "", table(rows, ["metric", "deterministic", f"MC dropout (T={r.samples})"])]
    if r.note:
        lines += ["", r.note]
    lines += ["", f"evaluate run: {r.run_id}  (artifacts: {', '.join(r.artifacts)})"]
    return "\n".join(lines)


def evaluate_options(f: F) -> F:
    opts = [
        click.option("--mc-samples", default=100, show_default=True, type=int, help="MC dropout samples T."),
    ]
    for option in reversed(opts):
        f = option(f)
    return f


@cli.command()
@tracking_options
@click.option("--run-id", help="A retrain, trial or search run [default: the newest search's best retrain].")
@click.option("--model-uri", help="Any MLflow model URI (runs:/..., models:/NAME/VERSION).")
@evaluate_options
@click.option("--dataset", help="Dataset [default: the one the search used].")
@click.option("--data-dir", envvar="SEARCH_DATA_DIR", help="Dataset folder, if needed.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the MC sampling.")
@json_option
@quiet_option
def evaluate(tracking_uri: str | None, experiment: str, run_id: str | None, model_uri: str | None, mc_samples: int,
             dataset: str | None, data_dir: str | None, seed: int, as_json: bool, quiet: bool) -> None:
    """Evaluate a model with Monte-Carlo dropout: accuracy, NLL, Brier, ECE, entropy, BALD, AUROC, coverage.

    Dropout layers become MC layers (stochastic at inference) while BatchNormalization stays in
    inference mode. Metrics, predictions.npz and the plots go to a child run tagged role=evaluate.

    \b
    Examples:
      search evaluate
      search evaluate --run-id 3f2c... --mc-samples 200
      search evaluate --model-uri models:/digits-mlp/1 --json
    """
    from pipelines.evaluate import evaluate as run_evaluate

    result = run_evaluate(tracking_uri=tracking_uri, experiment=experiment, run_id=run_id, model_uri=model_uri,
                          mc_samples=mc_samples, dataset=dataset, data_dir=data_dir, seed=seed,
                          progress=progress_bar(quiet, "MC sampling"))
    emit(result.to_dict(), as_json, lambda _: evaluate_report(result))


@cli.command()
@search_options
@retrain_options
@evaluate_options
@json_option
@quiet_option
def pipeline(as_json: bool, quiet: bool, epochs: int | None, seeds: int, register: str | None,
             compare_runner_up: bool, mc_samples: int, **kwargs: Any) -> None:
    """Launch a search, retrain its best config, and evaluate it with MC dropout: one command.

    \b
    Examples:
      search pipeline
      search pipeline --space quick --num-samples 8 --seeds 2 --mc-samples 50
    """
    from pipelines.evaluate import evaluate as run_evaluate
    from pipelines.retrain import retrain as run_retrain
    from search.tuner import launch as run_launch

    printer = progress_printer(quiet)
    searched = run_launch(launch_options(kwargs, quiet), progress=printer)
    if printer:
        sys.stderr.write("\n")
    retrained = run_retrain(tracking_uri=searched.tracking_uri, experiment=searched.experiment,
                            parent_run=searched.parent_run_id, epochs=epochs, seeds=seeds, register=register,
                            compare_runner_up=compare_runner_up, data_dir=kwargs.get("data_dir"),
                            progress=progress_bar(quiet, "retraining"))
    evaluated = run_evaluate(tracking_uri=searched.tracking_uri, experiment=searched.experiment,
                             run_id=retrained.best_seed_run_id, mc_samples=mc_samples, seed=kwargs.get("seed", 0),
                             data_dir=kwargs.get("data_dir"), progress=progress_bar(quiet, "MC sampling"))
    report = {"search": searched.to_dict(), "retrain": retrained.to_dict(), "evaluate": evaluated.to_dict(),
              "runs": {"search": searched.parent_run_id, "retrain": retrained.best_seed_run_id,
                       "evaluate": evaluated.run_id}}
    emit(report, as_json, lambda _: "\n\n".join([search_report(searched), retrain_report(retrained),
                                                   evaluate_report(evaluated)]))


# -- ui ---------------------------------------------------------------------------------------
@cli.command()
@tracking_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; loopback unless you say otherwise.")
@click.option("--port", default=5000, show_default=True, type=int, help="Port of the UI.")
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
    tracking.check_reachable(uri)
    exp_id = tracking.experiment_id(uri, experiment)
    fragment = f"/#/experiments/{exp_id}" if exp_id else ""
    if uri.startswith(("http://", "https://")):
        click.echo(f"{uri.rstrip('/')}{fragment}")
        return
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    click.echo(f"MLflow UI for {uri}: http://{shown}:{port}{fragment}  (Ctrl-C stops it)")
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host, "--port", str(port),
               "--workers", "1"]
    try:
        code = subprocess.run(command, check=False).returncode
    except KeyboardInterrupt:
        code = 0
    if code not in (0, -2, 130):
        raise SearchError(f"mlflow server exited with status {code}; is port {port} free? Try --port")


def main() -> None:
    """Entry point of the ``search`` console script."""
    cli(prog_name="search")


if __name__ == "__main__":
    main()
