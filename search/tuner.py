"""Ray Tune: connect, searchers, schedulers, the trainable, the MLflow callback, resume.

``launch(LaunchOptions(...))`` is what ``search launch`` runs. The driver loads the dataset once
and puts it in Ray's object store; each trial assembles its config from the space, fits it
with ``search.train.fit`` and reports every epoch with ``tune.report``. The driver is the only
MLflow writer: ``MLflowCallback`` turns Ray's trial events into runs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray import tune
from ray.tune.result import SHOULD_CHECKPOINT

from search import tracking
from search.errors import ClusterError, Interrupted, SearchError, TrackingError
from search.space import Space, load_space

if TYPE_CHECKING:
    from search.data import Dataset

log = logging.getLogger(__name__)

SEARCHERS = ("random", "tpe", "bayes")
SCHEDULERS = ("fifo", "asha", "hyperband", "pbt")
PBT_KEYS = ("learning_rate", "dropout", "batch_size")
ASHA_GRACE, ASHA_REDUCTION = 2, 3


@dataclass
class LaunchOptions:
    """Everything ``search launch`` takes; the defaults are the CLI's."""

    space: str = "default"
    dataset: str = "digits"
    data_dir: str | None = None
    target: str = "label"
    num_samples: int = 16
    max_epochs: int | None = None
    searcher: str = "tpe"
    scheduler: str | None = None  # None: asha when num_samples > concurrency, else fifo
    metric: str = "val_accuracy"
    mode: str = "max"
    concurrency: int | None = None  # None: as many as the CPUs allow
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    address: str | None = None
    tracking_uri: str | None = None
    experiment: str = "search"
    name: str | None = None
    seed: int = 0
    storage_path: str | None = None
    resume: bool = False
    max_failures: int = 0
    checkpoint_every: int = 0  # 0: when the metric improves (and at PBT perturbations)
    tracking_retry_s: float = 120.0
    quiet: bool = False


@dataclass
class TrialSummary:
    trial_id: str
    run_id: str | None
    name: str
    state: str
    config: dict[str, Any]
    metric: float | None
    best_epoch: int | None
    epochs: int


@dataclass
class SearchResult:
    name: str
    experiment: str
    tracking_uri: str
    parent_run_id: str
    metric: str
    mode: str
    trials: list[TrialSummary] = field(default_factory=list)
    wall_time_s: float = 0.0
    storage_path: str = ""

    @property
    def best(self) -> TrialSummary | None:
        scored = [t for t in self.trials if t.metric is not None]
        if not scored:
            return None
        return (max if self.mode == "max" else min)(scored, key=lambda t: t.metric)

    def top(self, n: int = 5) -> list[TrialSummary]:
        scored = [t for t in self.trials if t.metric is not None]
        return sorted(scored, key=lambda t: t.metric, reverse=self.mode == "max")[:n]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["best"] = asdict(self.best) if self.best else None
        out["ui_command"] = ui_command(self.tracking_uri)
        return out


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on ``uri``."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    return f"search ui --tracking-uri {uri}"


