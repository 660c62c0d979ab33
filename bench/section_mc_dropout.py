"""Runs bench/bench_mc_dropout.py (unchanged) and writes its result into docs/benchmarks.md.

    python -m bench.section_mc_dropout            # T=100, 10k inputs
    python -m bench.section_mc_dropout --quick    # T=20, 2k inputs
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_mc_dropout, common  # noqa: E402

NAME = "mc_dropout"
TITLE = "MC dropout"
TARGET = 10.0


def run(quick: bool = False) -> dict[str, Any]:
    env = common.environment()
    measured = bench_mc_dropout.run(quick=quick)
    common.close_env(env)
    speedup = measured["fast_speedup"]
    result: dict[str, Any] = {
        "quick": quick, "env": env, **measured, "target": TARGET, "met": speedup >= TARGET,
        "headline": f"{speedup:.1f}× (fast) / {measured['fast_shared_masks_speedup']:.1f}× (shared masks), "
                    f"T={measured['samples']}, N={measured['inputs']}",
    }
    rows = []
    for name in ("naive", "fast", "fast_shared_masks"):
        rows.append((name, measured[f"{name}_s"], measured[f"{name}_cpu_s"],
                     f"{measured.get(f'{name}_speedup', 1.0):.1f}×", f"{measured.get(f'{name}_cpu_speedup', 1.0):.1f}×"))
    header = ["path", "wall s", "cpu s", "speedup", "cpu speedup"]
    verdict = (f"**Target met**: {speedup:.1f}× ≥ {TARGET:.0f}×." if result["met"] else
               f"**Target not met**: {speedup:.1f}× against ≥ {TARGET:.0f}×.")
    section = "\n".join([
        f"Command: `python -m bench.section_mc_dropout{' --quick' if quick else ''}` (runs `bench/bench_mc_dropout.py`; "
        f"{'quick' if quick else 'full'} mode: T={measured['samples']} samples of N={measured['inputs']} inputs, best of "
        f"{measured['repeats']}; full mode is T=100, N=10,000).",
        "",
        f"Measured {common.environment_line(env)}; device {measured['device']}.",
        "",
        "Method (see the script's docstring): a 784-300-100-10 ReLU net with Dropout(0.2), random weights and inputs. "
        "naive = the notebooks' `model(X, training=True)` T times; fast = `pipelines.mc_dropout.mc_predict` "
        "(first Dense once per input, the rest on tiled activations in one compiled call per chunk).",
        "",
        common.md_table(rows, header),
        "",
        verdict,
    ])
    return common.finish(NAME, result, section, title=TITLE, table=common.text_table(rows, header))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    return run(quick=args.quick)


if __name__ == "__main__":
    main()
