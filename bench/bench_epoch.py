"""Benchmark: the cost of one epoch inside a trial, against bare ``model.fit`` of the same model.

One fixed config (``bench/spaces/epoch.yaml``: 2x128 ReLU, dropout 0.1, Adam, batch 32, no
early stopping) on digits, 1 TF thread on both sides, measured **at the same time** so that both
see the same load on a shared machine:

* in a trial: ``search launch`` with that space, ``--concurrency 1``, 3 trials of E epochs one
  after another. Each epoch's time is the gap between the MLflow timestamps of consecutive
  epochs, which the trial's worker stamps as each epoch ends (reports are coalesced, so the driver
  receives several epochs at once): so it holds everything a trial adds per epoch in its worker
  (EarlyStopping and the logging callback, the hand-over to the reporting thread, ``tune.report``,
  the checkpoints) and the CPU the driver and Ray's processes take on the same cores.
* bare: ``bench/bare_fit.py --until``, started alongside the launch, fits the same config with
  ``model.fit`` (no callbacks) over and over; its epoch gaps that fall inside the trials' window
  are the baseline.

First epochs (tracing) are left out on both sides; the ratio is of the mean gaps. Usage::

    python -m bench.bench_epoch            # 3 trials x 40 epochs, 2 rounds
    python -m bench.bench_epoch --quick    # 3 trials x 15 epochs, 1 round
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

NAME = "epoch"
TITLE = "Per-epoch cost inside a trial"
TARGET = 1.05


def trial_gaps(out: dict[str, Any], epochs: int) -> tuple[list[float], list[tuple[float, float]], list[int]]:
    """Epoch gaps (s) of every trial, each trial's (first, last) epoch time, and checkpoints per trial."""
    from search import tracking

    mlc = tracking.client(out["tracking_uri"])
    gaps, windows, checkpoints = [], [], []
    for run in common.trial_runs(out["tracking_uri"], out["parent_run_id"]):
        stamps = [m.timestamp / 1000 for m in sorted(mlc.get_metric_history(run.info.run_id, "val_accuracy"),
                                                       key=lambda m: m.step)]
        if len(stamps) == epochs:
            gaps += [b - a for a, b in zip(stamps, stamps[1:])]
            windows.append((stamps[0], stamps[-1]))
    for result_file in Path(out["storage_path"]).glob("*/result.json"):
        rows = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
        checkpoints.append(sum(1 for r in rows if r.get("checkpoint_dir_name")))
    return gaps, windows, checkpoints


def bare_gaps(rows: list[dict[str, Any]], windows: list[tuple[float, float]]) -> list[float]:
    """Gaps between consecutive bare epochs (never the first of a fit) that lie inside a trial's window."""
    gaps = []
    for row in rows:
        t = row["epoch_end_times"]
        for a, b in zip(t, t[1:]):
            if any(lo <= a and b <= hi for lo, hi in windows):
                gaps.append(b - a)
    return gaps


