"""Benchmark: `search launch` against KerasTuner's RandomSearch, same space, trials and epochs.

Both run 8 trials of ``bench/spaces/overhead.yaml`` on digits, E epochs each (20 in full mode, as
in issue #6; no early stopping on either side), random search with seed 0:

* KerasTuner: bench/kt_baseline.py, ``keras_tuner.RandomSearch`` over ``Space.to_keras_tuner()``,
  the same model builder and data, trials one after another in one process (TF's default threads).
* this project: `search launch --searcher random --scheduler fifo` (2 trials at a time, 1 thread each).

Each is a fresh process timed from fork to exit (imports, Ray and MLflow included). Targets: our
wall <= 0.7 x KerasTuner's, and our best val_accuracy >= KerasTuner's. Each searcher draws its own
8 configs from the same space with seed 0, so the best-of-8 differs by sampling as well; the mean
over the 8 trials is shown too. ``--rounds`` repeats the pair (alternating order). Usage::

    python -m bench.bench_kerastuner            # 8 trials x 20 epochs
    python -m bench.bench_kerastuner --quick    # 8 trials x 6 epochs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

NAME = "kerastuner"
TITLE = "Versus KerasTuner"
TARGET = 0.7
TRIALS = 8


def run(quick: bool = False, epochs: int | None = None, rounds: int = 1) -> dict[str, Any]:
    env = common.environment()
    epochs = epochs or (6 if quick else 20)
    space = common.SPACES / "overhead.yaml"
    kt_rounds, ours_rounds = [], []
    for r in range(rounds):
        wd = common.workdir("kerastuner")
        order = ("kt", "ours") if r % 2 == 0 else ("ours", "kt")
        for side in order:
            if side == "kt":
                timed = common.run_timed([common.PY, "-m", "bench.kt_baseline", "--space", str(space), "--trials",
                                          str(TRIALS), "--epochs", str(epochs), "--seed", "0"], cwd=wd)
                kt = json.loads(timed.stdout.strip().splitlines()[-1])
                kt_rounds.append({"wall_s": timed.wall_s, **kt,
                                  "mean_val_accuracy": statistics.fmean(t["score"] for t in kt["trials"] if t["score"] is not None)})
            else:
                timed, out = common.launch_cli(wd, f"kt-{r}", space=space, num_samples=TRIALS, max_epochs=epochs)
                scores = [t["metric"] for t in out["trials"] if t["metric"] is not None]
                ours_rounds.append({"wall_s": timed.wall_s, "best_val_accuracy": max(scores),
                                    "mean_val_accuracy": statistics.fmean(scores), "search_wall_time_s": out["wall_time_s"],
                                    "trials": [{"config": t["config"], "score": t["metric"]} for t in out["trials"]]})
    common.close_env(env)
    kt_wall = statistics.median(x["wall_s"] for x in kt_rounds)
    ours_wall = statistics.median(x["wall_s"] for x in ours_rounds)
    kt_best = statistics.median(x["best_val_accuracy"] for x in kt_rounds)
    ours_best = statistics.median(x["best_val_accuracy"] for x in ours_rounds)
    ratio = ours_wall / kt_wall
    met_wall, met_best = ratio <= TARGET, ours_best >= kt_best
    result: dict[str, Any] = {
        "quick": quick, "env": env, "epochs": epochs, "trials": TRIALS, "rounds": rounds,
        "kerastuner": kt_rounds, "search": ours_rounds, "kerastuner_wall_s": kt_wall, "search_wall_s": ours_wall,
        "ratio": ratio, "kerastuner_best": kt_best, "search_best": ours_best, "target": TARGET,
        "met_wall": met_wall, "met_best": met_best, "met": met_wall and met_best,
    }
    result["headline"] = (f"wall {ratio:.2f}× ({ours_wall:.1f} s vs {kt_wall:.1f} s); best val_accuracy "
                          f"{ours_best:.4f} vs {kt_best:.4f}")
    rows = [
        ("KerasTuner RandomSearch", kt_wall, statistics.median(x["import_s"] for x in kt_rounds),
         statistics.median(x["search_s"] for x in kt_rounds), kt_best,
         statistics.median(x["mean_val_accuracy"] for x in kt_rounds)),
        ("search launch", ours_wall, "", statistics.median(x["search_wall_time_s"] for x in ours_rounds), ours_best,
         statistics.median(x["mean_val_accuracy"] for x in ours_rounds)),
    ]
    header = ["tool", "wall s (process)", "imports s", "search s", "best val_acc", "mean val_acc"]
    verdict = []
    verdict.append(f"Wall: **target {'met' if met_wall else 'not met'}**: {ratio:.2f}× KerasTuner's "
                   f"(target ≤ {TARGET}×{'' if met_wall else f', {ours_wall - TARGET * kt_wall:.1f} s over'}).")
    verdict.append(f"Best val_accuracy: **target {'met' if met_best else 'not met'}**: {ours_best:.4f} vs "
                   f"{kt_best:.4f} ({100 * (ours_best - kt_best):+.2f} points; one validation example is "
                   "0.28 points, and each tool samples its own 8 configs).")
    section = "\n".join([
        f"Command: `python -m bench.bench_kerastuner{' --quick' if quick else ''}` "
        f"({'quick' if quick else 'full'} mode: {TRIALS} trials × {epochs} epochs, {rounds} round(s); full mode is "
        "`python -m bench.bench_kerastuner`, 8 × 20 epochs as in issue #6).",
        "",
        f"Measured {common.environment_line(env)}.",
        "",
        "Method: both tools search `bench/spaces/overhead.yaml` on digits with random search and seed 0, 8 trials, "
        "the same number of epochs, no early stopping. KerasTuner: `bench/kt_baseline.py` (`keras_tuner.RandomSearch` "
        "over `Space.to_keras_tuner()`, the same `build_model` and `tf.data` pipelines, one trial after another, TF's "
        "default threads). Ours: `search launch --searcher random --scheduler fifo` (2 trials at once, 1 thread "
        "each). Both timed as processes, fork to exit. 'search s' is `tuner.search` for KerasTuner and the "
        "launch's own `wall_time_s` for ours.",
        "",
        common.md_table(rows, header),
        "",
        *verdict,
    ])
    return common.finish(NAME, result, section, title=TITLE, table=common.text_table(rows, header))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6 epochs a trial instead of 20")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    return run(quick=args.quick, epochs=args.epochs, rounds=args.rounds)


if __name__ == "__main__":
    main()
