"""Time to quality (issue #13): the same space and budget through KerasTuner, Optuna, plain Ray Tune
and `search launch`, in one run.

Every tool searches ``bench/spaces/overhead.yaml`` (small MLPs, no early stopping) on the digits
splits, as its users run it, each as a fresh process timed from fork to exit (imports, Ray,
MLflow and shut-down included), with seed 0: KerasTuner `RandomSearch` and `Hyperband`
(``max_epochs`` the budget's epochs, factor 3, so it picks its own number of trials); a plain
Optuna script (TPE, `MedianPruner`, one trial after another); plain Ray Tune (random search,
FIFO and ASHA, Ray's defaults, no MLflow); `search launch` with its defaults (TPE, ASHA when the
trials outnumber the slots) and with random search and FIFO. Each epoch's val_accuracy is
timestamped as it ends (MLflow's metric history for `search launch`). Per tool: the wall time until
its best-so-far val_accuracy came within 0.5 points of the best any tool found on that workload,
its final best, the epochs it trained, and the whole wall. Two workloads: 16 trials x 30 epochs,
and 8 x 10, where the fixed cost decides.

    python -m bench.bench_time_to_quality [--quick]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    PY, SPACES, close_env, environment, command_line, targets_line, finish, main, md_table, run_timed, search_cli, text_table,
    trial_runs, workdir,
)

SPACE = SPACES / "overhead.yaml"
PEERS = (("KerasTuner RandomSearch", "kt_random"), ("KerasTuner Hyperband", "kt_hyperband"),
         ("Optuna TPE + median pruning", "optuna_tpe"), ("plain Ray Tune, FIFO", "ray_fifo"),
         ("plain Ray Tune, ASHA", "ray_asha"))
OURS = (("`search launch` (defaults: TPE, ASHA)", []), ("`search launch`, random + FIFO", ["--searcher", "random",
                                                                                          "--scheduler", "fifo"]))
WITHIN = 0.005  # half a point of val_accuracy


def _peer(tool: str, trials: int, epochs: int, folder: Path) -> dict[str, Any]:
    forked = time.time()
    timed = run_timed([PY, "-m", "bench.ttq_runners", tool, "--space", str(SPACE), "--trials", str(trials), "--epochs",
                       str(epochs), "--seed", "0"], cwd=folder)
    out = json.loads(timed.stdout.strip().splitlines()[-1])
    return {"wall_s": timed.wall_s, "events": [[t - forked, v] for t, v in out["events"]], "trials": out["trials"]}


def _ours(flags: list[str], trials: int, epochs: int, folder: Path, name: str) -> dict[str, Any]:
    from search import tracking

    uri = f"sqlite:///{folder / 'mlflow.db'}"
    forked = time.time()
    timed = run_timed([search_cli(), "launch", "--space", str(SPACE), "--num-samples", str(trials), "--max-epochs",
                       str(epochs), "--seed", "0", "--name", name, "--tracking-uri", uri, "--storage-path",
                       str(folder / "ray"), "-q", "--json", *flags], cwd=folder)
    out = json.loads(timed.stdout)
    client = tracking.client(uri)
    runs = trial_runs(uri, out["parent_run_id"])
    events = [[m.timestamp / 1000 - forked, m.value] for r in runs
              for m in client.get_metric_history(r.info.run_id, "val_accuracy")]
    first = min(r.info.start_time for r in runs) / 1000 - forked
    last = max(r.info.end_time for r in runs) / 1000 - forked
    return {"wall_s": timed.wall_s, "events": sorted(events), "trials": len(runs),
            "fixed_s": timed.wall_s - (last - first), "first_trial_s": first, "after_last_s": timed.wall_s - last}


def _score(row: dict[str, Any], target: float) -> dict[str, Any]:
    best, reached = float("-inf"), None
    for t, v in sorted(row["events"]):
        best = max(best, v)
        if reached is None and best >= target - WITHIN:
            reached = t
    return {**row, "best": best, "epochs": len(row["events"]), "to_quality_s": reached}


def workload(trials: int, epochs: int, *, hyperband: bool = True) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    for label, tool in PEERS:
        if tool == "kt_hyperband" and not hyperband:
            continue
        rows[label] = _peer(tool, trials, epochs, workdir("ttq"))
    for index, (label, flags) in enumerate(OURS):
        rows[label] = _ours(flags, trials, epochs, workdir("ttq"), f"ttq-{trials}x{epochs}-{index}")
    target = max(max(v for _, v in row["events"]) for row in rows.values())
    return {"trials": trials, "epochs": epochs, "best_of_all": target,
            "rows": {k: _score(v, target) for k, v in rows.items()}}


def _ratio(rows: dict[str, Any], ours: str, theirs: str, key: str = "wall_s") -> float:
    return rows[ours][key] / rows[theirs][key]


def run(quick: bool = False) -> dict[str, Any]:
    env = environment()
    big = workload(4, 6, hyperband=False) if quick else workload(16, 30)
    small = workload(4, 3, hyperband=False) if quick else workload(8, 10)
    close_env(env)
    b, s = big["rows"], small["rows"]
    asha, fifo, kt = OURS[0][0], OURS[1][0], "KerasTuner RandomSearch"
    checks = {
        "16x30, ASHA: wall <= 0.25x KerasTuner RandomSearch": _ratio(b, asha, kt) <= 0.25,
        "16x30, ASHA: best within 0.5 points": b[asha]["best"] >= big["best_of_all"] - WITHIN,
        "16x30, FIFO: wall <= 0.4x KerasTuner RandomSearch": _ratio(b, fifo, kt) <= 0.4,
        "16x30: wall <= 0.35x plain Ray Tune, same scheduler (ASHA)": _ratio(b, asha, "plain Ray Tune, ASHA") <= 0.35,
        "16x30: wall <= 0.35x plain Ray Tune, same scheduler (FIFO)": _ratio(b, fifo, "plain Ray Tune, FIFO") <= 0.35,
        "8x10: wall <= 0.7x KerasTuner RandomSearch": min(_ratio(s, asha, kt), _ratio(s, fifo, kt)) <= 0.7,
        "fixed cost per search <= 10 s": max(b[asha]["fixed_s"], b[fifo]["fixed_s"]) <= 10,
    }
    ratios = {"asha_vs_kt": _ratio(b, asha, kt), "fifo_vs_kt": _ratio(b, fifo, kt),
              "asha_vs_ray": _ratio(b, asha, "plain Ray Tune, ASHA"), "fifo_vs_ray": _ratio(b, fifo, "plain Ray Tune, FIFO"),
              "small_vs_kt": min(_ratio(s, asha, kt), _ratio(s, fifo, kt))}
    header = ["tool", "wall (s)", "to within 0.5 points (s)", "best val_accuracy", "epochs", "trials"]

    def table(w: dict[str, Any]) -> list[list[Any]]:
        return [[k, f"{r['wall_s']:.1f}", "not reached" if r["to_quality_s"] is None else f"{r['to_quality_s']:.1f}",
                 f"{r['best']:.4f}", r["epochs"], r["trials"]] for k, r in w["rows"].items()]

    fixed = [[k, f"{b[k]['first_trial_s']:.1f}", f"{b[k]['after_last_s']:.1f}", f"{b[k]['fixed_s']:.1f}"] for k, _ in OURS]
    headline = (f"16x30 wall: ASHA {ratios['asha_vs_kt']:.2f}x KerasTuner Random, {ratios['asha_vs_ray']:.3f}x Ray "
                f"ASHA; FIFO {ratios['fifo_vs_kt']:.2f}x KT, {ratios['fifo_vs_ray']:.3f}x Ray FIFO; 8x10: "
                f"{ratios['small_vs_kt']:.2f}x KT; fixed cost {max(b[asha]['fixed_s'], b[fifo]['fixed_s']):.1f} s")
    result = {"quick": quick, "env": env, "big": big, "small": small, "checks": checks, "ratios": ratios,
              "headline": headline, "met": all(checks.values())}
    section = "\n".join([
        __doc__.split("\n\n    python")[0].strip(), "",
        f"**{big['trials']} trials x {big['epochs']} epochs** (best of all: {big['best_of_all']:.4f}):", "",
        md_table(table(big), header), "",
        f"**{small['trials']} trials x {small['epochs']} epochs** (best of all: {small['best_of_all']:.4f}):", "",
        md_table(table(small), header), "",
        "Fixed cost of `search launch` on the first workload (from MLflow's run times): process start to the first "
        "trial's start, the last trial's end to exit, and their sum (the wall minus the trial phase):", "",
        md_table(fixed, ["", "to first trial (s)", "after last trial (s)", "fixed cost (s)"]), "",
        targets_line(13, checks), "",
        command_line("bench_time_to_quality", quick, env),
    ])
    return finish("time_to_quality", result, section, title="Time to quality",
                  table=text_table(table(big) + table(small), header))


if __name__ == "__main__":
    main(__doc__, run)
