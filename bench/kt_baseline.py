"""The KerasTuner baseline: ``keras_tuner.RandomSearch`` over a search space of this project.

The same space file (compiled by ``Space.to_keras_tuner``), the same model builder
(``search.model.build_model``), data and ``tf.data`` pipelines as `search launch`; KerasTuner runs
its trials one after another in this process, as its users run it, with TF's default threads.

    python -m bench.kt_baseline --space bench/spaces/overhead.yaml --trials 8 --epochs 20 --seed 0

Prints one JSON line: ``import_s`` (TF, Keras and KerasTuner, whose Tuner imports tensorboard),
``search_s`` (``tuner.search``), ``best_val_accuracy`` and each trial's config and score.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", required=True)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import keras_tuner
    import tensorflow  # noqa: F401

    import_s = time.perf_counter() - _T0
    from search import config as vocab
    from search.data import load_dataset
    from search.model import build_model
    from search.space import load_space
    from search.train import make_tf_dataset

    space = load_space(args.space)
    dataset = load_dataset("digits")
    hp = space.to_keras_tuner()
    batch_size = int(vocab.resolve(space.sample(0))["batch_size"])  # fixed in the space
    steps = max(1, math.ceil(len(dataset.train.y) / batch_size))

    def build(hp: keras_tuner.HyperParameters) -> object:
        cfg = space.assemble(hp.values)
        cfg["epochs"] = args.epochs
        return build_model(vocab.resolve(cfg), dataset.input_shape, dataset.n_classes, steps_per_epoch=steps)

    start = time.perf_counter()
    tuner = keras_tuner.RandomSearch(
        build, objective="val_accuracy", max_trials=args.trials, seed=args.seed, hyperparameters=hp,
        directory=tempfile.mkdtemp(prefix="kt-"), project_name="kt", overwrite=True,
    )
    tuner.search(
        make_tf_dataset(dataset.train, batch_size, shuffle=True),
        validation_data=make_tf_dataset(dataset.valid, 1024, shuffle=False),
        epochs=args.epochs, verbose=0,
    )
    search_s = time.perf_counter() - start
    trials = [{"config": space.assemble(t.hyperparameters.values), "score": t.score}
              for t in tuner.oracle.trials.values()]
    best = max((t["score"] for t in trials if t["score"] is not None), default=None)
    print(json.dumps({"import_s": import_s, "search_s": search_s, "best_val_accuracy": best, "trials": trials}))


if __name__ == "__main__":
    main()
