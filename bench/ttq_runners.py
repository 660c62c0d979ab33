"""The peers of the time-to-quality benchmark, each as its users run it, in one process each.

    python -m bench.ttq_runners TOOL --space bench/spaces/overhead.yaml --trials 16 --epochs 30 --seed 0

TOOL is one of ``kt_random`` (``keras_tuner.RandomSearch``), ``kt_hyperband``
(``keras_tuner.Hyperband``, ``max_epochs`` = --epochs, factor 3), ``optuna_tpe`` (a plain Optuna
script: ``TPESampler`` with ``MedianPruner``, one trial after another), ``ray_fifo`` and
``ray_asha`` (plain Ray Tune: random search over ``Space.to_ray()``, FIFO or ASHA, Ray's default
loggers and concurrency, no MLflow). All build their models with ``search.model.build_model`` on
the same digits splits and ``tf.data`` pipelines. Prints one JSON line: ``events``, a
``[unix time, val_accuracy]`` pair per epoch trained, as each epoch ended.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _parts(space_path: str) -> tuple[Any, Any, int, int]:
    from search import config as vocab
    from search.data import load_dataset
    from search.space import load_space

    space = load_space(space_path)
    dataset = load_dataset("digits")
    batch_size = int(vocab.resolve(space.sample(0))["batch_size"])  # fixed in the space
    return space, dataset, batch_size, max(1, math.ceil(len(dataset.train.y) / batch_size))


def _model(space: Any, dataset: Any, values: dict[str, Any], epochs: int, steps: int) -> Any:
    from search import config as vocab
    from search.model import build_model

    cfg = space.assemble(values)
    cfg["epochs"] = epochs
    return build_model(vocab.resolve(cfg), dataset.input_shape, dataset.n_classes, steps_per_epoch=steps)


def _recorder(events: list[list[float]], on_epoch: Any = None) -> Any:
    import keras

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            value = float((logs or {}).get("val_accuracy", float("nan")))
            events.append([time.time(), value])
            if on_epoch is not None:
                on_epoch(epoch, value)

    return Record()


def keras_tuner(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    import keras_tuner as kt

    from search.train import make_tf_dataset

    space, dataset, batch_size, steps = _parts(args.space)
    events: list[list[float]] = []
    common = {"objective": "val_accuracy", "seed": args.seed, "hyperparameters": space.to_keras_tuner(),
              "directory": tempfile.mkdtemp(prefix="kt-"), "project_name": "kt", "overwrite": True}
    build = lambda hp: _model(space, dataset, hp.values, args.epochs, steps)  # noqa: E731
    if kind == "random":
        tuner = kt.RandomSearch(build, max_trials=args.trials, **common)
    else:
        tuner = kt.Hyperband(build, max_epochs=args.epochs, factor=3, **common)
    tuner.search(make_tf_dataset(dataset.train, batch_size, shuffle=True),
                 validation_data=make_tf_dataset(dataset.valid, 1024, shuffle=False), epochs=args.epochs, verbose=0,
                 callbacks=[_recorder(events)])
    return {"events": events, "trials": len(tuner.oracle.trials)}


def optuna_tpe(args: argparse.Namespace) -> dict[str, Any]:
    import optuna

    from search.train import make_tf_dataset

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space, dataset, batch_size, steps = _parts(args.space)
    events: list[list[float]] = []
    suggest = space.to_optuna()
    train = make_tf_dataset(dataset.train, batch_size, shuffle=True)
    valid = make_tf_dataset(dataset.valid, 1024, shuffle=False)

    def objective(trial: optuna.Trial) -> float:
        suggest(trial)
        model = _model(space, dataset, dict(trial.params), args.epochs, steps)
        best = 0.0

        def report(epoch: int, value: float) -> None:
            nonlocal best
            best = max(best, value)
            trial.report(value, epoch)
            if trial.should_prune():
                model.stop_training = True
                raise optuna.TrialPruned()

        try:
            model.fit(train, validation_data=valid, epochs=args.epochs, verbose=0, callbacks=[_recorder(events, report)])
        except optuna.TrialPruned:
            raise
        return best

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2))
    study.optimize(objective, n_trials=args.trials)
    return {"events": events, "trials": len(study.trials)}


def ray_tune(args: argparse.Namespace, scheduler: str) -> dict[str, Any]:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    space, dataset, batch_size, steps = _parts(args.space)
    ray.init(include_dashboard=False, log_to_driver=False)
    data_ref = ray.put(dataset)

    def trainable(config: dict[str, Any]) -> None:
        from search.train import make_tf_dataset

        data = ray.get(data_ref)
        model = _model(space, data, config, args.epochs, steps)
        model.fit(make_tf_dataset(data.train, batch_size, shuffle=True),
                  validation_data=make_tf_dataset(data.valid, 1024, shuffle=False), epochs=args.epochs, verbose=0,
                  callbacks=[_recorder([], lambda epoch, value: tune.report({"val_accuracy": value, "t": time.time()}))])

    chosen = ASHAScheduler(max_t=args.epochs, grace_period=1) if scheduler == "asha" else FIFOScheduler()
    tuner = tune.Tuner(trainable, param_space=space.to_ray(),
                       tune_config=tune.TuneConfig(metric="val_accuracy", mode="max", num_samples=args.trials,
                                                   scheduler=chosen),
                       run_config=tune.RunConfig(storage_path=tempfile.mkdtemp(prefix="ray-ttq-"), verbose=0))
    grid = tuner.fit()
    events = [[float(row["t"]), float(row["val_accuracy"])] for result in grid
              for _, row in result.metrics_dataframe.iterrows()]
    return {"events": sorted(events), "trials": len(grid)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tool", choices=["kt_random", "kt_hyperband", "optuna_tpe", "ray_fifo", "ray_asha"])
    parser.add_argument("--space", required=True)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run = {"kt_random": lambda: keras_tuner(args, "random"), "kt_hyperband": lambda: keras_tuner(args, "hyperband"),
           "optuna_tpe": lambda: optuna_tpe(args), "ray_fifo": lambda: ray_tune(args, "fifo"),
           "ray_asha": lambda: ray_tune(args, "asha")}[args.tool]
    print(json.dumps(run()))


if __name__ == "__main__":
    main()
