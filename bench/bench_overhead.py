"""Benchmark: what `search launch` costs on top of the training it runs.

Method. `search launch` (the console script, in a fresh process: interpreter start-up, imports,
Ray start, MLflow store creation and shutdown all included) runs 8 trials of the small space
``bench/spaces/overhead.yaml`` on digits: random searcher with seed 0, FIFO, 2 at a time, 1 CPU
(1 TF thread) each, no early stopping, E epochs each (60 in full mode, about 10 s a trial on an
idle 2-core machine). The 8 configs it ran are read back from MLflow, and bench/bare_fit.py fits
exactly those with bare ``model.fit`` (1 TF thread), 2 processes at a time as the trials were.

    ideal = sum of the 8 bare ``model.fit`` times / 2 (the effective concurrency)
    ratio = `search launch` wall time / ideal          target: <= 1.15

The launch's own timeline (from the MLflow start and end times of the parent and trial runs)
shows where the rest went: start-up before the first trial, the trials, and the end. Usage::

    python -m bench.bench_overhead            # 60 epochs a trial
    python -m bench.bench_overhead --quick    # 12 epochs a trial
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

NAME = "overhead"
TITLE = "Orchestration overhead"
TARGET = 1.15
TRIALS = 8
CONCURRENCY = 2


def timeline(out: dict[str, Any], t0: float, wall: float) -> dict[str, float]:
    """Seconds from process start to: the parent run, the first trial start, the last trial end, the parent end."""
    from search import tracking

    mlc = tracking.client(out["tracking_uri"])
    parent = mlc.get_run(out["parent_run_id"])
    runs = common.trial_runs(out["tracking_uri"], out["parent_run_id"])
    first = min(r.info.start_time for r in runs) / 1000 - t0
    last = max(r.info.end_time for r in runs) / 1000 - t0
    return {
        "parent_created_s": parent.info.start_time / 1000 - t0,
        "first_trial_start_s": first,
        "last_trial_end_s": last,
        "parent_end_s": parent.info.end_time / 1000 - t0,
        "process_exit_s": wall,
        "trial_span_s": last - first,
        "trial_run_s": sum((r.info.end_time - r.info.start_time) / 1000 for r in runs),
    }


def run(quick: bool = False, epochs: int | None = None) -> dict[str, Any]:
    env = common.environment()
    epochs = epochs or (12 if quick else 60)
    wd = common.workdir("overhead")
    space = common.SPACES / "overhead.yaml"
    t0 = time.time()
    timed, out = common.launch_cli(wd, "overhead", space=space, num_samples=TRIALS, concurrency=CONCURRENCY,
                                   max_epochs=epochs)
    marks = timeline(out, t0, timed.wall_s)
    from search import tracking

    runs = sorted(common.trial_runs(out["tracking_uri"], out["parent_run_id"]), key=lambda r: r.info.start_time)
    configs = [tracking.config_of(r) for r in runs]
    bare = common.bare_fits(configs, processes=CONCURRENCY, threads=1, workdir=wd)
    common.close_env(env)
    fit_sum = sum(b["fit_s"] for b in bare)
    ideal = fit_sum / CONCURRENCY
    ratio = timed.wall_s / ideal
    trial_best = [r.data.metrics.get("best_val_accuracy") for r in runs]
    result: dict[str, Any] = {
        "quick": quick, "env": env, "epochs": epochs, "trials": TRIALS, "concurrency": CONCURRENCY,
        "launch_wall_s": timed.wall_s, "bare_fit_s": [b["fit_s"] for b in bare], "bare_fit_sum_s": fit_sum,
        "ideal_s": ideal, "ratio": ratio, "target": TARGET, "met": ratio <= TARGET, "timeline": marks,
        "configs": configs, "trial_best_val_accuracy": trial_best,
        "bare_best_val_accuracy": [b["best_val_accuracy"] for b in bare],
    }
    result["headline"] = f"{ratio:.2f}× ({timed.wall_s:.1f} s vs ideal {ideal:.1f} s, {epochs} epochs a trial)"
    rows = [
        ("sum of 8 bare model.fit", fit_sum),
        (f"ideal = sum / {CONCURRENCY}", ideal),
        ("search launch wall (process start to exit)", timed.wall_s),
        ("  start-up: process start to first trial start", marks["first_trial_start_s"]),
        ("  trials: first trial start to last trial end", marks["trial_span_s"]),
        ("  end: last trial end to process exit", timed.wall_s - marks["last_trial_end_s"]),
        ("ratio launch / ideal", ratio),
    ]
    header = ["", "seconds"]
    verdict = (f"**Target met**: {ratio:.2f}× ≤ {TARGET}×." if result["met"] else
               f"**Target not met**: {ratio:.2f}× against ≤ {TARGET}× ({timed.wall_s - TARGET * ideal:.1f} s over the "
               f"allowed {TARGET * ideal:.1f} s).")
    section = "\n".join([
        f"Command: `python -m bench.bench_overhead{' --quick' if quick else ''}` "
        f"({'quick' if quick else 'full'} mode: {TRIALS} trials × {epochs} epochs; full mode is "
        "`python -m bench.bench_overhead`, 60 epochs ≈ 10 s a trial).",
        "",
        f"Measured {common.environment_line(env)}.",
        "",
        "Method: `search launch --space bench/spaces/overhead.yaml --searcher random --seed 0 --scheduler fifo "
        f"--num-samples {TRIALS} --concurrency {CONCURRENCY} --max-epochs {epochs}` as a subprocess, timed from fork to "
        "exit (start-up, Ray, MLflow and shutdown included). The 8 configs it ran are read back from MLflow and "
        "fitted with bare `model.fit` (`bench/bare_fit.py`, 1 TF thread, 2 processes at once as the trials ran); "
        "ideal = sum of those `fit` times / 2. The start-up/trials/end split comes from the MLflow start and end "
        "times of the runs.",
        "",
        common.md_table(rows, header),
        "",
        verdict,
    ])
    return common.finish(NAME, result, section, title=TITLE, table=common.text_table(rows, header))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 epochs a trial instead of 60")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    return run(quick=args.quick, epochs=args.epochs)


if __name__ == "__main__":
    main()
