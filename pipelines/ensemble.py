"""Deep ensembles: K retrained seeds of one config as one Keras model that averages their probabilities.

``ensemble_model`` wraps the members in a functional model (input -> each member -> ``Average``),
which saves as one ``.keras`` file, loads with ``mlflow.keras.load_model`` and serves with
``mlflow models serve`` like any other model. ``members`` takes them back out, so that MC
dropout can sample each member. Imports Keras only inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ENSEMBLE_NAME = "deep_ensemble"
MEMBER_PREFIX = "member_"


def ensemble_model(members: Sequence[Any]) -> Any:
    """One model whose output is the mean of the members' outputs (probabilities). The members go in as
    inference copies (``search.model.inference_copy``): a compiled member would carry its optimizer and loss
    into the file, and with 1cycle or a regressor's loss no process without this project could load it."""
    import keras

    from search.model import inference_copy

    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
    shapes = {tuple(m.input_shape[1:]) for m in members} | {("out", *m.output_shape[1:]) for m in members}
    if len(shapes) != 2:
        raise ValueError(f"the members' input and output shapes differ: {sorted(shapes, key=str)}")
    members = [inference_copy(m) for m in members]
    for index, member in enumerate(members):
        member.name = f"{MEMBER_PREFIX}{index}"  # nested models need distinct names to save as one file
    inputs = keras.Input(shape=tuple(members[0].input_shape[1:]), name="inputs")
    mean = keras.layers.Average(name="mean_probabilities")([m(inputs) for m in members])
    return keras.Model(inputs, mean, name=ENSEMBLE_NAME)


def is_ensemble(model: Any) -> bool:
    return getattr(model, "name", "") == ENSEMBLE_NAME


def members(model: Any) -> list[Any]:
    """The member models of an ``ensemble_model`` (in order); ``[model]`` for any other model."""
    import keras

    if not is_ensemble(model):
        return [model]
    found = [layer for layer in model.layers if isinstance(layer, keras.Model) and layer.name.startswith(MEMBER_PREFIX)]
    return sorted(found, key=lambda m: int(m.name[len(MEMBER_PREFIX):]))
