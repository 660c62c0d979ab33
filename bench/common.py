"""Shared helpers for the benchmarks: environment facts, subprocess timing, MLflow read-back,
and the marked sections of docs/benchmarks.md.

Every benchmark writes its result to ``bench/results/NAME.json`` and replaces only its own
section of ``docs/benchmarks.md``, between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->``;
the summary table at the top (``<!-- bench:summary -->``) is rebuilt from all the result files.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "bench" / "results"
SPACES = ROOT / "bench" / "spaces"
PY = sys.executable
# Quiet TF/absl in every child process; the benchmarks read stdout (JSON) and keep stderr for errors.
CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "ABSL_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}

# The order of the summary table, with each row's baseline and target, as in issue #6.
ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("overhead", "Orchestration overhead: 8 fixed configs on digits",
     "sum of bare `model.fit` times ÷ effective concurrency", "`search launch` wall, start-up included, ≤ 1.15× ideal"),
    ("kerastuner", "Versus KerasTuner", "`keras_tuner.RandomSearch`, same space, trials, epochs",
     "wall ≤ 0.7× KerasTuner's, best val_accuracy ≥ KerasTuner's"),
    ("scheduler", "Scheduler efficiency", "FIFO random search, 16 trials, same seed",
     "ASHA within 0.5 points of FIFO's best in ≤ 0.4× the wall"),
    ("epoch", "Per-epoch cost inside a trial", "bare `model.fit`, same model and data", "≤ 1.05×"),
    ("cli", "CLI start", "none", "`search --help` < 1 s"),
    ("mc_dropout", "MC dropout", "the seed's Python loop", "≥ 10× faster"),
    ("steps", "Steps per execution (`auto`: one call per epoch)", "one step per compiled call, same fit",
     "faster epochs, the same numbers (no target set)"),
    ("driver", "Driver throughput (issue #13)", "plain Ray Tune with its default loggers, same trainable",
     "≥ 500 results/s with every result in MLflow (SQLite and server)"),
    ("store", "Store reads (issue #13): a search of 1,000 trials", "the same commands reading through `MlflowClient`",
     "the store intact; `search runs` and `search best` < 2 s, SQLite and server"),
    ("time_to_quality", "Time to quality (issue #13): 16x30 and 8x10 on digits", "KerasTuner Random/Hyperband, "
     "Optuna TPE + median pruning, plain Ray Tune FIFO/ASHA, same space and budget", "ASHA ≤ 0.25× and FIFO ≤ 0.4× "
     "KerasTuner Random (16x30); ≤ 0.35× plain Ray Tune; 8x10 ≤ 0.7× KerasTuner; fixed cost ≤ 10 s"),
    ("reports", "Report coalescing (issue #13)", "every epoch a Tune report, same search",
     "driver CPU per epoch at least halved, every epoch in MLflow"),
    ("quality", "Quality (issue #14): the default pipeline on digits", "scikit-learn MLP/SVC/LogReg and KerasTuner's "
     "best, same split", "deep ensemble ≥ 0.985; its NLL and ECE ≤ the single model's; MC ECE ≤ deterministic"),
    ("regression", "Regression (issue #15): the default pipeline on diabetes", "scikit-learn RidgeCV and "
     "MLPRegressor, same split", "test RMSE ≤ both; 90% intervals cover 85–95% of the test targets"),
    ("warm_start", "Warm start (issue #16): TPE from an earlier search", "a cold TPE search, same seeds and budget",
     "fewer trials to the earlier search's best"),
    ("transfer", "Transfer (issue #16): digits 8 vs 9, 50 training images", "the same net from scratch, 5 seeds",
     "measured, reported whichever way it comes out"),
)


# -- the environment ---------------------------------------------------------------------------
def loadavg() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return float("nan")


def versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names or ("tensorflow", "keras", "ray", "mlflow", "keras-tuner", "tensorboard", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def environment() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib(), 1),
        "python": platform.python_version(),
        "versions": versions(),
        "loadavg_start": loadavg(),
    }


def environment_line(env: Mapping[str, Any]) -> str:
    vers = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    load = f"load average {env.get('loadavg_start', float('nan')):.1f} at start"
    if "loadavg_end" in env:
        load += f", {env['loadavg_end']:.1f} at end"
    return (f"{env['date']}; {env['cpu']}, {env['cores']} cores, {env['memory_gib']} GiB; Python {env['python']}; "
            f"{vers}; {load} (shared machine: other jobs were running)")


def command_line(script: str, quick: bool, env: Mapping[str, Any]) -> str:
    """A section's last line: the command that wrote it, and the machine it ran on."""
    return f"Command: `python -m bench.{script}{' --quick' if quick else ''}`. {environment_line(env)}"


