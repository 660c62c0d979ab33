"""Benchmark: MC dropout sampling, the notebooks' loop against ``pipelines.mc_dropout.mc_predict``.

The network is 784-300-100-10 (ReLU, softmax) with Dropout(0.2) after each hidden layer.
Its weights are random (Glorot, untrained) and the inputs are random uniform [0, 1) with
synthetic labels: timing does not depend on what the network learned.

* naive: ``model(X, training=True)`` T times over the whole array at once, as the
  notebooks did (eager Keras calls).
* fast: ``mc_predict(model, X, samples=T)``: the first Dense runs once per input, the rest
  runs on the prefix activations tiled T times in one compiled call per chunk.
* fast, shared masks: ``mc_predict(..., shared_masks=True)`` (what ``search evaluate`` runs):
  one dropout mask per sample and chunk, shared by the chunk's examples, so each sample is a
  thinner sub-network that computes only the units its masks keep (pipelines/subnetworks.py).

Each path gets a warm-up call, then ``repeats`` timed calls in the same process; the best
is reported (wall seconds, and process CPU seconds, which suffer less from other
processes on a shared machine). Usage::

    python bench/bench_mc_dropout.py            # T=100, 10k inputs
    python bench/bench_mc_dropout.py --quick    # T=20, 2k inputs
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

logger = logging.getLogger("bench.mc_dropout")


def build_model(seed: int = 0) -> Any:
    """784-300-100-10 with Dropout(0.2) after each hidden layer; random (untrained) weights."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(300, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(100, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random inputs of 784 features in [0, 1) and random labels in 0..9."""
    rng = np.random.default_rng(seed)
    return rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, size=n)


def naive_loop(model: Any, x: np.ndarray, samples: int) -> np.ndarray:
    """The notebooks' loop: ``model(X, training=True)`` over the whole array, T times."""
    return np.stack([np.asarray(model(x, training=True)) for _ in range(samples)])


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Warm up once, then the best wall and CPU seconds over ``repeats`` calls."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return min(walls), min(cpus)


def run(quick: bool = False, repeats: int | None = None) -> dict[str, Any]:
    """Time the three paths; return the settings, the seconds and the speedups."""
    import tensorflow as tf

    from pipelines.mc_dropout import mc_predict

    samples, n = (20, 2_000) if quick else (100, 10_000)
    repeats = repeats or (3 if quick else 2)
    model = build_model()
    x, _ = make_data(n)
    paths = {
        "naive": lambda: naive_loop(model, x, samples),
        "fast": lambda: mc_predict(model, x, samples=samples),
        "fast_shared_masks": lambda: mc_predict(model, x, samples=samples, shared_masks=True),
    }
    timings = {name: best_time(fn, repeats) for name, fn in paths.items()}
    naive_wall, naive_cpu = timings["naive"]
    result: dict[str, Any] = {
        "samples": samples,
        "inputs": n,
        "repeats": repeats,
        "cpu_cores": os.cpu_count(),
        "tensorflow": tf.__version__,
        "device": "GPU" if tf.config.list_physical_devices("GPU") else "CPU",
    }
    for name, (wall, cpu) in timings.items():
        result[f"{name}_s"] = round(wall, 3)
        result[f"{name}_cpu_s"] = round(cpu, 3)
        if name != "naive":
            result[f"{name}_speedup"] = round(naive_wall / wall, 2)
            result[f"{name}_cpu_speedup"] = round(naive_cpu / cpu, 2)
    return result


def print_table(result: dict[str, Any]) -> None:
    print(
        f"MC dropout, 784-300-100-10, T={result['samples']}, N={result['inputs']}, "
        f"{result['device']}, {result['cpu_cores']} cores, best of {result['repeats']}"
    )
    print(f"{'path':<20}{'wall s':>10}{'cpu s':>10}{'speedup':>10}{'cpu speedup':>13}")
    for name in ("naive", "fast", "fast_shared_masks"):
        speedup = result.get(f"{name}_speedup", 1.0)
        cpu_speedup = result.get(f"{name}_cpu_speedup", 1.0)
        print(
            f"{name:<20}{result[f'{name}_s']:>10.3f}{result[f'{name}_cpu_s']:>10.3f}"
            f"{speedup:>9.2f}x{cpu_speedup:>12.2f}x"
        )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T=20 and 2k inputs instead of T=100 and 10k")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per path (best is kept)")
    args = parser.parse_args(argv)
    result = run(quick=args.quick, repeats=args.repeats)
    print_table(result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
