"""Store reads: `search runs` and `search best` on a search of 1,000 trials, SQLite and a server.

One search of 1,000 trials (200 with ``--quick``) through a search's driver callbacks into SQLite:
a trainable that trains nothing reports 10 epochs with the keys a real trial reports, 32 trials at
once on a local Ray with 32 logical CPUs (on 2 real cores), as in ``bench_driver``. The store must
be intact: one trial run per trial, every epoch of every run. Then an ``mlflow server`` on loopback
in front of the same file, and on each store `search runs --json` and `search best --json` are
timed as whole processes (interpreter start and imports included), the median of 5 after one
warm-up run, two ways in the same run: as shipped (``search/tracking/query.py``: the SQLite reader,
the REST reader), and with every read through ``MlflowClient`` (the baseline: what the commands did
before, and what a script of one's own does), which must print the same answer.

    python -m bench.bench_store [--quick]
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_driver import CONCURRENT, fit, mlflow_server  # noqa: E402
from bench.common import (  # noqa: E402
    PY, close_env, command_line, environment, finish, main, md_table, run_timed, search_cli, targets_line, text_table,
    workdir,
)

EPOCHS = 10
REPEATS = 5
TARGET_S = 2.0
# The same command with every read through MlflowClient: the baseline.
THROUGH_MLFLOW = ("import sys\nfrom search.tracking import query, record\nrecord.query = query.MlflowQuery\n"
                  "from search.cli import main\nsys.argv[0] = 'search'\nmain()\n")


def timed(args: list[str], cwd: Path) -> tuple[float, Any]:
    """The median wall time of ``args`` over ``REPEATS`` runs after a warm-up, and its JSON answer."""
    warm = run_timed(args, cwd=cwd)
    walls = [run_timed(args, cwd=cwd).wall_s for _ in range(REPEATS)]
    return statistics.median(walls), json.loads(warm.stdout)


def run(quick: bool = False) -> dict[str, Any]:
    import ray

    trials = 200 if quick else 1000
    env = environment()
    folder = workdir("store")
    uri = f"sqlite:///{folder}/mlflow.db"
    ray.init(num_cpus=CONCURRENT, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        written = fit(folder, "thousand", trials=trials, results=EPOCHS, uri=uri)
    finally:
        ray.shutdown()
    server, url = mlflow_server(folder, backend=uri)
    rows, answers_agree, fast = [], True, []
    try:
        for store, where in (("SQLite", uri), ("mlflow server", url)):
            for command in ("runs", "best"):
                args = [command, "--tracking-uri", where, "--experiment", "driver", "--json"]
                ours, our_answer = timed([search_cli(), *args], folder)
                theirs, their_answer = timed([PY, "-c", THROUGH_MLFLOW, *args], folder)
                answers_agree &= our_answer == their_answer
                fast.append(ours)
                rows.append([store, f"search {command} --json", ours, theirs, theirs / ours])
    finally:
        os.killpg(server.pid, signal.SIGTERM)
    intact = written["runs"] == trials and written["complete"]
    checks = {f"{trials} trials intact": intact, "`runs` and `best` under 2 s, both stores": max(fast) < TARGET_S,
              "the same answers as MlflowClient": answers_agree}
    met = all(checks.values()) and trials >= 1000
    header = ["store", "command", "as shipped, median s", "through MlflowClient, median s", "speed-up"]
    headline = (f"{trials} trials: `search runs` {rows[0][2]:.2f} s, `search best` {rows[1][2]:.2f} s on SQLite "
                f"({rows[0][3] / rows[0][2]:.1f}x and {rows[1][3] / rows[1][2]:.1f}x faster than through MlflowClient); "
                f"server {rows[2][2]:.2f} s and {rows[3][2]:.2f} s")
    result = {"quick": quick, "env": close_env(env), "trials": trials, "written": written, "rows": rows,
              "checks": checks, "headline": headline, "met": met}
    section = "\n".join([
        __doc__.split("\n\n    python")[0].strip(),
        "",
        md_table(rows, header),
        "",
        f"{trials} trials of {EPOCHS} epochs into SQLite: {written['runs']} trial runs, every epoch recorded: "
        f"{'yes' if written['complete'] else 'NO'} (checked on 50 runs); fit {written['wall_s']:.0f} s. "
        f"Answers as shipped and through MlflowClient: {'the same' if answers_agree else 'DIFFERENT'}.",
        "",
        targets_line(13, checks) + ("" if trials >= 1000 else " (a quick run: the target is for 1,000 trials)"),
        "",
        command_line("bench_store", quick, env),
    ])
    return finish("store", result, section, title="Store reads", table=text_table(rows, header))


if __name__ == "__main__":
    main(__doc__, run)