def one_round(r: int, config: dict[str, Any], epochs: int, trials: int) -> dict[str, Any]:
    wd = common.workdir("epoch")
    stop = wd / "stop"
    (wd / "bare.json").write_text(json.dumps([config]))
    env = {**os.environ, **common.CHILD_ENV, "PYTHONPATH": str(common.ROOT)}
    bare = subprocess.Popen([common.PY, "-m", "bench.bare_fit", "--configs", str(wd / "bare.json"), "--out",
                             str(wd / "bare.out.json"), "--threads", "1", "--until", str(stop)],
                            cwd=wd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        timed, out = common.launch_cli(wd, f"epoch-{r}", space=common.SPACES / "epoch.yaml", num_samples=trials,
                                       concurrency=1, max_epochs=epochs)
    finally:
        stop.touch()
        _, err = bare.communicate(timeout=600)
    if bare.returncode != 0:
        raise RuntimeError(f"bare fit exited {bare.returncode}:\n{err[-4000:]}")
    gaps, windows, checkpoints = trial_gaps(out, epochs)
    return {"trial_gaps": gaps, "bare_gaps": bare_gaps(json.loads((wd / "bare.out.json").read_text()), windows),
            "checkpoints": checkpoints, "launch_wall_s": timed.wall_s}


def run(quick: bool = False, rounds: int | None = None) -> dict[str, Any]:
    env = common.environment()
    epochs, trials = (15, 3) if quick else (40, 3)
    rounds = rounds or (1 if quick else 2)
    from search.space import load_space

    config = load_space(str(common.SPACES / "epoch.yaml")).assemble({})
    config["epochs"] = epochs
    done = [one_round(r, config, epochs, trials) for r in range(rounds)]
    common.close_env(env)
    trial = [g for d in done for g in d["trial_gaps"]]
    bare = [g for d in done for g in d["bare_gaps"]]
    checkpoints = [c for d in done for c in d["checkpoints"]]
    mean_trial, mean_bare = statistics.fmean(trial), statistics.fmean(bare)
    med_trial, med_bare = statistics.median(trial), statistics.median(bare)
    ratio = mean_trial / mean_bare
    result: dict[str, Any] = {
        "quick": quick, "env": env, "epochs": epochs, "trials_per_round": trials, "rounds": rounds, "config": config,
        "trial_gaps_s": trial, "bare_gaps_s": bare, "checkpoints_per_trial": checkpoints,
        "launch_wall_s": [d["launch_wall_s"] for d in done], "trial_mean_s": mean_trial, "bare_mean_s": mean_bare,
        "trial_median_s": med_trial, "bare_median_s": med_bare, "ratio": ratio, "ratio_median": med_trial / med_bare,
        "target": TARGET, "met": ratio <= TARGET,
    }
    result["headline"] = f"{ratio:.3f}× ({mean_trial * 1000:.0f} ms vs {mean_bare * 1000:.0f} ms an epoch, means)"
    rows = [
        ("bare model.fit", mean_bare * 1000, med_bare * 1000, "1.000", len(bare)),
        ("in a trial (search launch)", mean_trial * 1000, med_trial * 1000, f"{ratio:.3f}", len(trial)),
    ]
    header = ["path", "mean ms per epoch", "median ms", "× bare (means)", "epochs measured"]
    verdict = (f"**Target met**: {ratio:.3f}× ≤ {TARGET}×." if result["met"] else
               f"**Target not met**: {ratio:.3f}× against ≤ {TARGET}×, {100 * (ratio - TARGET):.1f} points over.")
    section = "\n".join([
        f"Command: `python -m bench.bench_epoch{' --quick' if quick else ''}` "
        f"({'quick' if quick else 'full'} mode: {rounds} round(s) of {trials} trials × {epochs} epochs; "
        "full mode is `python -m bench.bench_epoch`, 2 rounds of 3 × 40).",
        "",
        f"Measured {common.environment_line(env)}.",
        "",
        "Method: one fixed config (`bench/spaces/epoch.yaml`, 2×128 ReLU, dropout 0.1, Adam, batch 32, no early "
        "stopping) on digits, 1 TF thread on both sides, both running at the same time so that they share the "
        "machine's load. In a trial: `search launch --concurrency 1`, an epoch is the gap between the MLflow "
        "timestamps of consecutive epochs, stamped in the worker as each epoch ends (callbacks, the reporting "
        "thread, `tune.report`, checkpoints, and the CPU the driver and Ray's processes take, included). "
        "Bare: `bench/bare_fit.py --until`, `model.fit` with no callbacks, fitting the same config over and over; "
        "only its epochs inside the trials' time window count. First epochs (tracing) are out on both sides.",
        "",
        common.md_table(rows, header),
        "",
        f"Checkpoints written per trial (`.keras`): {checkpoints}.",
        "",
        verdict,
    ])
    return common.finish(NAME, result, section, title=TITLE, table=common.text_table(rows, header))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 3 trials x 15 epochs")
    parser.add_argument("--rounds", type=int, default=None)
    args = parser.parse_args(argv)
    return run(quick=args.quick, rounds=args.rounds)


if __name__ == "__main__":
    main()