def targets_line(issue: int, checks: Mapping[str, bool]) -> str:
    """``Targets (issue #N): <check>: **met**; ...`` for a section."""
    return f"Targets (issue #{issue}): " + "; ".join(f"{k}: **{'met' if v else 'not met'}**" for k, v in checks.items()) + "."


# -- running things ----------------------------------------------------------------------------
@dataclass
class Timed:
    wall_s: float
    returncode: int
    stdout: str
    stderr: str


def run_timed(args: Sequence[str], *, cwd: str | Path | None = None, env: Mapping[str, str] | None = None,
              timeout: float = 3600, check: bool = True) -> Timed:
    """Run ``args``; its wall time from fork to exit (interpreter start-up and imports included)."""
    full_env = {**os.environ, **CHILD_ENV, **(env or {})}
    # The repository first on the path, so `-m bench.x` works from any folder.
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([full_env["PYTHONPATH"]] if full_env.get("PYTHONPATH") else [])])
    start = time.perf_counter()
    proc = subprocess.run(list(args), cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False)
    wall = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return Timed(wall, proc.returncode, proc.stdout, proc.stderr)


def search_cli() -> str:
    """The `search` console script of this interpreter's environment."""
    beside = Path(PY).with_name("search")
    return str(beside) if beside.exists() else (shutil.which("search") or "search")


def launch_cli(workdir: Path, name: str, *, space: str | Path, num_samples: int, searcher: str = "random",
               scheduler: str = "fifo", concurrency: int | None = None, seed: int = 0, max_epochs: int | None = None,
               extra: Sequence[str] = ()) -> tuple[Timed, dict[str, Any]]:
    """`search launch ... --json` as a user runs it, in ``workdir`` with its own MLflow store; timed."""
    args = [search_cli(), "launch", "--space", str(space), "--dataset", "digits", "--num-samples", str(num_samples),
            "--searcher", searcher, "--scheduler", scheduler, "--seed", str(seed), "--name", name,
            "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}", "--storage-path", str(workdir / "ray"), "-q", "--json"]
    if concurrency:
        args += ["--concurrency", str(concurrency)]
    if max_epochs:
        args += ["--max-epochs", str(max_epochs)]
    timed = run_timed([*args, *extra], cwd=workdir)
    return timed, json.loads(timed.stdout)


def bare_fits(configs: Sequence[Mapping[str, Any]], *, processes: int, threads: int = 1, repeats: int = 1,
              workdir: Path) -> list[dict[str, Any]]:
    """Fit each config with bare ``model.fit`` (bench/bare_fit.py), in ``processes`` parallel processes.

    Returns one dict per config, in order: ``fit_s`` (the ``model.fit`` call), ``epoch_ends``
    (seconds from the start of ``fit`` to the end of each epoch), ``best_val_accuracy``.
    """
    chunks: list[list[int]] = [[] for _ in range(max(1, processes))]
    for i in range(len(configs)):
        chunks[i % len(chunks)].append(i)
    procs = []
    for k, idx in enumerate(chunks):
        if not idx:
            continue
        cfg_file = workdir / f"bare-{k}.json"
        out_file = workdir / f"bare-{k}.out.json"
        cfg_file.write_text(json.dumps([configs[i] for i in idx]))
        env = {**os.environ, **CHILD_ENV, "PYTHONPATH": str(ROOT)}
        args = [PY, "-m", "bench.bare_fit", "--configs", str(cfg_file), "--out", str(out_file), "--threads", str(threads),
                "--repeats", str(repeats)]
        procs.append((idx, out_file, subprocess.Popen(args, cwd=workdir, env=env, stdout=subprocess.PIPE,
                                                      stderr=subprocess.PIPE, text=True)))
    results: list[dict[str, Any]] = [{} for _ in configs]
    for idx, out_file, proc in procs:
        _, err = proc.communicate(timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"bare fit exited {proc.returncode}:\n{err[-4000:]}")
        for i, row in zip(idx, json.loads(out_file.read_text()), strict=True):
            results[i] = row
    return results


