"""Driver throughput: how many trial results per second the driver takes, with the MLflow writer on.

A trainable that trains nothing and reports as fast as it can (each result the keys a real trial
reports), 32 trials at once on a local Ray with 32 logical CPUs (on 2 real cores), run three
ways in one process: plain Ray Tune as a user gets it (no callbacks of one's own; Ray's CSV, JSON
and TensorBoard loggers); with a search's callbacks (``callbacks.driver_callbacks``: the
``MLflowCallback`` and Ray's JSON logger only) writing every result to SQLite; and writing to an
``mlflow server`` on loopback (SQLite behind it). The figure is the steady rate: results per
second between the moment all 32 trials are running and the first one's end; every result must be in
MLflow. Starting 32 Python workers on 2 cores takes about a minute, which the overall rate includes, so
the first 32 trials wait for each other before they report (without that, the first trials had ended
before the last started, and the steady window was empty).
A fourth way is how a search's own trials report: epochs of 10 ms (the trainable sleeps), sent
through the search's ``Coalescer`` at most one report about every 0.5 s (``--report-every-s``'s
default), each carrying the epochs since the last; there a result is an epoch recorded in MLflow.
(A search of 1,000 trials and the commands that read it: ``bench_store``.)

    python -m bench.bench_driver [--quick]
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ray import tune  # noqa: E402

from bench.common import (  # noqa: E402
    main, close_env, environment, command_line, finish, md_table, text_table, trial_runs, workdir,
)
from search.tune.callbacks import epoch_rows  # noqa: E402

PLAIN, SQLITE, SERVER = "plain Ray Tune, its default loggers", "search callbacks, SQLite", "search callbacks, mlflow server"
COALESCED = "search callbacks, SQLite; 10 ms epochs, reports coalesced as a search's trials send them"
EPOCH_S, COALESCE_S = 0.01, 0.5  # a short epoch; the search's default --report-every-s
SPACE = "description: one sampled key, for a trainable that trains nothing\nparams:\n  learning_rate: {float: [1.0e-3, 1.0e-1], log: true}\n"
CONCURRENT = 32


def reporter(config: dict[str, Any], *, results: int, gate: str, wave: int, epoch_s: float = 0.0,
             coalesce_s: float = 0.0) -> None:
    """Reports ``results`` epochs, with the keys a trial reports (no training): each epoch ``epoch_s``
    long (asleep), and sent through a search's ``Coalescer`` (``coalesce_s`` 0: one report an epoch).

    The first ``wave`` trials wait at ``gate`` (a folder each one marks) until all of them have started,
    so that the steady window, with every trial running, exists: starting 32 Python workers on 2 cores
    takes longer than a trial that does not wait takes to report everything."""
    folder = Path(gate)
    (folder / tune.get_context().get_trial_id()).touch()
    deadline = time.monotonic() + 600
    while sum(1 for _ in folder.iterdir()) < wave and time.monotonic() < deadline:
        time.sleep(0.05)
    from search.tune.trainable import Coalescer

    coalescer = Coalescer(every_s=coalesce_s)
    x = float(config["learning_rate"])
    for epoch in range(1, results + 1):
        if epoch_s:
            time.sleep(epoch_s)
        coalescer.offer({"epoch": epoch, "loss": 1.0 / epoch, "accuracy": x, "val_loss": 1.0 / epoch,
                         "val_accuracy": x * epoch / results, "lr": x, "epoch_time_s": epoch_s,
                         "final": float(epoch == results)})
    coalescer.close()


def fit(folder: Path, name: str, *, trials: int, results: int, uri: str | None, epoch_s: float = 0.0,
        coalesce_s: float = 0.0) -> dict[str, Any]:
    """One Tuner.fit; with ``uri``, through a search's callbacks into that store. Returns its figures."""
    import os

    from search.space import parse_space
    from search.tracking import Tracker
    from search.tune.callbacks import driver_callbacks

    space = parse_space(SPACE, name="driver")
    gate = folder / "gates" / name
    gate.mkdir(parents=True, exist_ok=True)
    wave = min(trials, CONCURRENT)
    clock = _Clock()
    callbacks, tracker = [clock], None
    # Plain Ray Tune as a user gets it (its CSV, JSON and TensorBoard loggers); a search's own callbacks
    # (the MLflow writer and Ray's result.json only), which set Ray's switch for the other loggers.
    os.environ.pop("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", None)
    if uri:
        tracker = Tracker(uri, "driver")
        tracker.start_search(name, {"trials": trials}, {})
        callbacks = [*driver_callbacks(tracker, space, metric="val_accuracy", mode="max", max_epochs=None,
                                       transfer_from=None, progress=None), clock]
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(reporter, results=results, gate=str(gate), wave=wave,
                                                  epoch_s=epoch_s, coalesce_s=coalesce_s), {"cpu": 1}),
        param_space=space.to_ray(),
        tune_config=tune.TuneConfig(num_samples=trials, max_concurrent_trials=CONCURRENT, reuse_actors=True),
        run_config=tune.RunConfig(name=name, storage_path=str(folder / "ray"), callbacks=callbacks, verbose=0,
                                  progress_reporter=None, checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - start
    out = {"trials": trials, "results": trials * results, "wall_s": wall, "overall_per_s": trials * results / wall,
           "per_s": clock.steady_rate(wave), "errors": sum(r.error is not None for r in grid)}
    if tracker is not None:
        tracker.flush()
        tracker.end_run(tracker.parent_run_id, "FINISHED")
        runs = trial_runs(uri, tracker.parent_run_id)
        mlc = tracker.mlflow
        out["runs"] = len(runs)
        out["complete"] = len(runs) == trials and all(
            len(mlc.get_metric_history(r.info.run_id, "val_loss")) == results for r in runs[:50])
        out["parent_run_id"] = tracker.parent_run_id
    return out


class _Clock(tune.Callback):
    """A Tune callback that times results: the steady rate is the results per second between the moment
    every trial of the first wave has reported and the first trial's end (all of them running)."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.times: list[float] = []
        self.done: float | None = None

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        now = time.perf_counter()
        self.times.extend([now] * len(epoch_rows(result)))  # each epoch a coalesced report carries counts
        self.first.setdefault(trial.trial_id, now)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.done = self.done or time.perf_counter()

    def steady_rate(self, wave: int) -> float:
        started = sorted(self.first.values())[:wave]
        if len(started) < wave or self.done is None or self.done <= started[-1]:
            return float("nan")
        lo, hi = started[-1], self.done
        return sum(lo <= t <= hi for t in self.times) / (hi - lo)


def mlflow_server(folder: Path, backend: str | None = None) -> tuple[subprocess.Popen, str]:
    """An ``mlflow server`` on a free loopback port, over ``backend`` (default: a new SQLite file)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", backend or f"sqlite:///{folder}/server.db", "--host",
                             "127.0.0.1", "--port", str(port), "--workers", "2"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("mlflow server did not start in 120 s")


def run(quick: bool = False) -> dict[str, Any]:
    import os
    import signal

    import ray

    trials, results, long = (32, 300, 1000) if quick else (32, 1000, 3000)
    env = environment()
    folder = workdir("driver")
    sqlite = f"sqlite:///{folder}/mlflow.db"
    ray.init(num_cpus=CONCURRENT, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    server, url = mlflow_server(folder)
    try:
        figures = {
            PLAIN: fit(folder, "plain", trials=trials, results=results, uri=None),
            SQLITE: fit(folder, "sqlite", trials=trials, results=results, uri=sqlite),
            SERVER: fit(folder, "server", trials=trials, results=results, uri=url),
            COALESCED: fit(folder, "coalesced", trials=trials, results=long, uri=f"sqlite:///{folder}/coalesced.db",
                           epoch_s=EPOCH_S, coalesce_s=COALESCE_S),
        }
    finally:
        ray.shutdown()
        os.killpg(server.pid, signal.SIGTERM)
    rows = [[k, v["results"], v["wall_s"], v["overall_per_s"], v["per_s"],
             "" if "runs" not in v else ("yes" if v["complete"] else "NO")] for k, v in figures.items()]
    ours = min(figures[SQLITE]["per_s"], figures[SERVER]["per_s"])
    raw_met = ours >= 500 and figures[SQLITE]["complete"] and figures[SERVER]["complete"]
    coalesced_met = figures[COALESCED]["per_s"] >= 500 and figures[COALESCED]["complete"]
    met = raw_met and coalesced_met
    headline = (f"{figures[COALESCED]['per_s']:.0f} epochs/s from coalescing trials; one report a result: "
                f"{figures[SQLITE]['per_s']:.0f} results/s into SQLite, "
                f"{figures[SERVER]['per_s']:.0f} into a server (plain Ray Tune "
                f"{figures[PLAIN]['per_s']:.0f})")
    header = ["driver", "results", "fit wall s", "results/s overall", "results/s, all 32 running", "every result in MLflow"]
    result = {"quick": quick, "env": close_env(env), "figures": figures, "headline": headline, "met": met}
    section = "\n".join([
        __doc__.split("\n\n    python")[0].strip(),
        "",
        md_table(rows, header),
        "",
        f"Targets (issue #13): ≥ 500 results/s with every result in MLflow, one report per result, both stores: "
        f"**{'met' if raw_met else 'not met'}**; ≥ 500 epochs/s from a search's trials, coalesced, every epoch in "
        f"MLflow: **{'met' if coalesced_met else 'not met'}** (the trials offered {trials / EPOCH_S:.0f} epochs/s).",
        "",
        command_line("bench_driver", quick, env),
    ])
    return finish("driver", result, section, title="Driver throughput", table=text_table(rows, header))


if __name__ == "__main__":
    main(__doc__, run)
