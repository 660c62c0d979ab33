"""Warm start: does a TPE search that starts from an earlier search reach that search's best in fewer trials?

One earlier search (TPE, seed 0) over the `quick` space on digits. Then, for each seed, two
new searches with that seed and the same budget: one cold, one with ``--warm-start`` from the
earlier search. Every search is FIFO (each trial trains all its epochs, so trials compare
alike), two trials at a time, in one process on one local Ray. For each new search: the
trials, in start order, until its best-so-far val_accuracy reaches the earlier search's best
(and until it comes within 0.5 points of it); a search that never gets there within its budget
counts as budget + 1 and is marked so.

    python -m bench.bench_warm_start [--quick | --render]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    main, close_env, environment, command_line, finish, md_table, text_table, trial_runs, workdir,
)

SPACE = "quick"


def best_so_far(uri: str, parent_run_id: str) -> list[float]:
    """The best val_accuracy after each trial, trials in the order they started (from MLflow)."""
    runs = sorted(trial_runs(uri, parent_run_id), key=lambda r: r.info.start_time or 0)
    out, best = [], float("-inf")
    for run in runs:
        best = max(best, run.data.metrics.get("best_val_accuracy", float("-inf")))
        out.append(best)
    return out


def trials_to(curve: list[float], target: float, budget: int) -> int:
    """1-based index of the first trial whose best-so-far reaches ``target``; budget + 1 if none."""
    return next((i + 1 for i, v in enumerate(curve) if v >= target - 1e-12), budget + 1)


def run(quick: bool = False) -> dict[str, Any]:
    import ray

    from search.tune import LaunchOptions
    from search.tune.launch import launch

    budget, seeds = (8, (1, 2)) if quick else (16, (1, 2, 3))
    env = environment()
    folder = workdir("warm")
    uri = f"sqlite:///{folder}/mlflow.db"
    common = {"space": SPACE, "num_samples": budget, "searcher": "tpe", "scheduler": "fifo", "concurrency": 2,
              "quiet": True, "tracking_uri": uri, "storage_path": str(folder / "ray")}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        earlier = launch(LaunchOptions.from_flat(**common, name="earlier", seed=0))
        target = earlier.best.metric
        figures = {"earlier_best": target, "budget": budget, "seeds": list(seeds), "runs": []}
        for seed in seeds:
            for kind, extra in (("cold", {}), ("warm", {"warm_start": ("earlier",)})):
                result = launch(LaunchOptions.from_flat(**common, name=f"{kind}-{seed}", seed=seed, **extra))
                curve = best_so_far(uri, result.parent_run_id)
                reach, near = trials_to(curve, target, budget), trials_to(curve, target - 0.005, budget)
                figures["runs"].append({"kind": kind, "seed": seed, "curve": curve, "to_best": reach, "to_near": near,
                                        "final": curve[-1], "wall_s": result.wall_time_s})
    finally:
        ray.shutdown()
    return render({"quick": quick, "env": close_env(env), "figures": figures})


def render(result: dict[str, Any]) -> dict[str, Any]:
    """The table, the verdict and the doc section from a result (``--render`` redraws a saved one)."""
    figures, quick, env = result["figures"], result["quick"], result["env"]
    target, budget, seeds = figures["earlier_best"], figures["budget"], figures["seeds"]
    rows = [[r["kind"], r["seed"], _n(r["to_best"], budget), _n(r["to_near"], budget), r["final"], r["wall_s"]]
            for r in figures["runs"]]
    mean = {k: {m: statistics.mean(r[m] for r in figures["runs"] if r["kind"] == k) for m in ("to_best", "to_near", "final")}
            for k in ("cold", "warm")}
    median = {k: statistics.median(r["to_best"] for r in figures["runs"] if r["kind"] == k) for k in ("cold", "warm")}
    figures["mean"], figures["median"] = mean, median
    met = mean["warm"]["to_best"] < mean["cold"]["to_best"]
    headline = (f"trials to the earlier best ({target:.4f}): warm {mean['warm']['to_best']:.1f} vs cold "
                f"{mean['cold']['to_best']:.1f} (mean over seeds {', '.join(map(str, seeds))}; {budget + 1} = not reached), "
                f"median {median['warm']:g} vs {median['cold']:g}; within 0.5 points: {mean['warm']['to_near']:.1f} vs "
                f"{mean['cold']['to_near']:.1f}")
    header = ["search", "seed", "trials to the earlier best", "trials to within 0.5 points", "final best", "wall s"]
    rows += [[f"mean {k}", "", f"{mean[k]['to_best']:.1f}", f"{mean[k]['to_near']:.1f}", mean[k]["final"], ""]
             for k in ("cold", "warm")]
    result.update(headline=headline, met=met)
    section = "\n".join([
        __doc__.split("\n\n    python")[0].strip(),
        "",
        f"The earlier search's best val_accuracy: **{target:.4f}** ({budget} trials).",
        "",
        md_table(rows, header),
        "",
        f"Target (issue #16): a warm-started TPE search reaches the earlier best in fewer trials than a cold one: "
        f"**{'met' if met else 'not met'}**; {headline}."
        + "".join(f" The {r['kind']} search with seed {r['seed']} never reached the exact earlier best (its best: "
                  f"{r['final']:.4f}); the mean counts it as {budget + 1}." for r in figures["runs"] if r["to_best"] > budget)
        + " The earlier best is itself the maximum of 16 noisy validation scores, so reaching it exactly is a high bar; "
        "the 0.5-point column is the steadier measure.",
        "",
        command_line("bench_warm_start", quick, env),
    ])
    return finish("warm_start", result, section, title="Warm start", table=text_table(rows, header))


def _n(trials: int, budget: int) -> str:
    return f"{trials}" if trials <= budget else f"not reached ({trials})"


if __name__ == "__main__":
    main(__doc__, run, render=render, name="warm_start")
