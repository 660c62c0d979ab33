"""Every tag, param and metric name the project writes to MLflow, each with what it means.

The record of a search in MLflow is the project's lasting API: later commands (``search best``,
``retrain``, ``evaluate``) and other machines read it back. So each name is spelled here once,
as mlflow's own ``mlflow.utils.mlflow_tags`` does, and nowhere else. Plain constants: this
module imports nothing.
"""

from __future__ import annotations

# -- MLflow's own tags ------------------------------------------------------------------------
PARENT = "mlflow.parentRunId"  # the parent run of a nested run (trial, retrain, evaluate)
NOTE = "mlflow.note.content"  # the run's description (markdown) shown at the top of its page
RUN_NAME = "mlflow.runName"  # the run's display name
GIT_COMMIT = "mlflow.source.git.commit"  # the commit of the checkout a search was launched from

# -- every run --------------------------------------------------------------------------------
ROLE = "search.role"  # what the run is: one of ROLES
ROLE_SEARCH = "search"  # a search's parent run
ROLE_TRIAL = "trial"  # one trial of a search, nested under its parent
ROLE_RETRAIN = "retrain"  # one seed of a retrained config, nested under the search
ROLE_EVALUATE = "evaluate"  # an MC-dropout evaluation, nested under the search when it has one
ROLES = (ROLE_SEARCH, ROLE_TRIAL, ROLE_RETRAIN, ROLE_EVALUATE)

# -- the parent run of a search ---------------------------------------------------------------
SEARCH_NAME = "search.name"  # the search's name (--name); what --resume and --name look up
DATASET = "search.dataset"  # the dataset's display name (its file stem for a path)
SPACE = "search.space"  # the space's name
SEARCH_STATE = "search.state"  # "interrupted" while a search waits for --resume
BEST_RUN_ID = "search.best_run_id"  # the child run of the best trial
BEST_TRIAL_ID = "search.best_trial_id"  # the Ray trial id of the best trial
BEST_RETRAIN_RUN_ID = "search.best_retrain_run_id"  # the retrain run whose model is the search's model
MODEL_URI = "search.model_uri"  # on the parent: the retrained model; on a retrain run: its own model
EVALUATE_RUN_ID = "search.evaluate_run_id"  # the newest evaluate run of the search's model

# -- a trial run ------------------------------------------------------------------------------
TRIAL_ID = "search.trial_id"  # Ray Tune's trial id: one child run per trial id
NODE = "search.node"  # the IP of the node the trial last ran on
NODE_ID = "search.node_id"  # the Ray node id: nodes that share a host share an IP
END_STATE = "search.end_state"  # how the trial ended: one of END_STATES
END_FINISHED = "finished"  # ran all its epochs, or stopped itself early (early stopping)
END_FAILED = "failed"  # raised, or diverged; FAIL_REASON says why
END_STOPPED_EARLY = "stopped_early"  # stopped by the scheduler (ASHA, HyperBand); STOPPED_BY says which
END_INTERRUPTED = "interrupted"  # the search stopped while the trial ran; --resume continues it
END_STATES = (END_FINISHED, END_FAILED, END_STOPPED_EARLY, END_INTERRUPTED)
FAIL_REASON = "search.fail_reason"  # one line: why a run failed
STOPPED_BY = "search.stopped_by"  # who stopped a trial early ("scheduler")
STOPPED_AT_EPOCH = "search.stopped_at_epoch"  # the last epoch a stopped trial ran
BEST = "search.best"  # "true" on the best trial's run, which holds model/model.keras
TRANSFER_FROM = "search.transfer_from"  # the model URI whose hidden layers the trial (or retrain) reused
WARM_START_RUNS = "search.warm_start_runs"  # on the parent: the parent runs (comma-separated) whose trials seeded it

# -- a retrain run ----------------------------------------------------------------------------
RETRAIN_OF = "search.retrain_of"  # the trial run whose config was retrained
SEED = "search.seed"  # the retrain seed
RANK = "search.rank"  # "best" or "runner_up": which of the search's trials was retrained
BEST_SEED = "search.best_seed"  # "true" on the seed run picked on the calibration slice (the search's model)
RANK_ENSEMBLE = "ensemble"  # RANK of the run that holds the deep ensemble of the best config's seeds
ENSEMBLE_OF = "search.ensemble_of"  # on the ensemble run: its members' seed runs, comma-separated
HELD_OUT = "calibration_fraction"  # param of each retrain run: the share of train+valid held out for calibration
ENSEMBLE_RUN_ID = "search.ensemble_run_id"  # on the parent: the run holding the deep ensemble
REGISTERED_MODEL = "search.registered_model"  # models:/NAME/VERSION, when --register was given

# -- metrics ----------------------------------------------------------------------------------
# Per epoch (step = epoch): each task's metrics, lr and epoch_time_s (search.tasks.recorded_epoch_keys).
BEST_EPOCH = "best_epoch"  # on a trial: the epoch of its best metric
EPOCHS_RUN = "epochs_run"  # on a trial: epochs it trained
BEST_EPOCH_VAL_LOSS = "best_epoch_val_loss"  # on a trial: val_loss at BEST_EPOCH, the tie-breaker
TRIALS = "trials"  # on the parent: trials in the search
TRIALS_FAILED = "trials_failed"  # on the parent: trials that failed
WALL_TIME_S = "wall_time_s"  # on the parent: the search's wall time
WARM_START_TRIALS = "warm_start_trials"  # on the parent: earlier trials handed to the searcher (--warm-start)
WARM_START_SKIPPED = "warm_start_skipped"  # on the parent: earlier trials left out (outside the space, no result)
TEST_PREFIX = "test_"  # a retrain run's test scores: test_loss, test_accuracy; test_rmse, test_mae, test_r2
HELD_OUT_PREFIX = "calibration_"  # the same scores of a retrain seed on its calibration slice, which picks the best seed
TEST_ACCURACY = "test_accuracy"  # on a retrain run
TEST_LOSS = "test_loss"  # on a retrain run

# Evaluate's predictors: the prefix of an evaluate run's metrics (``mc_ece``, ``ensemble_nll``) -> its name in words.
PREDICTORS = {
    "deterministic": "deterministic",
    "mc": "MC dropout",
    "ensemble": "deep ensemble",
    "ensemble_mc": "deep ensemble + MC dropout",
    "temperature": "temperature-scaled",
    "mc_temperature": "MC dropout, temperature-scaled",
    "ensemble_temperature": "deep ensemble, temperature-scaled",
    "ensemble_mc_temperature": "deep ensemble + MC dropout, temperature-scaled",
}
# A predictor -> its temperature-scaled twin (its temperature: the evaluate run's param of that name).
SCALED = {"deterministic": "temperature", "mc": "mc_temperature", "ensemble": "ensemble_temperature",
          "ensemble_mc": "ensemble_mc_temperature"}


def best_metric(metric: str) -> str:
    """The summary metric of ``metric``: a trial's best epoch value, and the parent's best trial's."""
    return f"best_{metric}"


# -- params of the parent run (the search's settings: search.tune.summary.search_params) --
BEST_PARAM_PREFIX = "best."  # the parent's params best.KEY hold the best trial's config

# -- artifacts --------------------------------------------------------------------------------
SPACE_ARTIFACT = "space.yaml"  # on the parent: the space's YAML source
BEST_CONFIG_ARTIFACT = "best_config.json"  # on the parent: the best trial's config
PLOTS_FOLDER = "plots"  # on the parent: the search's plots
MODEL_FOLDER = "model"  # on the best trial (model.keras) and on the logged retrain run (the Keras flavor)
