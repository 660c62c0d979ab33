"""Models in MLflow: log a Keras model with MLflow's Keras flavor, register it, and load one back."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from search import scratch
from search.errors import SearchError
from search.tracking import tags
from search.tracking.writer import Tracker

PIP_REQUIREMENTS = ["tensorflow>=2.21,<2.22", "keras>=3.15,<4"]


def log_keras_model(tracker: Tracker, run_id: str, model: Any, example: Any,
                    metadata: Mapping[str, Any] | None = None) -> str:
    """Log ``model``, without its optimizer and loss (``search.model.inference_copy``), with MLflow's Keras
    flavor (signature and input example) on ``run_id``; tag the run with its model URI (``register_model``
    registers it). ``metadata`` goes into its MLmodel file (``mlflow.models.get_model_info(uri).metadata``).

    ``mlflow.keras.log_model`` with an input example fails in MLflow 3.17 (it writes the example
    before creating the model folder), so the flavor is saved with ``save_model`` into a folder
    made first, then logged as the run's ``model`` artifact. Returns the model URI.
    """
    import mlflow
    import numpy as np
    from mlflow.models import infer_signature

    from search.model import inference_copy

    model = inference_copy(model)  # loads without this project installed: no 1cycle, no custom loss to find
    signature = infer_signature(example, np.asarray(model.predict(example, verbose=0)))
    with scratch.folder("model-") as folder:
        path = os.path.join(folder, tags.MODEL_FOLDER)
        os.makedirs(path)
        mlflow.keras.save_model(model, path, signature=signature, input_example=example, pip_requirements=PIP_REQUIREMENTS,
                                metadata=dict(metadata) if metadata else None)
        tracker._retry(lambda: tracker.mlflow.log_artifacts(run_id, path, tags.MODEL_FOLDER), "the model")
    model_uri = f"runs:/{run_id}/{tags.MODEL_FOLDER}"
    tracker.set_tags(run_id, {tags.MODEL_URI: model_uri})
    return model_uri


def register_model(tracker: Tracker, run_id: str, name: str) -> str:
    """Register the model logged on ``run_id`` as ``name`` in the Model Registry; tag the run with it."""
    import mlflow

    mlflow.set_tracking_uri(tracker.uri)
    version = mlflow.register_model(f"runs:/{run_id}/{tags.MODEL_FOLDER}", name)
    registered = f"models:/{name}/{version.version}"
    tracker.set_tags(run_id, {tags.REGISTERED_MODEL: registered})
    return registered


def load_keras_model(model_uri: str, tracking_uri: str) -> Any:
    """A Keras model from an MLflow model URI, or from a logged ``.keras`` file."""
    import mlflow

    import search.model  # noqa: F401 (registers the custom layers and schedules with Keras)

    mlflow.set_tracking_uri(tracking_uri)
    local_path = model_uri.removeprefix("file://") if model_uri.startswith("file://") or "://" not in model_uri else None
    if local_path is not None and ":" not in local_path.split("/")[0] and not Path(local_path).expanduser().exists():
        raise SearchError(f"no model at {model_uri}: no such file or folder; give runs:/RUN_ID/model, "
                          f"models:/NAME/VERSION, or the path of an MLflow model folder or a .keras file")
    # Downloaded into a folder removed after loading: the model is in memory, the copy would leak.
    try:
        with scratch.folder("model-") as folder:
            if model_uri.endswith(".keras"):
                import keras

                local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, tracking_uri=tracking_uri,
                                                            dst_path=folder)
                return keras.saving.load_model(local)
            return mlflow.keras.load_model(model_uri, dst_path=folder)
    except SearchError:
        raise
    except Exception as err:  # noqa: BLE001 (mlflow and keras raise many types for a bad model)
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise SearchError(f"cannot load a Keras model from {model_uri}: {first}") from None


def check_model_name(uri: str, name: str) -> None:
    """Refuse a Model Registry name the store would refuse, before any work is done."""
    from mlflow.exceptions import MlflowException

    from search.tracking.store import client

    try:
        try:  # MLflow's own rule, without a store (a private function: guarded, the store asks the same)
            from mlflow.utils.validation import _validate_model_name
        except ImportError:
            _validate_model_name = None
        if _validate_model_name is not None:
            _validate_model_name(name)
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
            return  # no store yet (`search pipeline` before its search): asking would create an empty one
        client(uri).get_registered_model(name)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            first = (str(err).strip().splitlines() or [err.error_code])[0]
            raise SearchError(f"--register {name!r}: {first}") from None


def transfer_source(uri: str, ref: str) -> tuple[str, dict[str, list[Any]]]:
    """The model ``ref`` names (a run id of any role, or a model URI) and its hidden layers' weights."""
    from search.tracking.record import model_source
    from search.transfer import source_layers

    source = model_source(uri, model_uri=ref) if ":/" in ref else model_source(uri, run_id=ref)
    return source.model_uri, source_layers(load_keras_model(source.model_uri, uri))
