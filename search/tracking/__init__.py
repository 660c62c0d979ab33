"""MLflow: the only package that imports mlflow (inside its functions, so importing it is cheap).

- ``tags``: every tag, param and metric name the project writes, each with its meaning;
- ``store``: the tracking URI (always absolute), reachability, the client, retries;
- ``writer``: ``Tracker``, the driver's single writer (parent run, child runs, metrics);
- ``record``: ``SearchRecord``, the read model later commands use, and the one "best" rule;
- ``query``: the reads it asks, by backend: ``sqlite_reader`` (``sqlite3`` on a SQLite store),
  ``rest_reader`` (a server's REST API), and ``MlflowClient`` for anything they cannot answer;
- ``description``: the parent run's markdown description, section by section;
- ``models``: Keras models logged with MLflow's flavor, registered, and loaded back.

The names below are the package's API; the tag constants are also here, so that
``tracking.ROLE`` reads as ``mlflow_tags.MLFLOW_PARENT_RUN_ID`` does in mlflow.
"""

from search.tracking.models import check_model_name, load_keras_model, log_keras_model, register_model, transfer_source
from search.tracking.ranking import rank_key
from search.tracking.record import (
    ModelSource,
    SearchRecord,
    artifact_paths,
    config_of,
    run_id_of,
    get_run,
    list_searches,
    metric_history,
    model_source,
)
from search.tracking.store import (
    check_reachable,
    client,
    experiment_id,
    git_commit,
    resolve_tracking_uri,
    retrying,
)
from search.tracking.tags import (
    END_STATE,
    FAIL_REASON,
    NODE,
    NODE_ID,
    NOTE,
    PARENT,
    ROLE,
    RUN_NAME,
    SEARCH_NAME,
    STOPPED_BY,
    TRIAL_ID,
)
from search.tracking.writer import Tracker

__all__ = [
    "END_STATE", "FAIL_REASON", "NODE", "NODE_ID", "NOTE", "PARENT", "ROLE", "RUN_NAME", "SEARCH_NAME", "STOPPED_BY",
    "TRIAL_ID", "ModelSource", "SearchRecord", "model_source", "Tracker", "artifact_paths", "check_reachable", "client", "config_of", "experiment_id",
    "check_model_name", "get_run", "git_commit", "list_searches", "load_keras_model", "log_keras_model", "metric_history", "register_model", "rank_key", "run_id_of", "transfer_source",
    "resolve_tracking_uri", "retrying",
]
