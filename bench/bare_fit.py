"""The baseline trainer: bare ``model.fit`` of trial configs, as a notebook would run them.

For each config: the model ``search.model.build_model`` builds (the same layers, optimizer and
schedule as a trial), the same ``tf.data`` pipelines (``search.train.make_tf_dataset``), the
config's own schedule callbacks, and nothing else: no early stopping, no reporting, no
checkpoints, no Ray, no MLflow. TF gets ``--threads`` threads, set before its first op, as a
trial does. Only the ``model.fit`` call is timed; TF's import and the model build are not.

    python -m bench.bare_fit --configs configs.json --out times.json --threads 1

``configs.json`` is a list of configs (canonical keys; ``epochs`` says how many). The output is
a list, one row per config: ``fit_s``, ``epoch_ends`` (seconds from the start of ``fit`` to the
end of each epoch), ``epoch_end_times`` (the same, as Unix times) and ``best_val_accuracy``;
with ``--repeats N``, the fastest of N fits. With ``--until FILE`` it fits the configs over and
over until FILE exists, and lists every fit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def fit_one(config: dict[str, Any], dataset: Any) -> dict[str, Any]:
    import keras

    from search import config as vocab
    from search.model import build_model, schedule_callbacks
    from search.train import make_tf_dataset, prepare

    full = vocab.resolve(config)
    data = prepare(full, dataset)
    batch_size = int(full["batch_size"])
    steps = max(1, math.ceil(len(data.train.y) / batch_size))
    model = build_model(full, data.input_shape, data.n_classes, steps_per_epoch=steps)
    ends: list[float] = []

    clock: list[float] = []

    class Stamp(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            ends.append(time.perf_counter())
            clock.append(time.time())

    train = make_tf_dataset(data.train, batch_size, shuffle=True)
    valid = make_tf_dataset(data.valid, 1024, shuffle=False)
    start = time.perf_counter()
    history = model.fit(train, validation_data=valid, epochs=int(full["epochs"]), verbose=0,
                        callbacks=[*schedule_callbacks(full), Stamp()])
    fit_s = time.perf_counter() - start
    val = [v for v in history.history.get("val_accuracy", []) if math.isfinite(v)]
    return {"fit_s": fit_s, "epoch_ends": [t - start for t in ends], "epoch_end_times": clock,
            "best_val_accuracy": max(val) if val else None}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--until", help="loop mode: fit the configs again and again until this file exists")
    args = parser.parse_args(argv)

    from search.train import configure_runtime

    configure_runtime(cpu_threads=args.threads)  # before TF's first op, as in a trial
    from search.data import load_dataset

    dataset = load_dataset(args.dataset)
    configs = json.loads(Path(args.configs).read_text())
    rows = []
    if args.until:  # every fit, in order, until told to stop
        while not Path(args.until).exists():
            rows += [fit_one(config, dataset) for config in configs]
    else:
        for config in configs:
            runs = [fit_one(config, dataset) for _ in range(max(1, args.repeats))]
            rows.append(min(runs, key=lambda r: r["fit_s"]))
    Path(args.out).write_text(json.dumps(rows))


if __name__ == "__main__":
    main()