# -- connecting -------------------------------------------------------------------------------
def connect(address: str | None, *, num_cpus: int | None = None, quiet: bool = True) -> None:
    """Join the Ray cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local Ray."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not log.isEnabledFor(logging.INFO):  # Ray's start-up notices (token auth, dashboard) are not results
        logging.getLogger("ray").setLevel(logging.ERROR)
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Checkpoints are kept per improvement; Ray's hint about snapshot frequency is noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Trials inherit the driver's env: keep TF quiet in every worker.
    runtime_env = {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": "3", "ABSL_MIN_LOG_LEVEL": "3", "PYTHONWARNINGS": "ignore"}}
    kwargs: dict[str, Any] = {
        "log_to_driver": log.isEnabledFor(logging.INFO),  # worker output only with -v
        "logging_level": logging.WARNING,
        "runtime_env": runtime_env,
    }
    try:
        if address:
            # Ray's C++ client logs every refused attempt (InvalidAuthToken, ...) straight to fd 2 for
            # 20 s; keep that off the terminal, and give it back only if the connection succeeds.
            with _captured_stderr() as captured:
                ray.init(address=address, **kwargs)
            if captured.text:
                sys.stderr.write(captured.text)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
    except Exception as err:  # noqa: BLE001 (ray raises many types for a refused connection)
        raise ClusterError(_explain_connect_error(address, err)) from None


class _captured_stderr:
    """Redirect file descriptor 2 (C++ logs included) to a temporary file; ``.text`` after."""

    text = ""

    def __enter__(self) -> _captured_stderr:
        sys.stderr.flush()
        self._file = tempfile.TemporaryFile(mode="w+b")
        self._saved = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)
        os.close(self._saved)
        self._file.seek(0)
        self.text = self._file.read().decode(errors="replace")
        self._file.close()
        if exc[0] is not None and self.text:
            log.debug("Ray's output while connecting:\n%s", self.text)


# Ray reports a refused token as a ConnectionError whose cause holds the AuthenticationError.
_AUTH_MARKERS = ("invalidauthtoken", "authenticationerror", "unauthenticated", "authentication token")


def _is_auth_error(err: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = f"{type(current).__name__}: {current}".lower()
        if any(marker in text for marker in _AUTH_MARKERS):
            return True
        current = current.__cause__ or current.__context__
    return False


def _explain_connect_error(address: str | None, err: Exception) -> str:
    text = str(err)
    if _is_auth_error(err):
        mode = os.environ.get("RAY_AUTH_MODE", "")
        has_token = bool(os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                         or Path("~/.ray/auth_token").expanduser().is_file())
        if mode.lower() != "token":
            given = f"RAY_AUTH_MODE is {mode!r}, so no token was sent; " if mode else "no token was sent; "
        else:
            given = "the token given was refused; " if has_token else "no token was found; "
        return (
            f"the Ray cluster at {address} requires token authentication: {given}set RAY_AUTH_MODE=token and "
            "RAY_AUTH_TOKEN (or put the token in ~/.ray/auth_token) to the cluster's token"
        )
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    if address:
        return f"cannot connect to the Ray cluster at {address}: {first}; check --address (or RAY_ADDRESS)"
    return f"cannot start a local Ray: {first}"


# -- searchers and schedulers, chosen by name -------------------------------------------------
def make_searcher(name: str, space: Space, *, metric: str, mode: str, seed: int, num_samples: int, concurrency: int) -> Any:
    """The Ray Tune search algorithm called ``name``."""
    factories: dict[str, Callable[[], Any]] = {
        "random": lambda: _random_searcher(seed, concurrency),
        "tpe": lambda: _tpe_searcher(space, metric, mode, seed),
        "bayes": lambda: _bayes_searcher(space, metric, mode, seed, num_samples),
    }
    if name not in factories:
        raise SearchError(f"unknown searcher {name!r}; choose one of {', '.join(factories)}")
    return factories[name]()


def _random_searcher(seed: int, concurrency: int) -> Any:
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # TuneConfig's max_concurrent_trials does not apply to the variant generator.
    return BasicVariantGenerator(random_state=seed, max_concurrent=concurrency)


def _tpe_searcher(space: Space, metric: str, mode: str, seed: int) -> Any:
    import warnings

    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # multivariate/group TPE
    sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=8)
    return OptunaSearch(space=space.to_optuna(), metric=metric, mode=mode, sampler=sampler)


def _bayes_searcher(space: Space, metric: str, mode: str, seed: int, num_samples: int) -> Any:
    from search.bayes import KerasTunerSearcher

    return KerasTunerSearcher(space, metric=metric, mode=mode, seed=seed, max_trials=max(num_samples, 1))


def make_scheduler(name: str, *, max_t: int, metric: str, mode: str, seed: int, space: Space) -> Any:
    """The Ray Tune trial scheduler called ``name``."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler, PopulationBasedTraining

    if name == "fifo":
        return FIFOScheduler()
    if name == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=max_t, grace_period=min(ASHA_GRACE, max_t),
                             reduction_factor=ASHA_REDUCTION)
    if name == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", max_t=max_t, reduction_factor=3)
    if name == "pbt":
        return PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=pbt_interval(max_t),
            hyperparam_mutations=pbt_mutations(space),
            synch=False,
        )
    raise SearchError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")


