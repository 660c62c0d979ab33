"""Profile a search: where a trial's time goes inside the Ray workers, and on the driver.

Three parts, written to the ``profile`` section of docs/benchmarks.md:

1. A profiled search: `search launch` (in this process, under pyinstrument for the driver) runs
   8 trials of ``bench/spaces/overhead.yaml`` (2 at a time); py-spy, when installed, samples
   each Ray worker from its start (``pip install py-spy``; it needs ptrace rights). The worker
   samples are split into phases: TF import (``_configure_worker``), model build, tracing (the
   first call of each ``tf.function``), compiled train/eval steps, checkpoint writes, waiting in
   ``tune.report``, and the rest.
2. Checks: that TF's thread settings take effect in a trial (run_trial, wrapped, reports whether
   TF was imported before it and the thread counts TF ended up with), and the cost of a .keras
   checkpoint and of an in-memory copy of the weights against an epoch.
3. XLA: bare fits of one config with ``jit_compile`` off and on (first epoch, steady epoch).

    python -m bench.profile_trial [--quick]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

NAME = "profile"
TITLE = "Profile"
RATE = 25  # py-spy samples per second

# phase -> frame substrings (first match wins, in this order)
PHASES = (
    ("TF import + thread config", ("_configure_worker (search/tune/trainable.py",)),
    ("checkpoint write (.keras)", ("CheckpointPolicy._write", "Model.save (keras")),
    ("weights copy (best kept in memory)", ("_variables (search/tune/trainable.py",)),
    ("tracing (first call of each tf.function)", ("trace_function (tensorflow",)),
    ("model build + compile", ("build_model (search/model.py",)),
    ("compiled train/eval steps", ("ConcreteFunction._call_flat",)),
    ("tune.report (waiting for the driver)", ("report (ray/tune/trainable/trainable_fn_utils.py",)),
    ("Keras fit loop, callbacks, tf.data (rest of fit)", ("fit (search/train.py",)),
)


class WorkerSampler:
    """Attach py-spy to every Ray worker process started after this object (after its runtime-env exec)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.since = time.time()
        self.procs: list[subprocess.Popen] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.available = bool(self._pyspy())

    @staticmethod
    def _pyspy() -> str | None:
        beside = Path(sys.executable).with_name("py-spy")
        return str(beside) if beside.exists() else None

    def start(self) -> None:
        if self.available:
            self.thread.start()

    def _watch(self) -> None:
        seen: set[str] = set()
        boot = float(Path("/proc/stat").read_text().split("btime ")[1].split()[0])
        hz = os.sysconf("SC_CLK_TCK")
        while not self.stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit() or pid in seen:
                    continue
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    started = boot + int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]) / hz
                except (OSError, IndexError, ValueError):
                    continue
                if started < self.since - 1:
                    seen.add(pid)
                    continue
                if "setup_worker.py" in cmd:  # it execs into the worker; attach after that
                    continue
                if "default_worker.py" in cmd or cmd.startswith("ray::"):
                    seen.add(pid)
                    self.procs.append(subprocess.Popen(
                        [self._pyspy(), "record", "--pid", pid, "--rate", str(RATE), "--idle", "--threads", "--format",
                         "raw", "-o", str(self.folder / f"worker-{pid}.txt")],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(0.02)

    def finish(self) -> None:
        self.stop.set()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


def worker_phases(folder: Path) -> dict[str, Any]:
    """Seconds per (thread, phase) over the trial threads of all sampled workers.

    A trial has two threads: the fit thread (``train`` in run_trial) trains and hands each epoch
    over; the trial's own thread (``run_trial``) imports TF, then passes each epoch to
    ``tune.report`` and otherwise waits for the next one.
    """
    phases: collections.Counter = collections.Counter()
    totals: collections.Counter = collections.Counter()
    for path in folder.glob("worker-*.txt"):
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if "_train (search/tune/trainable.py" in stack:
                thread = "fit thread"
            elif "report_epochs (search/tune/trainable.py" in stack or "run_trial (search/tune/trainable.py" in stack:
                thread = "trial thread"
            else:
                continue  # Ray's own threads, idle between trials
            n = int(count)
            totals[thread] += n
            frames = re.sub(r":\d+\)", ")", stack)
            for phase, needles in PHASES:
                if any(needle in frames for needle in needles):
                    phases[(thread, phase)] += n
                    break
            else:
                rest = ("waiting for the next epoch (idle)" if thread == "trial thread"
                        else "other (checkpoint restore, session)")
                phases[(thread, rest)] += n
    return {
        "total_s": {k: v / RATE for k, v in totals.items()},
        "phases_s": {f"{thread}: {phase}": v / RATE for (thread, phase), v in phases.most_common()},
    }


def profiled_search(quick: bool, folder: Path) -> dict[str, Any]:
    from pyinstrument import Profiler

    from search.tune import LaunchOptions
    from search.tune.launch import launch

    sampler = WorkerSampler(folder)
    sampler.start()
    profiler = Profiler(interval=0.005)
    profiler.start()
    start = time.perf_counter()
    result = launch(LaunchOptions.from_flat(
        space=str(common.SPACES / "overhead.yaml"), num_samples=8, max_epochs=8 if quick else 20, searcher="random",
        scheduler="fifo", concurrency=2, tracking_uri=f"sqlite:///{folder}/mlflow.db", storage_path=str(folder / "ray"),
        name="profile", quiet=True, seed=0))
    wall = time.perf_counter() - start
    profiler.stop()
    sampler.finish()
    driver = driver_phases(profiler)
    (folder / "driver.txt").write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    return {"wall_s": wall, "result_wall_s": result.wall_time_s, "driver": driver,
            "workers": worker_phases(folder) if sampler.available else None, "py_spy": sampler.available}


def driver_phases(profiler: Any) -> dict[str, float]:
    """Seconds the driver spent in each step of ``launch`` (pyinstrument's frame tree)."""
    session = profiler.last_session
    root = session.root_frame()
    out: dict[str, float] = {}

    def walk(frame: Any) -> None:
        name = frame.function
        if name == "run" and "search/tune/launch.py" in (frame.file_path or ""):
            for child in frame.children:
                label = child.function
                out[label] = out.get(label, 0.0) + child.time
            return
        for child in frame.children:
            walk(child)

    if root is not None:
        walk(root)
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:10])


