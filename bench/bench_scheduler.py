"""Benchmark: ASHA against FIFO on the same 16 random-search trials.

`search launch --searcher random --seed 0 --num-samples 16` over ``bench/spaces/overhead.yaml``
(no early stopping), E epochs at most (60 in full mode, 20 quick), 2 trials at a time, run twice
as fresh processes: ``--scheduler fifo`` and ``--scheduler asha`` (grace 2 epochs, reduction
factor 3). Ray's variant generator with the same seed draws the same 16 configs in the same
order for both. Targets: ASHA's best val_accuracy within 0.5 points of FIFO's, in <= 0.4x
FIFO's wall time (process start to exit, start-up included). Usage::

    python -m bench.bench_scheduler            # up to 60 epochs a trial
    python -m bench.bench_scheduler --quick    # up to 20 epochs a trial
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

NAME = "scheduler"
TITLE = "Scheduler efficiency"
TARGET_WALL = 0.4
TARGET_POINTS = 0.5
TRIALS = 16


def run(quick: bool = False, epochs: int | None = None) -> dict[str, Any]:
    env = common.environment()
    epochs = epochs or (20 if quick else 60)
    space = common.SPACES / "overhead.yaml"
    sides: dict[str, dict[str, Any]] = {}
    for scheduler in ("fifo", "asha"):
        wd = common.workdir(f"sched-{scheduler}")
        timed, out = common.launch_cli(wd, f"sched-{scheduler}", space=space, num_samples=TRIALS, scheduler=scheduler,
                                       max_epochs=epochs)
        trials = out["trials"]
        sides[scheduler] = {
            "wall_s": timed.wall_s, "best_val_accuracy": max(t["metric"] for t in trials if t["metric"] is not None),
            "epochs_trained": sum(t["epochs"] for t in trials),
            "stopped_early": sum(t["state"] == "stopped_early" for t in trials),
            "trials": [{"config": t["config"], "metric": t["metric"], "epochs": t["epochs"], "state": t["state"]}
                       for t in trials],
        }
    common.close_env(env)
    fifo, asha = sides["fifo"], sides["asha"]
    ratio = asha["wall_s"] / fifo["wall_s"]
    gap = 100 * (fifo["best_val_accuracy"] - asha["best_val_accuracy"])
    met_wall, met_best = ratio <= TARGET_WALL, gap <= TARGET_POINTS
    result: dict[str, Any] = {
        "quick": quick, "env": env, "epochs": epochs, "trials": TRIALS, "fifo": fifo, "asha": asha, "ratio": ratio,
        "gap_points": gap, "met_wall": met_wall, "met_best": met_best, "met": met_wall and met_best,
    }
    result["headline"] = (f"wall {ratio:.2f}× ({asha['wall_s']:.1f} s vs {fifo['wall_s']:.1f} s), best "
                          f"{asha['best_val_accuracy']:.4f} vs {fifo['best_val_accuracy']:.4f} ({-gap:+.2f} points)")
    rows = [(name, side["wall_s"], side["epochs_trained"], side["stopped_early"], side["best_val_accuracy"])
            for name, side in (("FIFO", fifo), ("ASHA", asha))]
    header = ["scheduler", "wall s (process)", "epochs trained", "trials stopped early", "best val_acc"]
    compute = asha["epochs_trained"] / fifo["epochs_trained"]
    over = "" if met_wall else f", {asha['wall_s'] - TARGET_WALL * fifo['wall_s']:.1f} s over"
    verdict = [
        f"Wall: **target {'met' if met_wall else 'not met'}**: ASHA took {ratio:.2f}× FIFO's wall (target ≤ "
        f"{TARGET_WALL}×{over}) "
        f"while training {compute:.2f}× the epochs: the fixed start-up (Ray, MLflow, TF in the workers) is paid by both.",
        f"Best val_accuracy: **target {'met' if met_best else 'not met'}**: ASHA {asha['best_val_accuracy']:.4f}, "
        f"FIFO {fifo['best_val_accuracy']:.4f} ({abs(gap):.2f} points {'below' if gap > 0 else 'above'}; target: at most "
        f"{TARGET_POINTS} below).",
    ]
    section = "\n".join([
        f"Command: `python -m bench.bench_scheduler{' --quick' if quick else ''}` "
        f"({'quick' if quick else 'full'} mode: {TRIALS} trials, up to {epochs} epochs; full mode is "
        "`python -m bench.bench_scheduler`, up to 60 epochs).",
        "",
        f"Measured {common.environment_line(env)}.",
        "",
        f"Method: `search launch --space bench/spaces/overhead.yaml --searcher random --seed 0 --num-samples {TRIALS} "
        f"--max-epochs {epochs}` with `--scheduler fifo`, then `--scheduler asha` (grace 2, reduction factor 3), each "
        "a fresh process timed fork to exit; the same seed gives both the same 16 configs.",
        "",
        common.md_table(rows, header),
        "",
        *verdict,
    ])
    return common.finish(NAME, result, section, title=TITLE, table=common.text_table(rows, header))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="up to 20 epochs instead of 60")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    return run(quick=args.quick, epochs=args.epochs)


if __name__ == "__main__":
    main()