def pbt_interval(max_t: int) -> int:
    return max(1, max_t // 4)


def pbt_mutations(space: Space) -> dict[str, Any]:
    """PBT's mutations: learning_rate, dropout and batch_size, within the space's own bounds."""
    mutations: dict[str, Any] = {}
    for key in PBT_KEYS:
        for node in space.sampled:
            if node.keys == (key,) and not node.when:
                if node.kind == "choice":
                    mutations[node.name] = list(node.labels)
                elif node.kind == "float":
                    mutations[node.name] = tune.loguniform(node.low, node.high) if node.log else tune.uniform(node.low, node.high)
                else:
                    mutations[node.name] = tune.randint(int(node.low), int(node.high) + 1)
    if not mutations:
        raise SearchError(
            f"pbt mutates {', '.join(PBT_KEYS)}, and space {space.name} samples none of them; use another --scheduler"
        )
    return mutations


def space_max_epochs(space: Space) -> int:
    """The most epochs any config of ``space`` trains for."""
    from search import config as vocab

    for node in space.nodes:
        if node.keys == ("epochs",):
            if node.kind in ("fixed", "choice"):
                return int(max(node.options))
            return int(node.high)
    return int(vocab.DEFAULTS["epochs"])


# -- the trainable, on the workers ------------------------------------------------------------
_WORKER_CONFIGURED = False


def _configure_worker(cpu_threads: int) -> None:
    """Once per worker process: TF threads to the trial's CPU share, GPU memory growth."""
    global _WORKER_CONFIGURED
    if _WORKER_CONFIGURED:
        return
    from search.train import configure_runtime

    configure_runtime(cpu_threads=cpu_threads, gpu_memory_growth=True)
    _WORKER_CONFIGURED = True


CHECKPOINT_SCORE = "checkpoint_score"  # the metric value of the weights a reported checkpoint holds
CHECKPOINT_SHARE = 0.02  # at most this share of a trial's time goes to optional best-model checkpoints


def asha_milestones(max_t: int) -> frozenset[int]:
    """The epochs at which ASHA (as ``make_scheduler`` sets it up) may stop a trial."""
    grace, rf = min(ASHA_GRACE, max_t), ASHA_REDUCTION
    return frozenset(grace * rf**k for k in range(64) if grace * rf**k < max_t)


class _CheckpointPolicy:
    """When a trial writes a .keras checkpoint, and of which weights.

    With ``every`` k: the model every k epochs (PBT, ``checkpoint_every``). Otherwise the best model
    so far by ``metric``. Saving a .keras file costs about as much as a whole epoch of a small net on
    digits, so an improvement is written at once only while checkpoints have taken less than
    ``share`` of the trial's time (``share`` 0: always, as with HyperBand); otherwise its weights and
    optimizer state are kept in memory (a few ms) and written at the next point where the trial may
    end: its final epoch (all epochs, or early stopping) and the epochs in ``at`` (where the
    scheduler may stop it). So the best checkpoint is always the best epoch's model, and a search
    interrupted in between resumes from an earlier best (as before, only from further back).
    Each checkpoint is reported with ``CHECKPOINT_SCORE``, the metric of the weights it holds, which
    is what Ray ranks checkpoints by.
    """

    def __init__(self, cfg: Mapping[str, Any], *, metric: str, mode: str, every: int, share: float,
                 at: frozenset[int]) -> None:
        self.cfg = cfg
        self.metric = metric
        self.sign = 1 if mode == "max" else -1
        self.every = every
        self.share = share
        self.at = at
        self.best: float | None = None
        self.pending: tuple[int, float, Any] | None = None  # (epoch, value, weights) of a best not written yet
        self.started = time.perf_counter()
        self.spent = 0.0
        # The last write's seconds; before the first, a guess (a small net's .keras file): so the first
        # improvement is written at once only in a trial whose first epoch took seconds.
        self.cost = 0.1

    def __call__(self, row: Mapping[str, float], model: Any) -> tuple[str | None, float]:
        """The folder of the checkpoint to report with ``row`` (None: none), and its score."""
        epoch, value = int(row["epoch"]), row.get(self.metric)
        improved = value is not None and (self.best is None or self.sign * value > self.sign * self.best)
        if improved:
            self.best = value
        if self.every:
            due = epoch % self.every == 0
            return (self._write(model, epoch), float("nan") if value is None else value) if due else (None, 0.0)
        may_end = bool(row.get("final")) or epoch in self.at
        if improved:
            elapsed = time.perf_counter() - self.started
            if may_end or self.share <= 0 or self.spent + self.cost <= self.share * elapsed:
                self.pending = None
                return self._write(model, epoch), value
            self.pending = (epoch, value, _variables(model))
            return None, 0.0
        if may_end and self.pending is not None:
            best_epoch, best_value, weights = self.pending
            self.pending = None
            current = _variables(model)
            _assign(model, weights)
            try:
                return self._write(model, best_epoch), best_value
            finally:
                _assign(model, current)
        return None, 0.0

    def _write(self, model: Any, epoch: int) -> str:
        start = time.perf_counter()
        folder = tempfile.mkdtemp(prefix="search-checkpoint-")
        model.save(Path(folder, "model.keras"))
        Path(folder, "state.json").write_text(json.dumps({"epoch": epoch, "config": self.cfg}))
        self.cost = time.perf_counter() - start
        self.spent += self.cost
        return folder


def _variables(model: Any) -> tuple[list[Any], list[Any]]:
    """Copies of the model's weights and its optimizer's variables."""
    return [v.numpy() for v in model.weights], [v.numpy() for v in model.optimizer.variables]


def _assign(model: Any, values: tuple[list[Any], list[Any]]) -> None:
    for variables, arrays in zip((model.weights, model.optimizer.variables), values, strict=True):
        for variable, array in zip(variables, arrays, strict=True):
            variable.assign(array)


_DONE = object()


def run_trial(
    config: dict[str, Any],
    *,
    space: Space,
    dataset: Dataset,
    max_epochs: int | None,
    cpu_threads: int,
    metric: str,
    mode: str,
    checkpoint_every: int,
    checkpoint_share: float = 0.0,
    checkpoint_at: frozenset[int] = frozenset(),
) -> None:
    """One trial: fit the assembled config, reporting each epoch (with .keras checkpoints, see
    ``_CheckpointPolicy``).

    ``tune.report`` blocks until the driver has taken the result and asked for the next one, a
    round trip through the driver's callbacks; so the fit runs in a thread of its own and hands
    each epoch over, and this thread reports it while the next epoch trains (one epoch ahead at
    most). When Ray stops the trial, the fit stops after its current batch.
    """
    _configure_worker(cpu_threads)
    import queue
    import shutil
    import threading

    cfg = space.assemble(config)
    if max_epochs:
        cfg["epochs"] = max_epochs
    checkpoint = tune.get_checkpoint()
    # Nodes on one host share an IP; the node id tells them apart (and shows where a retried trial went).
    node_id = ray.get_runtime_context().get_node_id()
    policy = _CheckpointPolicy(cfg, metric=metric, mode=mode, every=checkpoint_every, share=checkpoint_share,
                               at=checkpoint_at)
    outbox: queue.Queue = queue.Queue(maxsize=1)
    stopping = threading.Event()

    def train() -> None:
        try:
            import keras

            from search.train import fit

            start_epoch, initial, weights = 0, None, None
            if checkpoint is not None:  # a resumed trial, or a PBT exploit
                with checkpoint.as_directory() as folder:
                    state = json.loads(Path(folder, "state.json").read_text())
                    initial = keras.saving.load_model(Path(folder, "model.keras"))
                    start_epoch = int(state["epoch"])
                if state["config"] != json.loads(json.dumps(cfg)):  # PBT mutated it: new model, trained weights
                    initial, weights = None, initial.get_weights()

            def report(row: dict[str, float], model: keras.Model) -> None:
                if stopping.is_set():
                    model.stop_training = True
                    return
                folder, score = policy(row, model)
                outbox.put(({**row, "node_id": node_id}, folder, score, model))

            fit(cfg, dataset, report=report, seed=None, initial_model=initial, initial_weights=weights,
                initial_epoch=start_epoch)
            outbox.put(_DONE)
        except BaseException as err:  # noqa: BLE001 (handed to the reporting thread, which raises it)
            outbox.put(err)

    fitting = threading.Thread(target=train, name="search-fit", daemon=True)
    fitting.start()
    model = None
    try:
        while True:
            item = outbox.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            row, folder, score, model = item
            try:
                if folder is None:
                    tune.report(row)
                else:
                    tune.report({**row, CHECKPOINT_SCORE: score}, checkpoint=tune.Checkpoint.from_directory(folder))
            finally:
                if folder is not None:
                    shutil.rmtree(folder, ignore_errors=True)
    finally:  # done, failed, or stopped by Ray (SystemExit from tune.report): end the fit thread first
        stopping.set()
        if model is not None:
            model.stop_training = True
        while fitting.is_alive() or not outbox.empty():
            try:
                item = outbox.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, tuple) and item[1] is not None:
                shutil.rmtree(item[1], ignore_errors=True)
        fitting.join()