def thread_check() -> dict[str, Any]:
    """run_trial in a real Tune trial, wrapped: was TF imported before it, and what threads did TF get?"""
    import ray
    from ray import tune

    from search.data import load_dataset
    from search.space import load_space
    from search.tune.trainable import run_trial

    def probe(config: dict, **kw: Any) -> None:
        preloaded = "tensorflow" in sys.modules
        run_trial(config, **kw)
        import tensorflow as tf

        tune.report({"tf_imported_before_run_trial": float(preloaded), "epoch": 0.0,
                     "intra_op_threads": float(tf.config.threading.get_intra_op_parallelism_threads()),
                     "inter_op_threads": float(tf.config.threading.get_inter_op_parallelism_threads())})

    space = load_space(str(common.SPACES / "epoch.yaml"))
    trainable = tune.with_resources(tune.with_parameters(
        probe, space=space, dataset=load_dataset("digits"), max_epochs=2, cpu_threads=1, metric="val_accuracy",
        mode="max", checkpoint_every=0), {"cpu": 1})
    with tempfile.TemporaryDirectory() as folder:
        grid = tune.Tuner(trainable, tune_config=tune.TuneConfig(num_samples=1),
                          run_config=tune.RunConfig(storage_path=folder, name="threads", verbose=0)).fit()
        last = grid[0].metrics
    ray.shutdown()
    return {k: last.get(k) for k in ("tf_imported_before_run_trial", "intra_op_threads", "inter_op_threads")}


