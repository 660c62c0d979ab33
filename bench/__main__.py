"""Run every benchmark of issue #6 and update docs/benchmarks.md.

    python -m bench                 # full sizes (the figures of record)
    python -m bench --quick         # small sizes: a few minutes on 2 cores
    python -m bench --only epoch cli --quick

Each benchmark runs its baseline and the project in the same run, prints its table and replaces
its own section of docs/benchmarks.md; the summary table there is rebuilt from bench/results/.
A benchmark that fails is reported and the others still run; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name -> module with run(quick=...); cheap ones first.
BENCHMARKS = {
    "cli": "bench.bench_cli",
    "mc_dropout": "bench.section_mc_dropout",
    "epoch": "bench.bench_epoch",
    "steps": "bench.bench_steps",
    "overhead": "bench.bench_overhead",
    "kerastuner": "bench.bench_kerastuner",
    "scheduler": "bench.bench_scheduler",
    "transfer": "bench.bench_transfer",
    "quality": "bench.bench_quality",
    "reports": "bench.bench_reports",
    "driver": "bench.bench_driver",
    "store": "bench.bench_store",
    "warm_start": "bench.bench_warm_start",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes on 2 cores)")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), help="run only these")
    args = parser.parse_args(argv)
    failed = []
    for name in args.only or BENCHMARKS:
        print(f"\n== {name} ({'quick' if args.quick else 'full'})", flush=True)
        start = time.perf_counter()
        try:
            importlib.import_module(BENCHMARKS[name]).run(quick=args.quick)
        except Exception:  # noqa: BLE001 (report it and go on with the others)
            traceback.print_exc()
            failed.append(name)
        print(f"== {name}: {time.perf_counter() - start:.0f} s", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
