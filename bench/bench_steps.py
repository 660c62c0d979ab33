"""Steps per execution: one compiled call per epoch (``auto``, the default) against one per step.

The same config, seed and data through ``search.train.fit`` twice in one process, the two
settings alternated; the figure is the median epoch time after the first (compiled) epoch.
Datasets: digits (1,078 training images of 8x8) and a **synthetic** set of 784 features
(55,000 training rows in full mode, as many as MNIST's; random Gaussian inputs with labels
from a random linear map: synthetic data, labelled so wherever it appears). Both runs give
the same history (tests/test_train.py checks it to float tolerance); only the time differs.

    python -m bench.bench_steps [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import close_env, environment, command_line, finish, md_table, text_table  # noqa: E402

CONFIG = {"n_hidden": 2, "n_neurons": 128, "optimizer": "adam", "learning_rate": 1e-3, "batch_size": 32,
          "dropout": 0.1, "patience": 100}


def synthetic(rows: int, features: int = 784, classes: int = 10, seed: int = 0) -> Any:
    """A SYNTHETIC dataset: Gaussian inputs, labels from a random linear map (not real data)."""
    import numpy as np

    from search.data import Dataset, Split

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(features, classes))
    n_valid = max(1, rows // 11)

    def split(n: int) -> Split:
        x = rng.normal(size=(n, features)).astype("float32")
        return Split(x, (x @ weights).argmax(axis=1).astype("int64"))

    return Dataset("synthetic-784 (SYNTHETIC)", split(rows), split(n_valid), split(n_valid), classes)


def epoch_ms(dataset: Any, spe: int | str, epochs: int) -> float:
    from search.train import fit

    result = fit({**CONFIG, "steps_per_execution": spe}, dataset, epochs=epochs, seed=0)
    return 1000 * statistics.median(row["epoch_time_s"] for row in result.history[1:])


def run(quick: bool = False) -> dict[str, Any]:
    from search.data import load_dataset
    from search.train import configure_runtime

    configure_runtime(cpu_threads=1)  # a trial's share on 2 cores, as in a search
    env = environment()
    datasets = [("digits", load_dataset("digits"), 6 if quick else 12),
                ("synthetic 784", synthetic(11_000 if quick else 55_000), 3 if quick else 4)]
    rows, figures = [], {}
    for label, data, epochs in datasets:
        one, auto = [], []
        for _ in range(2):  # alternate, so that drift in the machine's speed hits both
            one.append(epoch_ms(data, 1, epochs))
            auto.append(epoch_ms(data, "auto", epochs))
        t1, ta = min(one), min(auto)
        steps = -(-len(data.train.y) // CONFIG["batch_size"])
        figures[label] = {"rows": len(data.train.y), "steps_per_epoch": steps, "one_step_ms": t1, "auto_ms": ta,
                          "speedup": t1 / ta}
        rows.append([label, len(data.train.y), steps, t1, ta, t1 / ta])
    header = ["data", "train rows", "steps/epoch", "1 step/call ms/epoch", "auto ms/epoch", "speed-up"]
    headline = ", ".join(f"{k}: {v['speedup']:.2f}× faster epochs" for k, v in figures.items())
    result = {"quick": quick, "env": close_env(env), "figures": figures, "headline": headline,
              "met": None}
    section = "\n".join([
        __doc__.split("\n\n    python")[0].strip(),
        "",
        md_table(rows, header),
        "",
        f"Config: {CONFIG}, TF with 1 intra-op thread (a trial's share). Figures: the faster of two alternated "
        "runs of each setting, median epoch after the first.",
        "",
        command_line("bench_steps", quick, env),
    ])
    return finish("steps", result, section, title="Steps per execution", table=text_table(rows, header))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    run(quick=parser.parse_args().quick)
