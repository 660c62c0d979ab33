"""A Ray Tune ``Searcher`` that drives KerasTuner's Bayesian optimization oracle.

KerasTuner keeps the space (``HyperParameters``), the search algorithm (``Oracle``) and the
loop (``Tuner``) apart, and its oracle can be driven on its own through ``create_trial``,
``update_trial`` and ``end_trial``. ``KerasTunerSearcher`` puts Ray Tune in the Tuner's place:

* ``suggest(trial_id)`` asks the oracle for a trial, with the Ray trial id as KerasTuner's
  ``tuner_id`` (the oracle keeps one ongoing trial per tuner id, so every Ray trial gets its
  own), and returns the trial's *active* values keyed by space node name. ``Space.assemble``
  turns them into a trial config.
* ``on_trial_complete`` reports the final metric to the oracle and ends the trial; an error,
  or a missing or non-finite metric, ends it as ``FAILED`` so that the Gaussian process
  ignores it.
* ``save``/``restore`` (what Ray calls through ``save_to_dir``/``restore_from_dir``, and so what
  ``Tuner.restore`` uses) write the whole oracle state, trials included, into one pickle.
  The oracle also writes JSON files into a private temporary project directory, because
  KerasTuner insists on one, but nothing is ever read back from there.

Usage::

    searcher = KerasTunerSearcher(load_space("default"), metric="val_accuracy", mode="max", seed=0)
    tune.Tuner(trainable, tune_config=tune.TuneConfig(search_alg=searcher, num_samples=50))

Ray passes ``TuneConfig(metric=..., mode=...)`` to a searcher through
``set_search_properties`` only when ``param_space`` is non-empty; with an empty ``param_space``
give ``metric`` and ``mode`` to the searcher itself.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import threading
import weakref
from collections.abc import Mapping
from typing import Any

import keras_tuner
import numpy as np
from keras_tuner.src.engine import trial as kt_trial_module
from ray.tune.search import Searcher
from ray.tune.search.variant_generator import _has_unresolved_values

from search import scratch
from search.space import Space
from search.tune.kt_oracle import NO_FAILURE_LIMIT, Oracle, TrialStatus, quiet, release

logger = logging.getLogger(__name__)

STATE_VERSION = 1


class KerasTunerSearcher(Searcher):
    """Ray Tune searcher backed by ``keras_tuner.oracles.BayesianOptimizationOracle``.

    Args:
        space: the search space; suggestions map its dimension names to values (labels for choices).
        metric: the result key to optimize; may instead come from ``tune.TuneConfig`` (see the
            module docstring for when Ray passes it on).
        mode: ``"min"`` or ``"max"``.
        seed: the same seed gives the same suggestions for the same results. KerasTuner treats
            seed 0 as "no seed", so the oracle gets ``seed + 1``.
        max_trials: the oracle stops (``suggest`` returns ``Searcher.FINISHED``) after this many
            trials; Ray's ``num_samples`` normally ends the search first.
        num_initial_points: random trials before the Gaussian process takes over; KerasTuner's
            default is three times the number of sampled dimensions.
        alpha: noise added to the kernel diagonal.
        beta: exploration weight of the upper-confidence-bound acquisition.
        history: ``(values, score)`` of trials evaluated before (``--warm-start``); the oracle holds
            them as completed trials from the start. They count towards ``max_trials``.
    """

    def __init__(
        self,
        space: Space,
        *,
        metric: str | None = None,
        mode: str | None = None,
        seed: int | None = None,
        max_trials: int = 1000,
        num_initial_points: int | None = None,
        alpha: float = 1e-4,
        beta: float = 2.6,
        history: list[tuple[dict[str, Any], float]] | None = None,
    ) -> None:
        _check_objective(metric, mode)
        if seed is not None and not (isinstance(seed, int) and 0 <= seed < 2**32 - 1):
            raise ValueError(f"seed must be an int with 0 <= seed < 2**32 - 1, but got {seed!r}")
        if not (isinstance(max_trials, int) and max_trials >= 1):
            raise ValueError(f"max_trials >= 1 must hold, but got {max_trials!r}")
        if num_initial_points is not None and not (isinstance(num_initial_points, int) and num_initial_points >= 1):
            raise ValueError(f"num_initial_points >= 1 must hold (or None), but got {num_initial_points!r}")
        if not alpha > 0:
            raise ValueError(f"alpha > 0 must hold, but got {alpha!r}")
        if not beta >= 0:
            raise ValueError(f"beta >= 0 must hold, but got {beta!r}")
        super().__init__(metric=metric, mode=mode)
        self._space = space
        self._settings: dict[str, Any] = {
            "seed": seed,
            "max_trials": max_trials,
            "num_initial_points": num_initial_points,
            "alpha": float(alpha),
            "beta": float(beta),
            "history": [(dict(values), float(score)) for values, score in history or ()],
        }
        self._init_runtime()

    def _init_runtime(self) -> None:
        self._lock = threading.RLock()
        self._oracle: Oracle | None = None
        self._finalizer: weakref.finalize | None = None
        self._trial_ids: dict[str, str] = {}  # Ray trial id -> KerasTuner trial id

    # -- reading -------------------------------------------------------------------------
    @property
    def space(self) -> Space:
        return self._space

    @property
    def oracle(self) -> keras_tuner.oracles.BayesianOptimizationOracle | None:
        """The oracle, once metric and mode are known and the first trial was suggested."""
        return self._oracle

    @property
    def trial_ids(self) -> dict[str, str]:
        """Ray trial id -> KerasTuner trial id, for every suggestion made."""
        return dict(self._trial_ids)

    def completed(self) -> list[tuple[str, dict[str, Any], float]]:
        """``(ray trial id, values, score)`` for each trial the oracle holds as completed."""
        if self._oracle is None:
            return []
        by_kt = {kt: ray for ray, kt in self._trial_ids.items()}
        return [
            (by_kt.get(t.trial_id, ""), dict(t.hyperparameters.values), float(t.score))
            for t in self._oracle.trials.values()
            if t.status == TrialStatus.COMPLETED
        ]

    # -- Ray's Searcher API --------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        """Take ``metric``/``mode`` from ``tune.TuneConfig``.

        The space is the searcher's own: a ``param_space`` with search domains in it is
        refused (Ray then raises its own error); constants in it are merged into every config
        by Ray.
        """
        if config and _has_unresolved_values(config):
            logger.warning("KerasTunerSearcher samples its own space; param_space must not hold search domains")
            return False
        metric = metric or self._metric
        mode = mode or self._mode
        _check_objective(metric, mode)
        with self._lock:
            if self._oracle is not None and (metric, mode) != (self._metric, self._mode):
                raise ValueError(
                    f"the search already optimizes {self._metric} ({self._mode}); "
                    f"it cannot switch to {metric} ({mode})"
                )
            self._metric, self._mode = metric, mode
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The active node values for a new trial, ``Searcher.FINISHED`` when the oracle stops."""
        with self._lock:
            oracle = self._ensure_oracle()
            with quiet():
                trial = oracle.create_trial(tuner_id=trial_id)
            if trial.status == TrialStatus.STOPPED:
                logger.info("KerasTuner oracle stopped (max_trials reached or space exhausted)")
                return Searcher.FINISHED
            if trial.status != TrialStatus.RUNNING:  # IDLE: the oracle waits on something
                logger.debug("KerasTuner oracle is %s; no suggestion for %s yet", trial.status, trial_id)
                return None
            values = self._active_values(trial)
            self._trial_ids[trial_id] = trial.trial_id
            logger.debug("trial %s -> KerasTuner trial %s: %s", trial_id, trial.trial_id, values)
            return dict(values)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        """Intermediate results are not used: the final result is what the trial scores."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        """Report the final metric and end the KerasTuner trial; failures end it as ``FAILED``."""
        with self._lock:
            kt_id = self._trial_ids.get(trial_id)
            if self._oracle is None or kt_id is None or kt_id not in self._oracle.trials:
                logger.debug("on_trial_complete for unknown trial %s; ignored", trial_id)
                return
            oracle = self._oracle
            trial = oracle.trials[kt_id]
            if trial.status == TrialStatus.COMPLETED:
                logger.debug("trial %s was already completed; ignored", trial_id)
                return
            value = _finite((result or {}).get(self._metric)) if not error else None
            try:
                with quiet():
                    if value is None:
                        reason = "the trial raised an error" if error else f"no finite {self._metric!r} in its result"
                        trial.status = TrialStatus.FAILED
                        trial.message = reason
                        logger.info("trial %s failed (%s); the Gaussian process ignores it", trial_id, reason)
                    else:
                        step = (result or {}).get("training_iteration", 0)
                        oracle.update_trial(kt_id, {self._metric: value}, step=int(step) if _finite(step) is not None else 0)
                        trial.status = TrialStatus.COMPLETED
                    oracle.end_trial(trial)
            except Exception:  # noqa: BLE001 - never crash the search over one trial
                logger.exception("could not record trial %s in the KerasTuner oracle; marking it failed", trial_id)
                trial.status = TrialStatus.FAILED
                for tuner_id, ongoing in list(oracle.ongoing_trials.items()):
                    if ongoing.trial_id == kt_id:
                        oracle.ongoing_trials.pop(tuner_id)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Ray's ``ConcurrencyLimiter`` does the limiting; the oracle handles concurrent trials."""
        return False

    # -- state ---------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Everything needed to go on searching, as plain data (the oracle's own JSON state)."""
        with self._lock:
            oracle_state = None
            if self._oracle is not None:
                oracle = self._oracle
                oracle_state = {
                    "oracle": _plain(oracle.get_state()),
                    "trials": [_plain(t.get_state()) for t in oracle.trials.values()],
                    "tuner_ids": sorted(oracle.tuner_ids),
                    "random_state": oracle._random_state.get_state(),
                }
            return {
                "version": STATE_VERSION,
                "space": self._space,
                "metric": self._metric,
                "mode": self._mode,
                "settings": dict(self._settings),
                "trial_ids": dict(self._trial_ids),
                "oracle": oracle_state,
            }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Replace this searcher's state with ``state`` from ``get_state``."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unknown KerasTunerSearcher state version {state.get('version')!r}")
        with self._lock:
            if self._space.signature() != state["space"].signature():
                logger.warning("restoring a search over space %r into a searcher built for %r; the saved space wins",
                               state["space"].name, self._space.name)
            self._space = state["space"]
            self._metric, self._mode = state["metric"], state["mode"]
            self._settings = dict(state["settings"])
            self._release_oracle()
            self._trial_ids = dict(state["trial_ids"])
            saved = state["oracle"]
            if saved is None:
                return
            oracle = self._ensure_oracle()
            for trial_state in saved["trials"]:
                trial = kt_trial_module.Trial.from_state(trial_state)
                oracle.trials[trial.trial_id] = trial
            oracle.set_state(saved["oracle"])  # maps ongoing trials to the trials just loaded
            oracle.tuner_ids = set(saved["tuner_ids"])
            oracle._random_state.set_state(saved["random_state"])
            oracle.verbose = 0

    def save(self, checkpoint_path: str) -> None:
        """Write the searcher's state to ``checkpoint_path`` (Ray calls this via ``save_to_dir``)."""
        state = self.get_state()
        tmp = f"{checkpoint_path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            pickle.dump(state, f)
        os.replace(tmp, checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        """Load state written by ``save`` (Ray calls this via ``restore_from_dir`` on ``Tuner.restore``)."""
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.set_state(state)
        logger.info("restored KerasTunerSearcher: %d trials, %d completed, %d ongoing",
                    len(self._oracle.trials) if self._oracle else 0, len(self.completed()),
                    len(self._oracle.ongoing_trials) if self._oracle else 0)

    def __getstate__(self) -> dict[str, Any]:
        # Ray pickles the searcher into tuner.pkl; pickle the plain state, never the live oracle
        # (whose project directory and locks belong to this process).
        return self.get_state()

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._metric = self._mode = None
        self._space = state["space"]
        self._settings = dict(state["settings"])
        self._init_runtime()
        self.set_state(state)

    # -- internals -----------------------------------------------------------------------
    def _ensure_oracle(self) -> Oracle:
        if self._oracle is None:
            if not self._metric or not self._mode:
                raise ValueError(
                    "KerasTunerSearcher needs a metric and a mode before it can suggest: pass "
                    "metric= and mode= to it, or to tune.TuneConfig with a non-empty param_space "
                    "(Ray only calls set_search_properties when param_space is non-empty)"
                )
            self._oracle = self._build_oracle()
        return self._oracle

    def _build_oracle(self) -> Oracle:
        s = self._settings
        with quiet():
            oracle = Oracle(
                objective=keras_tuner.Objective(self._metric, self._mode),
                max_trials=s["max_trials"],
                num_initial_points=s["num_initial_points"],
                alpha=s["alpha"],
                beta=s["beta"],
                seed=None if s["seed"] is None else s["seed"] + 1,
                hyperparameters=self._space.to_keras_tuner(),
                max_retries_per_trial=0,
                max_consecutive_failed_trials=NO_FAILURE_LIMIT,
            )
        oracle.verbose = 0  # the oracle's Display prints a table per trial otherwise
        project_dir = scratch.make("kt-searcher-")
        oracle._set_project_dir(project_dir, "oracle")  # written to, never read back
        self._finalizer = weakref.finalize(self, release, project_dir, oracle)
        for index, (values, score) in enumerate(s.get("history", ())):
            hps = oracle.hyperparameters.copy()
            hps.values.update(values)
            trial = kt_trial_module.Trial(hps, trial_id=f"warm-{index:04d}", status=TrialStatus.COMPLETED)
            trial.score, trial.best_step = score, 0
            oracle.trials[trial.trial_id] = trial
            oracle._id_to_hash[trial.trial_id] = oracle._compute_values_hash(hps.values)
            oracle._record_values(trial)  # so a random step does not draw it again
        return oracle

    def _release_oracle(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._finalizer = None
        self._oracle = None

    def _active_values(self, trial: kt_trial_module.Trial) -> dict[str, Any]:
        """The trial's active values, coerced into the node's bounds and Python types.

        KerasTuner's Gaussian-process step can return ``max_value + 1`` for an int at the upper
        bound and a float a rounding error past it; the corrected value is written back into the
        trial, so that the oracle learns from what actually ran.
        """
        hps = trial.hyperparameters
        out: dict[str, Any] = {}
        for hp in hps.space:
            if hp.name not in hps.values or not hps.is_active(hp):
                continue
            value = self._space.coerce(hp.name, hps.values[hp.name])
            hps.values[hp.name] = value
            out[hp.name] = value
        return out


def _finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is missing, not a number, NaN or infinite."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _plain(state: Any) -> Any:
    """A deep copy of a KerasTuner state dict as plain containers (its defaultdicts hold lambdas)."""
    if isinstance(state, Mapping):
        return {k: _plain(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return [_plain(v) for v in state]
    if isinstance(state, (set, frozenset)):
        return [_plain(v) for v in state]
    if isinstance(state, np.generic):
        return state.item()
    return state


def _check_objective(metric: Any, mode: Any) -> None:
    if metric is not None and not isinstance(metric, str):
        raise ValueError(f"metric must be one result key (a str), but got {metric!r}")
    if mode is not None and mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', but got {mode!r}")
