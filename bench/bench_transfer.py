"""Transfer: digits 8 against 9 from 50 training images, reusing a 0-7 model's hidden layers, against from scratch.

As the seeds' notebooks do with sandals and shirts: model A is trained on digits 0-7 (the
bundled digits' training split, those classes; early stopping on their validation split). Model
B learns 8 against 9 from 50 training images (``--train-limit 50``, stratified), validated and
tested on the whole 8/9 validation and test splits. B is the same net each time (2 hidden layers
of 64 ELU units, Adam): from scratch, or with A's first one or two hidden layers copied, frozen
for 5 epochs, then trained on at a tenth of the learning rate (``reuse_layers``, ``freeze_epochs``,
``unfreeze_lr_factor``: what ``--transfer-from`` does in a trial). Mean ± std of the test accuracy
and loss over 5 seeds; the seeds are B's (initialization and shuffling), A is trained once.

    python -m bench.bench_transfer [--quick | --render]
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import close_env, environment, command_line, finish, md_table, text_table, main  # noqa: E402

NET = {"n_hidden": 2, "n_neurons": 64, "activation": "elu", "initializer": "he_normal", "optimizer": "adam",
       "learning_rate": 3e-3, "batch_size": 16, "patience": 10}
VARIANTS = {
    "from scratch": {},
    "reuse 1 layer": {"reuse_layers": 1, "freeze_epochs": 5, "unfreeze_lr_factor": 0.1},
    "reuse 2 layers": {"reuse_layers": 2, "freeze_epochs": 5, "unfreeze_lr_factor": 0.1},
}


def run(quick: bool = False) -> dict[str, Any]:
    from search import train as T
    from search.data import load_subset
    from search.transfer import source_layers

    T.configure_runtime(cpu_threads=1)
    env = environment()
    seeds = range(2 if quick else 5)
    epochs = 20 if quick else 60
    first = load_subset("digits", classes="0,1,2,3,4,5,6,7")
    source_model = T.fit({**NET, "batch_size": 32}, first, epochs=epochs, seed=0).model
    source_acc = T.evaluate(source_model, first.test)["accuracy"]
    source = source_layers(source_model)
    pair = load_subset("digits", classes="8,9", train_limit=50)
    scores: dict[str, list[dict[str, float]]] = {name: [] for name in VARIANTS}
    for seed in seeds:
        for name, keys in VARIANTS.items():
            fitted = T.fit({**NET, **keys}, pair, epochs=epochs, seed=seed, source=source if keys else None)
            scores[name].append({**T.evaluate(fitted.model, pair.test), "epochs": len(fitted.history)})
    figures = {name: {"accuracy": [r["accuracy"] for r in runs], "loss": [r["loss"] for r in runs],
                      "epochs": [r["epochs"] for r in runs]} for name, runs in scores.items()}
    result = {"quick": quick, "env": close_env(env), "figures": figures, "source_test_accuracy": source_acc,
              "test_images": len(pair.test.y), "met": None}
    return render(result)


def render(result: dict[str, Any]) -> dict[str, Any]:
    """The table, the headline and the doc section from a result (``--render`` redraws a saved one)."""
    figures, n_test = result["figures"], result["test_images"]
    rows = [[name, f"{statistics.mean(f['accuracy']):.4f} ± {statistics.stdev(f['accuracy']):.4f}",
             f"{statistics.mean(f['loss']):.3f} ± {statistics.stdev(f['loss']):.3f}",
             f"{statistics.mean(f['epochs']):.1f}"] for name, f in figures.items()]
    scratch = figures["from scratch"]["accuracy"]
    best_name = max(figures, key=lambda n: statistics.mean(figures[n]["accuracy"]))
    best = figures[best_name]["accuracy"]
    gain = statistics.mean(best) - statistics.mean(scratch)
    se = (statistics.variance(best) / len(best) + statistics.variance(scratch) / len(scratch)) ** 0.5
    result["headline"] = (f"test accuracy from scratch {statistics.mean(scratch):.4f}; best transfer ({best_name}) "
                          f"{100 * gain:+.1f} points (standard error {100 * se:.1f})" if best_name != "from scratch"
                          else f"from scratch ({statistics.mean(scratch):.4f}) beat every transfer")
    header = ["model B", "test accuracy (mean ± std)", "test loss", "epochs trained"]
    env = result["env"]
    section = "\n".join([
        __doc__.split("\n\n    python")[0].strip(),
        "",
        md_table(rows, header),
        "",
        f"Model A's test accuracy on digits 0-7: {result['source_test_accuracy']:.4f}. B's test split: {n_test} images "
        f"of 8 and 9, so one image is {100 / n_test:.1f} points; {len(scratch)} seeds. {result['headline']}, that is "
        f"{abs(gain) / se:.1f} standard errors of the difference: "
        f"{'clear' if abs(gain) >= 3 * se else 'suggestive, not conclusive'}. "
        + "; ".join(f"{n}: {100 * (statistics.mean(f['accuracy']) - statistics.mean(scratch)):+.1f} points"
                    for n, f in figures.items() if n != "from scratch")
        + ". Training from scratch stops earliest (early stopping on the 8/9 validation split); with copied layers "
        "the validation loss keeps improving for longer.",
        "",
        command_line("bench_transfer", result['quick'], env),
    ])
    return finish("transfer", result, section, title="Transfer", table=text_table(rows, header))


if __name__ == "__main__":
    main(__doc__, run, render=render, name="transfer")