def bare_costs(jit: bool, epochs: int) -> dict[str, float]:
    """One process per setting: first epoch, steady epoch, .keras save, weights copy (1 TF thread)."""
    code = f"""
import json, os, tempfile, time
from search.train import configure_runtime
configure_runtime(cpu_threads=1)
import keras
from search import config as vocab
from search.data import load_dataset
from search.model import build_model
from search.space import load_space
from search.train import make_tf_dataset
from search.tune.trainable import _variables
cfg = vocab.resolve(load_space({str(common.SPACES / 'epoch.yaml')!r}).assemble({{}}))
ds = load_dataset("digits")
m = build_model(cfg, ds.input_shape, ds.n_classes, steps_per_epoch=34)
m.compile(optimizer=m.optimizer, loss=m.loss, metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")], jit_compile={jit})
ends = []
class S(keras.callbacks.Callback):
    def on_epoch_end(self, e, logs=None): ends.append(time.perf_counter())
t = time.perf_counter()
m.fit(make_tf_dataset(ds.train, 32, shuffle=True), validation_data=make_tf_dataset(ds.valid, 1024, shuffle=False), epochs={epochs}, verbose=0, callbacks=[S()])
first, steady = ends[0] - t, (ends[-1] - ends[0]) / (len(ends) - 1)
d = tempfile.mkdtemp()
saves = []
for _ in range(5):
    s = time.perf_counter(); m.save(os.path.join(d, "m.keras")); saves.append(time.perf_counter() - s)
copies = []
for _ in range(20):
    s = time.perf_counter(); _variables(m); copies.append(time.perf_counter() - s)
print(json.dumps(dict(first_epoch_s=first, epoch_s=steady, save_s=sorted(saves)[2], copy_s=sorted(copies)[10])))
"""
    timed = common.run_timed([common.PY, "-c", code])
    import json

    return json.loads(timed.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict[str, Any]:
    env = common.environment()
    folder = common.workdir("profile")
    search = profiled_search(quick, folder)
    import ray

    if ray.is_initialized():
        ray.shutdown()
    threads = thread_check()
    epochs = 8 if quick else 15
    xla = {"off": bare_costs(False, epochs), "on": bare_costs(True, epochs)}
    common.close_env(env)
    result: dict[str, Any] = {"quick": quick, "env": env, "search": search, "threads": threads, "xla": xla,
                              "profile_folder": str(folder)}
    lines = [
        f"Command: `python -m bench.profile_trial{' --quick' if quick else ''}` (py-spy for the Ray workers, "
        "pyinstrument for the driver).",
        "",
        f"Measured {common.environment_line(env)}.",
        "",
        f"**A profiled search** (8 trials of `bench/spaces/overhead.yaml`, {8 if quick else 20} epochs, 2 at a time; "
        f"{search['wall_s']:.1f} s under the profilers).",
        "",
    ]
    workers = search.get("workers")
    if workers:
        rows = [(phase, secs, f"{100 * secs / (workers['total_s'].get(phase.split(':')[0]) or 1.0):.1f}%")
                for phase, secs in workers["phases_s"].items()]
        lines += ["Inside the trials' threads in the Ray workers (py-spy wall-clock samples, idle included, all "
                  "trials added up; the share is of that thread's time):", "",
                  common.md_table(rows, ["thread: phase", "seconds", "share of the thread"]), ""]
    else:
        lines += ["(py-spy is not installed: no worker profile.)", ""]
    drows = [(step, secs) for step, secs in search["driver"].items()]
    lines += ["The driver, by step of `launch` (pyinstrument):", "", common.md_table(drows, ["step", "seconds"]), ""]
    lines += [
        "**TF threads in a trial** (run_trial wrapped in a real Tune trial): TF imported before run_trial: "
        f"{'yes' if threads.get('tf_imported_before_run_trial') else 'no'}; intra-op threads "
        f"{threads.get('intra_op_threads'):.0f}, inter-op threads {threads.get('inter_op_threads'):.0f} "
        "(1 CPU per trial). So `configure_runtime` runs before TF's first op and takes effect.",
        "",
        "**Checkpoint and XLA** (bare fits of `bench/spaces/epoch.yaml`, 1 thread):",
        "",
        common.md_table([
            ("jit_compile off", xla["off"]["first_epoch_s"], 1000 * xla["off"]["epoch_s"], 1000 * xla["off"]["save_s"],
             1000 * xla["off"]["copy_s"]),
            ("jit_compile on (XLA)", xla["on"]["first_epoch_s"], 1000 * xla["on"]["epoch_s"], 1000 * xla["on"]["save_s"],
             1000 * xla["on"]["copy_s"]),
        ], ["setting", "first epoch s", "steady epoch ms", ".keras save ms", "weights copy ms"]),
    ]
    section = "\n".join(lines)
    table = common.text_table([(k, v) for k, v in (workers or {}).get("phases_s", {}).items()], ["phase", "seconds"])
    return common.finish(NAME, result, section, title=TITLE, table=table)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    return run(quick=args.quick)


if __name__ == "__main__":
    main()
