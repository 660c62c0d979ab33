"""Report coalescing: the driver's CPU per epoch when every epoch is a report, and when reports are coalesced.

The same search twice per round, in this process on one local Ray (2 CPUs): the `quick` space
without early stopping on digits, random search, FIFO, 8 trials two at a time, with the MLflow
writer on (SQLite); with ``--report-every-s 0`` (every epoch is a Tune report, as before) and with
the default 0.5 s. The figure is the driver process's CPU time (``time.process_time``: Tune's loop,
the callbacks, MLflow writes, Ray's driver threads) per epoch; MLflow must record every epoch in both.

    python -m bench.bench_reports [--quick]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    main, close_env, environment, command_line, finish, md_table, text_table, trial_runs, workdir,
)


def one(folder: Path, name: str, every_s: float, trials: int, epochs: int) -> dict[str, float]:
    from search import tracking
    from search.space import load_space
    from search.tune import LaunchOptions
    from search.tune.launch import launch

    space = folder / "patient.yaml"
    if not space.exists():
        space.write_text(load_space("quick").source.replace("patience: 3", "patience: 1000"))
    uri = f"sqlite:///{folder}/mlflow.db"
    cpu, wall = time.process_time(), time.perf_counter()
    result = launch(LaunchOptions.from_flat(space=str(space), num_samples=trials, max_epochs=epochs, searcher="random",
                                            scheduler="fifo", concurrency=2, name=name, quiet=True, tracking_uri=uri,
                                            storage_path=str(folder / "ray"), report_every_s=every_s))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    mlc = tracking.client(uri)
    recorded = sum(len(mlc.get_metric_history(r.info.run_id, "val_loss")) for r in trial_runs(uri, result.parent_run_id))
    reports = sum(1 for p in (folder / "ray" / name).glob("*/result.json") for line in p.read_text().splitlines() if line)
    return {"cpu_s": cpu, "wall_s": wall, "epochs": recorded, "reports": reports, "cpu_ms_per_epoch": 1000 * cpu / recorded}


def run(quick: bool = False) -> dict[str, Any]:
    import ray

    trials, short, long, rounds = (4, 5, 15, 1) if quick else (8, 10, 30, 2)
    env = environment()
    folder = workdir("reports")
    labels = {"every epoch (0 s)": 0.0, "coalesced (0.5 s)": 0.5}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    runs: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    try:
        one(folder, "warm-up", 0.0, 2, 2)  # imports and first-time set-up, not counted
        for k in range(rounds):
            for label, every in labels.items():
                a = one(folder, f"r{k}-{every}-short", every, trials, short)
                b = one(folder, f"r{k}-{every}-long", every, trials, long)
                marginal = 1000 * (b["cpu_s"] - a["cpu_s"]) / (b["epochs"] - a["epochs"])
                runs[label].append({"short": a, "long": b, "cpu_ms_per_epoch": marginal})
    finally:
        ray.shutdown()
    rows, per = [], {}
    for label, items in runs.items():
        per[label] = statistics.median(r["cpu_ms_per_epoch"] for r in items)
        rows.append([label, statistics.median(r["long"]["reports"] for r in items),
                     statistics.median(r["long"]["epochs"] for r in items), per[label],
                     statistics.median(r["long"]["cpu_s"] for r in items), statistics.median(r["long"]["wall_s"] for r in items)])
    ratio = per["every epoch (0 s)"] / per["coalesced (0.5 s)"]
    complete = all(r[n]["epochs"] == trials * (short if n == "short" else long)
                   for items in runs.values() for r in items for n in ("short", "long"))
    met = ratio >= 2.0 and complete
    headline = (f"driver CPU per epoch {per['every epoch (0 s)']:.1f} → {per['coalesced (0.5 s)']:.1f} ms "
                f"({ratio:.2f}× less); every epoch in MLflow: {'yes' if complete else 'NO'}")
    header = ["reports", f"Tune reports ({long} epochs)", "epochs in MLflow", "driver CPU ms / epoch (marginal)",
              "driver CPU s", "wall s"]
    result = {"quick": quick, "env": close_env(env), "runs": runs, "ratio": ratio, "headline": headline, "met": met}
    section = "\n".join([
        __doc__.split("\n\n    python")[0].strip(),
        "",
        md_table(rows, header),
        "",
        f"The per-epoch figure is marginal: (CPU of the {long}-epoch search - CPU of the {short}-epoch one) / the "
        "epochs between them, so the fixed cost of a search (opening the store, the plots at the end) cancels; "
        f"{trials} trials each, medians over {rounds} round(s) after one warm-up search.",
        "",
        f"Target (issue #13): driver CPU per reported epoch at least halved: **{'met' if met else 'not met'}** "
        f"({ratio:.2f}×).",
        "",
        command_line("bench_reports", quick, env),
    ])
    return finish("reports", result, section, title="Report coalescing", table=text_table(rows, header))


if __name__ == "__main__":
    main(__doc__, run)
