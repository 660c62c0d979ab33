"""Quality: the README's default pipeline against scikit-learn and KerasTuner on the same digits split.

Everyone trains on the project's digits train+valid split (1,437 images) and is scored on its
test split (360 images), which no one looks at before. The pipeline is `search pipeline` with its
defaults, run as a whole process: 16 TPE trials over the `default` space, the best retrained with
3 seeds on train+valid less its 10% calibration slice (1,293 images; the baselines train on all
1,437), evaluated with MC dropout (T=100), the deep ensemble of the seeds and each predictor with
its own temperature, fitted on the slice.
Baselines, in the same run: scikit-learn's `MLPClassifier()` with its defaults (3 seeds),
`SVC(C=10)` and `LogisticRegression`, on the same pixels; and KerasTuner's `RandomSearch` over the
same space with the same budget (16 trials of up to 40 epochs, early stopping with the trial's
patience), its best config retrained the way `search retrain` does it (the epochs where its
validation curve, smoothed over 5 epochs, peaked; 3 seeds, and their ensemble), on all of
train+valid: it fits no temperatures, so it holds no slice out.

    python -m bench.bench_quality [--quick]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    main, CHILD_ENV, close_env, environment, command_line, targets_line, finish, md_table, run_timed, search_cli, text_table, workdir,
)


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def sklearn_baselines(seeds: int) -> dict[str, list[float]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.svm import SVC

    from search.data import load_dataset, merge_train_valid

    data = merge_train_valid(load_dataset("digits"))
    x, y, xt, yt = data.train.x.reshape(len(data.train.y), -1), data.train.y, data.test.x.reshape(len(data.test.y), -1), data.test.y
    out = {"scikit-learn MLPClassifier()": [MLPClassifier(random_state=s).fit(x, y).score(xt, yt) for s in range(seeds)],
           "scikit-learn SVC(C=10)": [SVC(C=10).fit(x, y).score(xt, yt)],
           "scikit-learn LogisticRegression": [LogisticRegression(max_iter=5000).fit(x, y).score(xt, yt)]}
    return {k: [float(v) for v in vs] for k, vs in out.items()}


def kerastuner_best(trials: int, seeds: int) -> dict[str, Any]:
    """KerasTuner RandomSearch over the default space, then its best retrained as `search retrain` does."""
    import keras
    import keras_tuner
    import numpy as np

    from pipelines.ensemble import ensemble_model
    from pipelines.retrain import retrain_epochs
    from search import config as vocab
    from search.data import load_dataset, merge_train_valid
    from search.model import build_model
    from search.space import load_space
    from search.train import evaluate, fit, make_tf_dataset, prepare

    space, dataset = load_space("default"), load_dataset("digits")
    curves: dict[str, list[float]] = {}  # each trial's validation curve, by its hyperparameters

    class Model(keras_tuner.HyperModel):
        def build(self, hp: Any) -> Any:
            cfg = vocab.resolve(space.assemble(hp.values))
            steps = -(-len(dataset.train.y) // int(cfg["batch_size"]))
            return build_model(cfg, dataset.input_shape, dataset.n_classes, steps_per_epoch=steps)

        def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
            cfg = vocab.resolve(space.assemble(hp.values))
            data = prepare(cfg, dataset)
            stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(cfg["patience"]), restore_best_weights=True)
            history = model.fit(make_tf_dataset(data.train, int(cfg["batch_size"]), shuffle=True),
                                validation_data=make_tf_dataset(data.valid, 1024, shuffle=False),
                                epochs=int(cfg["epochs"]), callbacks=[stop], verbose=0)
            # KerasTuner keeps one value per trial (the best epoch's), not the curve: keep it here.
            curves[json.dumps(hp.values, sort_keys=True, default=str)] = list(history.history.get("val_accuracy", []))
            return history

    start = time.perf_counter()
    tuner = keras_tuner.RandomSearch(Model(), objective="val_accuracy", max_trials=trials, seed=0,
                                     hyperparameters=space.to_keras_tuner(), directory=tempfile.mkdtemp(prefix="kt-"),
                                     project_name="kt", overwrite=True)
    tuner.search()
    search_s = time.perf_counter() - start
    best = tuner.oracle.get_best_trials(1)[0]
    cfg = space.assemble(best.hyperparameters.values)
    # Its epochs by retrain's own rule, from its validation curve (the recorded best step without one).
    curve = curves.get(json.dumps(best.hyperparameters.values, sort_keys=True, default=str), [])
    epochs = retrain_epochs(curve, "max", int(best.best_step) + 1)
    merged = merge_train_valid(dataset)
    test = prepare(cfg, merged).test
    models = [fit(cfg, merged, epochs=epochs, seed=s, validate=False).model for s in range(seeds)]
    singles = [evaluate(m, test)["accuracy"] for m in models]
    probs = ensemble_model(models).predict(test.x, verbose=0)
    return {"search_s": search_s, "best_val_accuracy": float(best.score), "epochs": epochs, "config": cfg,
            "single": singles, "ensemble": float(np.mean(probs.argmax(axis=1) == test.y))}


def run(quick: bool = False) -> dict[str, Any]:
    env = environment()
    seeds = 3
    folder = workdir("quality")
    budget = ["--num-samples", "4", "--max-epochs", "5"] if quick else []
    timed = run_timed([search_cli(), "pipeline", "-q", "--json", "--tracking-uri", f"sqlite:///{folder}/mlflow.db",
                       *budget], cwd=folder, env=CHILD_ENV)
    pipe = json.loads(timed.stdout)
    retrain, metrics = pipe["retrain"], pipe["evaluate"]["metrics"]
    single = [s["test_accuracy"] for s in retrain["best"]["seeds"]]
    baselines = sklearn_baselines(seeds)
    kt = kerastuner_best(4 if quick else 16, seeds)
    rows = [["`search pipeline`: retrained best, each seed", _mean_std(single), ""],
            ["`search pipeline`: deep ensemble of the seeds", f"{retrain['ensemble']['test_accuracy']:.4f}", ""],
            *[[name, _mean_std(v), ""] for name, v in baselines.items()],
            ["KerasTuner RandomSearch best, retrained, each seed", _mean_std(kt["single"]), f"{kt['search_s']:.0f} s search"],
            ["KerasTuner best, deep ensemble of the seeds", f"{kt['ensemble']:.4f}", ""]]
    rows[0][2] = f"{timed.wall_s:.0f} s, whole pipeline"
    calib = [[k, v["accuracy"], v["nll"], v["ece"], v["brier"], v.get("auroc_max_prob", float("nan"))]
             for k, v in metrics.items()]
    ens, det = metrics.get("ensemble", {}), metrics["deterministic"]
    checks = {
        "ensemble test accuracy >= 0.985": retrain["ensemble"]["test_accuracy"] >= 0.985,
        "ensemble NLL <= single model's": bool(ens) and ens["nll"] <= det["nll"],
        "ensemble ECE <= single model's": bool(ens) and ens["ece"] <= det["ece"],
        "MC dropout ECE <= deterministic's": "mc" in metrics and metrics["mc"]["ece"] <= det["ece"],
        # MC dropout with its own temperature, against the deterministic model with its own: each calibrated
        # on the same validation split, so neither side gets a step the other lacks.
        "MC dropout + its temperature: ECE <= deterministic's": "mc_temperature" in metrics
        and metrics["mc_temperature"]["ece"] <= det["ece"],
        "MC dropout + its temperature: ECE <= temperature-scaled deterministic's": _le(metrics, "mc_temperature",
                                                                                       "temperature", "ece"),
        # The same for the ensemble: each predictor with the temperature fitted for it on the calibration slice.
        "ensemble + its temperature: NLL <= temperature-scaled single model's": _le(metrics, "ensemble_temperature",
                                                                                    "temperature", "nll"),
        "ensemble + its temperature: ECE <= temperature-scaled single model's": _le(metrics, "ensemble_temperature",
                                                                                    "temperature", "ece"),
    }
    met = all(checks.values())
    headline = (f"ensemble {retrain['ensemble']['test_accuracy']:.4f}, single {_mean_std(single)}; MLPClassifier "
                f"{_mean_std(baselines['scikit-learn MLPClassifier()'])}, SVC {baselines['scikit-learn SVC(C=10)'][0]:.4f}, "
                f"KerasTuner ensemble {kt['ensemble']:.4f}")
    header = ["model", "test accuracy", "cost"]
    result = {"quick": quick, "env": close_env(env), "pipeline": pipe, "sklearn": baselines, "kerastuner": kt,
              "checks": checks, "headline": headline, "met": met, "pipeline_wall_s": timed.wall_s}
    section = "\n".join([
        __doc__.split("\n\n    python")[0].strip(),
        "",
        md_table(rows, header),
        "",
        "The pipeline's evaluate run, on the same test split (the single model is the seed with the best "
        "accuracy on the calibration slice, ties to its NLL there; the test split picked nothing):",
        "",
        md_table(calib, ["predictor", "accuracy", "NLL", "ECE", "Brier", "AUROC of errors"]),
        "",
        targets_line(14, checks),
        "",
        command_line("bench_quality", quick, env),
    ])
    return finish("quality", result, section, title="Quality", table=text_table(rows, header))


def _le(metrics: dict[str, dict[str, float]], a: str, b: str, key: str) -> bool:
    """Whether predictor ``a``'s ``key`` is at most ``b``'s (False when either is missing)."""
    return a in metrics and b in metrics and metrics[a][key] <= metrics[b][key]


if __name__ == "__main__":
    main(__doc__, run)
