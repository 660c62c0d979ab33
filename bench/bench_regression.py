"""Regression (issue #15): the default pipeline on diabetes against scikit-learn, on the same split.

Everyone trains on the project's diabetes train+valid split (353 patients; features standardized
with the training split's statistics) and is scored on its test split (89 patients), which no one
looks at before. The pipeline is `search pipeline --dataset diabetes` with its defaults, run as a
whole process: 16 TPE trials over the `regression` space (mse, huber and gaussian_nll losses), the
best retrained with 3 seeds, evaluated with MC dropout (T=100). Baselines, in the same run:
scikit-learn's `RidgeCV` (alphas 1e-3..1e3) and `MLPRegressor` (early stopping, 3 seeds), on the
same features. Intervals: the pipeline's evaluate run; RidgeCV's are its residual standard
deviation on the training split, as a Gaussian, for comparison.

    python -m bench.bench_regression [--quick]
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    CHILD_ENV, close_env, environment, command_line, targets_line, finish, main, md_table, run_timed, search_cli, text_table, workdir,
)


def _mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{values[0]:.2f}"


def sklearn_baselines(seeds: int) -> dict[str, Any]:
    import numpy as np
    from sklearn.linear_model import RidgeCV
    from sklearn.neural_network import MLPRegressor

    from pipelines import regression as reg
    from search.data import load_dataset, merge_train_valid

    data = merge_train_valid(load_dataset("diabetes"))
    x, y, xt, yt = data.train.x, data.train.y, data.test.x, data.test.y
    ridge = RidgeCV(alphas=np.logspace(-3, 3, 25)).fit(x, y)
    predicted = ridge.predict(xt)
    noise = math.sqrt(reg.noise_variance(ridge.predict(x), y))
    ridge_p = reg.Predictive(predicted, np.zeros_like(predicted), np.full_like(predicted, noise**2))
    mlp = [reg.point_scores(MLPRegressor(hidden_layer_sizes=(64, 64), early_stopping=True, max_iter=2000,
                                         learning_rate_init=0.01, random_state=s).fit(x, y).predict(xt), yt)
           for s in range(seeds)]
    return {"ridge": reg.summarize(ridge_p, yt), "ridge_alpha": float(ridge.alpha_), "mlp": mlp}


def run(quick: bool = False) -> dict[str, Any]:
    env = environment()
    seeds = 3
    folder = workdir("regression")
    budget = ["--num-samples", "4", "--max-epochs", "20"] if quick else []
    timed = run_timed([search_cli(), "pipeline", "--dataset", "diabetes", "-q", "--json", "--tracking-uri",
                       f"sqlite:///{folder}/mlflow.db", *budget], cwd=folder, env=CHILD_ENV)
    pipe = json.loads(timed.stdout)
    retrain, metrics = pipe["retrain"], pipe["evaluate"]["metrics"]
    single = [s["scores"]["rmse"] for s in retrain["best"]["seeds"]]
    base = sklearn_baselines(seeds)
    ridge, mlp = base["ridge"], base["mlp"]
    mlp_rmse = [m["rmse"] for m in mlp]
    main_kind = "mc" if "mc" in metrics else "deterministic"
    pm = metrics[main_kind]
    rows = [["`search pipeline`: retrained best, each seed", _mean_std(single), "", "", f"{timed.wall_s:.0f} s, whole pipeline"],
            [f"`search pipeline`: evaluated model, the seed picked on the calibration slice ({main_kind})",
             f"{pm['rmse']:.2f}", f"{pm['r2']:.3f}", f"{pm['coverage_90']:.1%}", ""],
            ["`search pipeline`: deep ensemble of the seeds", f"{retrain['ensemble']['test_rmse']:.2f}",
             f"{retrain['ensemble']['test_r2']:.3f}", f"{metrics['ensemble']['coverage_90']:.1%}" if "ensemble" in metrics
             else "", ""],
            [f"scikit-learn RidgeCV (alpha {base['ridge_alpha']:.3g})", f"{ridge['rmse']:.2f}", f"{ridge['r2']:.3f}",
             f"{ridge['coverage_90']:.1%}", ""],
            ["scikit-learn MLPRegressor(64, 64), each seed", _mean_std(mlp_rmse),
             _mean_std([m["r2"] for m in mlp]).replace(" ± ", " ± "), "", ""]]
    calib = [[k, v["rmse"], v["mae"], v["r2"], v["nll"], v["crps"], v["coverage_50"], v["coverage_90"], v["coverage_95"],
              v["width_90"]] for k, v in metrics.items()]
    calib.append(["RidgeCV (residual std)", ridge["rmse"], ridge["mae"], ridge["r2"], ridge["nll"], ridge["crps"],
                  ridge["coverage_50"], ridge["coverage_90"], ridge["coverage_95"], ridge["width_90"]])
    # The evaluated model is the seed with the best RMSE on the calibration slice; the deep ensemble of the
    # seeds involves no choice at all, and the RMSE targets are judged on it.
    ensemble_rmse = retrain["ensemble"]["test_rmse"]
    checks = {
        "deep ensemble's test RMSE <= RidgeCV's": ensemble_rmse <= ridge["rmse"],
        "deep ensemble's test RMSE <= MLPRegressor's (mean of seeds)": ensemble_rmse <= statistics.mean(mlp_rmse),
        "the evaluated model's 90% intervals cover 85-95%": 0.85 <= pm["coverage_90"] <= 0.95,
    }
    met = all(checks.values())
    headline = (f"deep ensemble test RMSE {ensemble_rmse:.2f} (seeds {_mean_std(single)}); 90% coverage "
                f"{pm['coverage_90']:.1%} ({main_kind}); RidgeCV {ridge['rmse']:.2f}, MLPRegressor {_mean_std(mlp_rmse)}")
    header = ["model", "test RMSE", "R²", "90% coverage", "cost"]
    result = {"quick": quick, "env": close_env(env), "pipeline": pipe, "sklearn": base, "checks": checks,
              "headline": headline, "met": met, "pipeline_wall_s": timed.wall_s}
    section = "\n".join([
        __doc__.split("\n\n    python")[0].strip(),
        "",
        md_table(rows, header),
        "",
        "The pipeline's evaluate run (and RidgeCV's Gaussian intervals), on the same test split:",
        "",
        md_table(calib, ["predictor", "RMSE", "MAE", "R²", "NLL", "CRPS", "50% cov.", "90% cov.", "95% cov.", "90% width"]),
        "",
        targets_line(15, checks),
        "",
        command_line("bench_regression", quick, env),
    ])
    return finish("regression", result, section, title="Regression", table=text_table(rows, header))


if __name__ == "__main__":
    main(__doc__, run)
