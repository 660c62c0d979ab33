"""Benchmark: how long `search --help` takes, as a user types it (a fresh process each time).

The console script of this environment is run ``--repeats`` times (after one warm-up run that
fills the OS file cache); the median wall time from fork to exit is compared with 1 s. `search
launch --help` is timed too. Usage::

    python -m bench.bench_cli            # 10 runs each
    python -m bench.bench_cli --quick    # 5 runs each
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402

NAME = "cli"
TITLE = "CLI start"
TARGET_S = 1.0


def run(quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    env = common.environment()
    repeats = repeats or (5 if quick else 10)
    search = common.search_cli()
    timings: dict[str, list[float]] = {}
    for label, args in (("search --help", [search, "--help"]), ("search launch --help", [search, "launch", "--help"])):
        common.run_timed(args)  # warm the file cache
        timings[label] = [common.run_timed(args).wall_s for _ in range(repeats)]
    common.close_env(env)
    median = statistics.median(timings["search --help"])
    result: dict[str, Any] = {
        "quick": quick, "env": env, "repeats": repeats, "timings_s": timings, "median_s": median,
        "target_s": TARGET_S, "met": median < TARGET_S,
        "headline": f"{median:.2f} s median (`search --help`)",
    }
    rows = [(label, statistics.median(t), min(t), max(t)) for label, t in timings.items()]
    header = ["command", "median s", "min s", "max s"]
    verdict = (f"**Target met**: {median:.2f} s < {TARGET_S:.0f} s." if result["met"] else
               f"**Target not met**: {median:.2f} s against < {TARGET_S:.0f} s.")
    section = "\n".join([
        f"Command: `python -m bench.bench_cli{' --quick' if quick else ''}` ({repeats} runs each after a warm-up run; "
        "full mode is `python -m bench.bench_cli`).",
        "",
        f"Measured {common.environment_line(env)}.",
        "",
        "Method: the `search` console script in a fresh process, wall time from fork to exit. `search/cli/` "
        "imports only click at module level; Ray, TF and MLflow are imported inside the commands.",
        "",
        common.md_table(rows, header),
        "",
        verdict,
    ])
    return common.finish(NAME, result, section, title=TITLE, table=common.text_table(rows, header))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 runs instead of 10")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args(argv)
    return run(quick=args.quick, repeats=args.repeats)


if __name__ == "__main__":
    main()