def trial_runs(uri: str, parent_run_id: str) -> list[Any]:
    """The trial runs of a search, as MLflow recorded them."""
    from search import tracking

    mlc = tracking.client(uri)
    parent = mlc.get_run(parent_run_id)
    return list(mlc.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{tracking.PARENT}` = '{parent_run_id}' and tags.`{tracking.ROLE}` = 'trial'",
        max_results=10000,
    ))


def workdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))


# -- docs/benchmarks.md ------------------------------------------------------------------------
HEADER = """# Benchmarks

Issue #6: a user picks this tool over KerasTuner or a hand-written Ray Tune script only if it
costs no more compute for the same result. Each script in `bench/` runs its baseline and the
project **in the same run** (same data, configs and seeds), prints a table, writes
`bench/results/NAME.json` and replaces only its own section below (between
`<!-- bench:NAME -->` markers); the summary is rebuilt from the result files.

```bash
python -m bench --quick          # every benchmark, small sizes: a few minutes on 2 cores
python -m bench                  # full sizes (the figures of record; about half an hour on 2 cores)
python -m bench --only epoch cli # some of them
bench/run_all.sh [--quick]       # the same, from a shell
```

`pip install -e ".[bench]"` adds what the baselines need (tensorboard, which KerasTuner's
Tuner imports, and pyinstrument for the driver profile). `py-spy` (not a dependency) is used by
`python -m bench.profile_trial` to sample the Ray workers.

"""


def _read_doc() -> str:
    if DOC.exists():
        return DOC.read_text()
    return HEADER + "<!-- bench:summary -->\n<!-- /bench:summary -->\n"


def update_section(name: str, body: str, *, title: str | None = None) -> None:
    """Replace the ``name`` section of docs/benchmarks.md (append it if new); rebuild the summary."""
    text = _read_doc()
    block = f"<!-- bench:{name} -->\n{body.rstrip()}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + (f"## {title}\n\n" if title else "") + block + "\n"
    if name != "summary":
        summary = f"<!-- bench:summary -->\n{summary_table().rstrip()}\n<!-- /bench:summary -->"
        text = re.sub(r"<!-- bench:summary -->.*?<!-- /bench:summary -->", lambda _: summary, text, flags=re.S)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)


def save_result(name: str, result: Mapping[str, Any]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")


def load_result(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def summary_table() -> str:
    """One row per benchmark of issue #6, from the latest result files."""
    lines = [
        "| benchmark | baseline (same run) | target | measured | met? | mode, date |",
        "|---|---|---|---|---|---|",
    ]
    for name, title, baseline, target in ROWS:
        result = load_result(name)
        if result is None:
            lines.append(f"| {title} | {baseline} | {target} | not run yet | | |")
            continue
        met = result.get("met")
        verdict = "**yes**" if met else ("**no**" if met is not None else "")
        when = f"{'quick' if result.get('quick') else 'full'}, {result.get('env', {}).get('date', '')}"
        lines.append(f"| {title} | {baseline} | {target} | {result.get('headline', '')} | {verdict} | {when} |")
    lines.append("")
    lines.append("Each row links to its section below for the method, the figures and the command.")
    return "\n".join(lines)


def md_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def text_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def close_env(env: dict[str, Any]) -> dict[str, Any]:
    env["loadavg_end"] = loadavg()
    return env


def finish(name: str, result: dict[str, Any], section: str, *, title: str, table: str) -> dict[str, Any]:
    """Print the table, save the result and update the doc section."""
    print(table)
    print(json.dumps({k: v for k, v in result.items() if k != "env"}, default=str))
    save_result(name, result)
    update_section(name, section, title=title)
    return result


def main(doc: str, run: Any, *, render: Any = None, name: str = "") -> None:
    """A benchmark's command line: ``--quick`` for small sizes; with ``render``, ``--render`` redraws
    its section from ``bench/results/NAME.json`` without running it again."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    if render is not None:
        parser.add_argument("--render", action="store_true", help=f"redraw the section from bench/results/{name}.json")
    args = parser.parse_args()
    if render is not None and args.render:
        render(load_result(name))
    else:
        run(quick=args.quick)