# -- the MLflow callback, on the driver -------------------------------------------------------
def run_name(index: int, cfg: Mapping[str, Any]) -> str:
    """A readable trial name, e.g. ``trial-007 selu/lecun_normal 3x256 nadam``."""
    from search import config as vocab

    def get(key: str) -> Any:
        return cfg.get(key, vocab.DEFAULTS[key])

    shape = f"{get('n_hidden')}x{get('n_neurons')}" + ("v" if get("width_shape") == "funnel" else "")
    extras = [f"bn-{get('batch_norm')}"] if get("batch_norm") != "none" else []
    return " ".join([f"trial-{index:03d}", f"{get('activation')}/{get('initializer')}", shape, get("optimizer"), *extras])


class MLflowCallback(tune.Callback):
    """Records each Ray trial as a nested MLflow run; the driver is the only writer."""

    def __init__(self, tracker: tracking.Tracker, space: Space, *, metric: str, mode: str, max_epochs: int | None,
                 flush_every_s: float = 2.0) -> None:
        self.tracker = tracker
        self.space = space
        self.metric = metric
        self.mode = mode
        self.max_epochs = max_epochs
        self.flush_every_s = flush_every_s
        self.best: dict[str, tuple[float, int]] = {}  # trial id -> (best metric, its epoch), from MLflow
        self.epochs: dict[str, int] = {}
        self._node_tagged: dict[str, tuple[str, str]] = {}  # trial id -> (node ip, node id) last tagged
        self._last_flush = 0.0

    def _config(self, trial: Any) -> dict[str, Any]:
        cfg = self.space.assemble(trial.config)
        if self.max_epochs:
            cfg["epochs"] = self.max_epochs
        return cfg

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        cfg = self._config(trial)
        # Numbered in the order trials first start (Ray's ids are not dense across searchers).
        index = len(self.tracker.runs) + (trial.trial_id not in self.tracker.runs)
        tags = {tracking.NODE: str(trial.node_ip or "")}
        self.tracker.start_trial(trial.trial_id, run_name(index, cfg), cfg, tags)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.on_trial_start(iteration, trials, trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        run_id = self.tracker.runs.get(trial.trial_id)
        if run_id is None:
            return
        epoch = int(result.get("epoch", result.get("training_iteration", 0)))
        metrics = {k: result[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "epoch_time_s") if k in result}
        self.tracker.log_metrics(run_id, metrics, step=epoch)
        self.epochs[trial.trial_id] = epoch
        node = (str(result.get("node_ip") or ""), str(result.get("node_id") or ""))
        if any(node) and self._node_tagged.get(trial.trial_id) != node:  # first result, or retried elsewhere
            self.tracker.set_tags(run_id, {tracking.NODE: node[0], tracking.NODE_ID: node[1]})
            self._node_tagged[trial.trial_id] = node
        if result.get(SHOULD_CHECKPOINT):
            # Ray continues a trial (after --resume, or on another node) from its latest checkpoint, and
            # registers this one only after the callbacks: write every epoch up to it first, so a driver
            # lost from here on leaves no gap in the run's history (a failed write stops the search
            # before Ray counts the checkpoint).
            self.tracker.flush(run_id)
        if time.monotonic() - self._last_flush > self.flush_every_s:
            self.tracker.flush()
            self._last_flush = time.monotonic()

    def _end(self, trial: Any, status: str, tags: dict[str, Any]) -> None:
        run_id = self.tracker.runs.get(trial.trial_id)
        if run_id is None:
            return
        self.tracker.flush(run_id)
        # From the recorded history, so epochs logged before a resume count too.
        history = self.tracker.history(run_id, self.metric)
        if history:
            pick = max if self.mode == "max" else min
            step, value = pick(history, key=lambda sv: sv[1])
            self.best[trial.trial_id] = (value, step)
            self.epochs[trial.trial_id] = max(s for s, _ in history)
            summary = {f"best_{self.metric}": value, "best_epoch": step, "epochs_run": self.epochs[trial.trial_id]}
            if self.metric != "val_loss":  # breaks ties in the metric (a few hundred validation examples tie often)
                losses = dict(self.tracker.history(run_id, "val_loss"))
                if step in losses:
                    summary["best_epoch_val_loss"] = losses[step]
            self.tracker.final_metrics(run_id, summary)
        self.tracker.end_run(run_id, status, tags)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        ran = self.epochs.get(trial.trial_id, 0)
        if last.get("final"):  # the trial ended itself: all epochs, or early stopping
            self._end(trial, "FINISHED", {tracking.END_STATE: "finished"})
        else:
            self._end(trial, "FINISHED", {tracking.END_STATE: "stopped_early", tracking.STOPPED_BY: "scheduler",
                                          "search.stopped_at_epoch": ran})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._end(trial, "FAILED", {tracking.END_STATE: "failed", tracking.FAIL_REASON: failure_reason(trial)})

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.tracker.flush()


def failure_reason(trial: Any) -> str:
    """The one line that says why a trial failed (the TrialFailed message, when there is one)."""
    text = ""
    try:
        # Ray writes the trace locally first and syncs it to storage later, so read it there.
        if trial.error_file and Path(trial.error_file).is_file():
            text = Path(trial.error_file).read_text()
        else:
            text = str(trial.get_error() or "")
    except Exception:  # noqa: BLE001 (the error file may be on a lost node)
        text = ""
    text = text or "the trial raised an error (see the Ray logs)"
    match = re.search(r"TrialFailed: (.+)", text)
    if match:
        return match.group(1).strip()
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else text[:500]


# -- the whole search -------------------------------------------------------------------------
def default_name(space: str, dataset: str) -> str:
    stem = Path(space).stem if space.endswith((".yaml", ".yml")) else space
    data = Path(dataset).stem if Path(dataset).suffix else dataset
    return f"{stem}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def storage_root(path: str | None) -> str:
    """Where Ray keeps the experiment (trial results, checkpoints, searcher state)."""
    root = path or os.environ.get("SEARCH_STORAGE_PATH") or str(Path.cwd() / "ray_results")
    return root if "://" in root else str(Path(root).expanduser().resolve())


def validate(opts: LaunchOptions) -> None:
    """Reject bad options before anything starts."""
    if opts.num_samples < 1:
        raise SearchError(f"--num-samples must be at least 1, got {opts.num_samples}")
    if opts.concurrency is not None and opts.concurrency < 1:
        raise SearchError(f"--concurrency must be at least 1, got {opts.concurrency}")
    if opts.searcher not in SEARCHERS:
        raise SearchError(f"unknown searcher {opts.searcher!r}; choose one of {', '.join(SEARCHERS)}")
    if opts.scheduler is not None and opts.scheduler not in SCHEDULERS:
        raise SearchError(f"unknown scheduler {opts.scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    if opts.mode not in ("max", "min"):
        raise SearchError(f"--mode must be max or min, got {opts.mode!r}")
    if opts.metric not in ("val_accuracy", "val_loss", "accuracy", "loss"):
        raise SearchError(f"--metric must be one of val_accuracy, val_loss, accuracy, loss; got {opts.metric!r}")
    if opts.cpus_per_trial <= 0:
        raise SearchError(f"--cpus-per-trial must be > 0, got {opts.cpus_per_trial}")
    if opts.gpus_per_trial < 0:
        raise SearchError(f"--gpus-per-trial must be >= 0, got {opts.gpus_per_trial}")
    if opts.max_epochs is not None and opts.max_epochs < 1:
        raise SearchError(f"--max-epochs must be at least 1, got {opts.max_epochs}")
    if opts.resume and not opts.name:
        raise SearchError("--resume needs --name: the name of the search to continue (see `search runs`)")


def resolve_concurrency(opts: LaunchOptions) -> int:
    """How many trials run at once; an error if the cluster cannot run that many."""
    cpus = float(ray.cluster_resources().get("CPU", 0))
    gpus = float(ray.cluster_resources().get("GPU", 0))
    fit = int(cpus // opts.cpus_per_trial) if opts.cpus_per_trial else opts.num_samples
    if opts.gpus_per_trial:
        if gpus < opts.gpus_per_trial:
            raise SearchError(f"--gpus-per-trial {opts.gpus_per_trial:g}, but the cluster has {gpus:g} GPUs; use 0 on a CPU-only cluster")
        fit = min(fit, int(gpus // opts.gpus_per_trial))
    if fit < 1:
        raise SearchError(f"--cpus-per-trial {opts.cpus_per_trial:g} is more than the cluster's {cpus:g} CPUs")
    if opts.concurrency is None:
        return max(1, min(fit, opts.num_samples))
    if opts.concurrency > fit:
        raise SearchError(
            f"--concurrency {opts.concurrency} needs {opts.concurrency * opts.cpus_per_trial:g} CPUs at "
            f"{opts.cpus_per_trial:g} per trial, but the cluster has {cpus:g}; lower --concurrency or --cpus-per-trial"
        )
    return opts.concurrency


def launch(opts: LaunchOptions, *, progress: Callable[[str], None] | None = None) -> SearchResult:
    """Run a search and record it in MLflow; returns its summary."""
    from search.data import load_dataset

    validate(opts)
    started = time.perf_counter()
    space = load_space(opts.space)
    uri = tracking.resolve_tracking_uri(opts.tracking_uri)
    tracking.check_reachable(uri)
    # Loaded before Ray starts, so that a missing dataset is one line with nothing started. (Loading it in
    # a thread beside ray.init gained nothing on 2 cores: start-up there is CPU-bound; docs/benchmarks.md.)
    dataset = load_dataset(opts.dataset, data_dir=opts.data_dir, target=opts.target)
    name = opts.name or default_name(opts.space, opts.dataset)
    root = storage_root(opts.storage_path)
    experiment_dir = Path(root, name)
    if opts.resume and "://" not in root and not tune.Tuner.can_restore(str(experiment_dir)):
        raise SearchError(f"nothing to resume at {experiment_dir}; check --name and --storage-path")

    tracker = tracking.Tracker(uri, opts.experiment, retry_s=opts.tracking_retry_s)
    # Importing mlflow and opening the store (creating a new SQLite store's tables) takes seconds, and so
    # does starting Ray, which mostly waits on the processes it starts: do both at once.
    opening = _InBackground(tracker.experiment_id)
    connect(opts.address, quiet=opts.quiet)
    concurrency = resolve_concurrency(opts)
    scheduler_name = opts.scheduler or ("asha" if opts.num_samples > concurrency else "fifo")
    max_t = opts.max_epochs or space_max_epochs(space)
    opening.result()
    params = {
        "space": opts.space, "dataset": opts.dataset, "data_dir": opts.data_dir or "", "target": opts.target,
        "num_samples": opts.num_samples, "searcher": opts.searcher,
        "scheduler": scheduler_name, "metric": opts.metric, "mode": opts.mode, "concurrency": concurrency,
        "cpus_per_trial": opts.cpus_per_trial, "gpus_per_trial": opts.gpus_per_trial, "max_epochs": max_t,
        "seed": opts.seed,
    }
    tags = {"search.dataset": dataset.name, "search.space": space.name, NOTE_TAG: describe_search(opts, space, dataset, scheduler_name, concurrency)}
    commit = tracking.git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    parent = tracker.start_search(name, params, tags, resume=opts.resume)
    if not opts.resume:
        tracker.log_text(parent, space.source, "space.yaml")

    callback = MLflowCallback(tracker, space, metric=opts.metric, mode=opts.mode, max_epochs=opts.max_epochs)
    live = LiveView(opts.metric, opts.mode, progress) if progress else None
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial, space=space, dataset=dataset, max_epochs=opts.max_epochs, cpu_threads=max(1, int(opts.cpus_per_trial)),
            metric=opts.metric, mode=opts.mode,
            checkpoint_every=opts.checkpoint_every or (pbt_interval(max_t) if scheduler_name == "pbt" else 0),
            # HyperBand may stop or pause a trial at many points: every improvement is written there.
            checkpoint_share=0.0 if scheduler_name == "hyperband" else CHECKPOINT_SHARE,
            checkpoint_at=asha_milestones(max_t) if scheduler_name == "asha" else frozenset(),
        ),
        {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial},
    )
    if opts.resume:
        tuner = tune.Tuner.restore(str(experiment_dir), trainable, resume_unfinished=True, resume_errored=False)
        _refresh_callbacks(tuner, callback, live)
    else:
        searcher = make_searcher(opts.searcher, space, metric=opts.metric, mode=opts.mode, seed=opts.seed,
                                 num_samples=opts.num_samples, concurrency=concurrency)
        scheduler = make_scheduler(scheduler_name, max_t=max_t, metric=opts.metric, mode=opts.mode, seed=opts.seed, space=space)
        tuner = tune.Tuner(
            trainable,
            param_space=space.to_ray() if opts.searcher == "random" else {},
            tune_config=tune.TuneConfig(
                search_alg=searcher, scheduler=scheduler, metric=opts.metric, mode=opts.mode,
                num_samples=opts.num_samples, max_concurrent_trials=concurrency, reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=name,
                storage_path=root,
                callbacks=[callback] + ([live] if live else []),
                failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=1, checkpoint_score_attribute=CHECKPOINT_SCORE, checkpoint_score_order=opts.mode
                ),  # the best checkpoint, and Ray always keeps the latest for resuming
                verbose=0,
                progress_reporter=None,
            ),
        )
    resume_hint = f"`search launch --name {name} --resume`" + (f" --storage-path {opts.storage_path}" if opts.storage_path else "")
    try:
        with _quiet_ray_output(opts.quiet):
            grid = tuner.fit()
    except TrackingError as err:
        # The callback gave up on MLflow: Tune stopped the trials and raised. Its last saved state
        # (saved at each trial checkpoint) is what --resume continues; MLflow is not written again.
        raise TrackingError(
            f"{err}; the search stopped (Ray saved its state): once the tracking server at {uri} is back, "
            f"continue it with {resume_hint}"
        ) from None
    unfinished = interrupted_trials(grid, tracker)
    if unfinished:  # Ctrl-C: Ray saved the experiment; leave the runs for --resume to reopen
        tracker.flush()
        for trial in unfinished:
            if trial.trial_id in tracker.runs:
                tracker.end_run(tracker.runs[trial.trial_id], "KILLED", {tracking.END_STATE: "interrupted"})
        tracker.end_run(parent, "KILLED", {"search.state": "interrupted"})
        raise Interrupted(f"search {name} interrupted with {len(unfinished)} trials unfinished; continue it with {resume_hint}")
    result = summarize(grid, tracker, space, name, opts, uri, root)
    result.wall_time_s = time.perf_counter() - started
    finish_search(tracker, result, grid)
    return result


NOTE_TAG = tracking.NOTE


class _InBackground:
    """Run ``fn`` in a thread now; ``result()`` waits for it and returns or raises what it did."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        import threading

        self._outcome: tuple[bool, Any] = (False, None)
        self._thread = threading.Thread(target=self._run, args=(fn,), name="search-open-tracking", daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._outcome = (True, fn())
        except BaseException as err:  # noqa: BLE001 (raised again by result())
            self._outcome = (False, err)

    def result(self) -> Any:
        self._thread.join()
        ok, value = self._outcome
        if not ok:
            raise value
        return value


def describe_search(opts: LaunchOptions, space: Space, dataset: Dataset, scheduler: str, concurrency: int) -> str:
    """The parent run's description (markdown), shown at the top of the run page.

    ``finish_search`` adds a "Best trial" section, and ``search retrain`` / ``search evaluate``
    add theirs (``search.plots.set_section``).
    """
    about = " ".join(space.description.split()).rstrip(".")
    epochs = opts.max_epochs or space_max_epochs(space)
    return "\n".join([
        f"**Search** over space **{space.name}**" + (f" ({about})" if about else "")
        + f", {len(space.sampled)} sampled dimensions, on **{dataset.describe()}**.",
        "",
        "| setting | value |",
        "|---|---|",
        f"| searcher | `{opts.searcher}` |",
        f"| scheduler | `{scheduler}` |",
        f"| metric | `{opts.metric}` ({opts.mode}) |",
        f"| budget | {opts.num_samples} trials of up to {epochs} epochs, {concurrency} at a time, "
        f"{opts.cpus_per_trial:g} CPU / {opts.gpus_per_trial:g} GPU each |",
        f"| seed | {opts.seed} |",
        "",
    ])


def _refresh_callbacks(tuner: Any, callback: MLflowCallback, live: Any) -> None:
    """On resume, the restored run config holds the old callbacks: swap in fresh ones.

    The tracker must point at this invocation's store and parent run, which the pickled
    callback may not (the driver that wrote it was killed).
    """
    internal = getattr(tuner, "_local_tuner", None)
    run_config = internal.get_run_config() if internal is not None else None
    if run_config is None:
        raise SearchError("this Ray version restores searches differently; resume is not supported here")
    run_config.callbacks = [callback] + ([live] if live else [])
    run_config.verbose = 0


class _quiet_ray_output:
    """Ray Tune prints its own tables and hints on stdout; keep stdout for results."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __enter__(self) -> None:
        self._stdout = sys.stdout
        sys.stdout = sys.stderr if not self.quiet else open(os.devnull, "w")  # noqa: SIM115

    def __exit__(self, *exc: Any) -> None:
        if sys.stdout is not sys.stderr:
            sys.stdout.close()
        sys.stdout = self._stdout


def summarize(grid: Any, tracker: tracking.Tracker, space: Space, name: str, opts: LaunchOptions,
              uri: str, root: str) -> SearchResult:
    """The search's trials, as MLflow recorded them (so trials from before a resume count too)."""
    result = SearchResult(name=name, experiment=opts.experiment, tracking_uri=uri, parent_run_id=tracker.parent_run_id or "",
                          metric=opts.metric, mode=opts.mode, storage_path=str(Path(root, name)))
    runs = {r.data.tags.get(tracking.TRIAL_ID): r for r in tracker.child_runs(role="trial")}
    for trial in grid._experiment_analysis.trials:  # noqa: SLF001 (ResultGrid hides failed trials' ids)
        run = runs.get(trial.trial_id)
        metrics = run.data.metrics if run is not None else {}
        state = run.data.tags.get(tracking.END_STATE, "unknown") if run is not None else "not recorded"
        cfg = space.assemble(trial.config)
        if opts.max_epochs:
            cfg["epochs"] = opts.max_epochs
        result.trials.append(TrialSummary(
            trial_id=trial.trial_id, run_id=run.info.run_id if run is not None else None,
            name=run.info.run_name if run is not None else trial.trial_id, state=state, config=cfg,
            metric=metrics.get(f"best_{opts.metric}"), best_epoch=_int(metrics.get("best_epoch")),
            epochs=_int(metrics.get("epochs_run")) or 0,
        ))
    return result


def interrupted_trials(grid: Any, tracker: tracking.Tracker) -> list[Any]:
    """Trials that did not end: on Ctrl-C Ray marks running trials TERMINATED without telling
    the callbacks, so a trial counts as ended only once its MLflow run has an end state."""
    ended = {r.data.tags.get(tracking.TRIAL_ID) for r in tracker.child_runs(role="trial") if tracking.END_STATE in r.data.tags}
    return [t for t in grid._experiment_analysis.trials if t.trial_id not in ended]  # noqa: SLF001


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def finish_search(tracker: tracking.Tracker, result: SearchResult, grid: Any) -> None:
    """Best metrics, best config and the best model on the parent run; close it."""
    parent = result.parent_run_id
    best = result.best
    n_failed = sum(t.state == "failed" for t in result.trials)
    tracker.final_metrics(parent, {"trials": len(result.trials), "trials_failed": n_failed, "wall_time_s": result.wall_time_s})
    if best is not None:
        tracker.final_metrics(parent, {f"best_{result.metric}": best.metric})
        tracker.set_tags(parent, {"search.best_run_id": best.run_id or "", "search.best_trial_id": best.trial_id})
        tracker.log_params(parent, {f"best.{k}": v for k, v in best.config.items()})
        tracker.log_text(parent, json.dumps(best.config, indent=2, default=str), "best_config.json")
        checkpoint = _best_checkpoint(grid, best.trial_id)
        if checkpoint is not None and best.run_id:
            with checkpoint.as_directory() as folder:
                tracker.log_artifact(best.run_id, Path(folder, "model.keras"), "model")
            tracker.set_tags(best.run_id, {"search.best": "true"})
        elif best.run_id:
            log.warning("no checkpoint of the best trial %s was found; its model is not logged", best.trial_id)
    _log_report(tracker, result)
    tracker.end_run(parent, "FINISHED")


def _log_report(tracker: tracking.Tracker, result: SearchResult) -> None:
    """The search's plots (parent-run artifacts under ``plots/``) and the "Best trial" section of its
    description, from the trials' configs and best metrics, in the order the trials started."""
    from search import config as vocab
    from search import plots

    parent = result.parent_run_id
    try:
        started = {r.info.run_id: r.info.start_time or 0 for r in tracker.child_runs(role="trial")}
        ordered = sorted(result.trials, key=lambda t: (started.get(t.run_id or "", math.inf), t.name))
        trials = [{"name": t.name, "run_id": t.run_id, "config": t.config, "value": t.metric, "state": t.state,
                   "best_epoch": t.best_epoch} for t in ordered]
        with tempfile.TemporaryDirectory() as folder:
            files = plots.search_plots(trials, folder, metric=result.metric, mode=result.mode, defaults=vocab.DEFAULTS)
            for path in files:
                tracker.log_artifact(parent, path, "plots")
        body = plots.best_section(experiment_id=tracker.experiment_id(), parent_run_id=parent, trials=trials,
                                  metric=result.metric, mode=result.mode, wall_time_s=result.wall_time_s,
                                  plots=[f"plots/{p.name}" for p in files], defaults=vocab.DEFAULTS)
        plots.update_note(lambda: tracker.mlflow.get_run(parent).data.tags.get(tracking.NOTE, ""),
                          lambda note: tracker.set_tags(parent, {tracking.NOTE: note}), "Best trial", body)
    except TrackingError:
        raise
    except Exception as err:  # noqa: BLE001 (a plot must not cost the search its recorded result)
        log.warning("the search's plots and summary were not written: %s", err)


def _best_checkpoint(grid: Any, trial_id: str) -> Any:
    """The best checkpoint Ray kept for ``trial_id`` (scored by the search metric)."""
    for trial in grid._experiment_analysis.trials:  # noqa: SLF001
        if trial.trial_id == trial_id:
            manager = trial.run_metadata.checkpoint_manager
            results = manager.best_checkpoint_results or ([manager.latest_checkpoint_result] if manager.latest_checkpoint_result else [])
            return results[-1].checkpoint if results else None
    return None


class LiveView(tune.Callback):
    """A compact live line: trials running, finished and failed, and the best so far."""

    def __init__(self, metric: str, mode: str, emit: Callable[[str], None]) -> None:
        self.metric = metric
        self.mode = mode
        self.emit = emit
        self.best: float | None = None
        self.best_name = ""
        self.done = 0
        self.failed = 0
        self._last = 0.0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "emit": None}

    def _line(self, trials: list) -> str:
        running = sum(t.status == "RUNNING" for t in trials)
        pending = sum(t.status == "PENDING" for t in trials)
        best = f"best {self.metric} {self.best:.4f} ({self.best_name})" if self.best is not None else "no result yet"
        return f"trials: {running} running, {pending} pending, {self.done} done, {self.failed} failed | {best}"

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            if self.best is None or (value > self.best if self.mode == "max" else value < self.best):
                self.best = float(value)
                self.best_name = trial.trial_id
        if self.emit and time.monotonic() - self._last > 0.5:
            self.emit(self._line(trials))
            self._last = time.monotonic()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.done += 1
        if self.emit:
            self.emit(self._line(trials))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.failed += 1
        if self.emit:
            self.emit(self._line(trials))
