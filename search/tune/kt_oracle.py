"""KerasTuner's ``BayesianOptimizationOracle``, fixed for being driven by Ray Tune (KerasTuner 1.4.8).

``search.tune.kerastuner.KerasTunerSearcher`` drives this oracle through ``create_trial``,
``update_trial`` and ``end_trial``; ``Oracle``'s docstring says what differs from KerasTuner's.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import keras_tuner
import numpy as np
import scipy.optimize
import sklearn
import sklearn.exceptions
import threadpoolctl
from keras_tuner.src.engine import oracle as kt_oracle_module
from keras_tuner.src.engine import trial as kt_trial_module

logger = logging.getLogger(__name__)

TrialStatus = kt_trial_module.TrialStatus
# KerasTuner stops the search (raises RuntimeError from end_trial) after this many failed trials
# in a row; a Ray search must never crash over a failed trial, so the limit is out of reach.
NO_FAILURE_LIMIT = 2**62


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the warnings the oracle raises on every call (GP convergence, ``currentThread``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sklearn.exceptions.ConvergenceWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


class Oracle(keras_tuner.oracles.BayesianOptimizationOracle):
    """``BayesianOptimizationOracle`` with fixes for being driven by Ray (KerasTuner 1.4.8).

    The algorithm is KerasTuner's: random points first, then fit a Gaussian process (Matern 5/2)
    to the completed trials and minimize the upper confidence bound ``mu - beta * sigma`` with
    L-BFGS-B from 50 seeded random starts in the unit cube. What differs:

    * Speed. KerasTuner lets scipy take the gradient by finite differences, one GP prediction per
      dimension, with as many BLAS threads as cores; on the 23-dimension default space one
      suggestion took minutes. Here the same forward-difference gradient comes from one batched
      prediction, under a single BLAS thread.
    * No repeats. KerasTuner returns the best local optimum even when it is a point already
      tried (it then proposes the same point over and over); here the best optimum that is new
      wins, and a random point when there is none.
    * KerasTuner "hallucinates" the score of ongoing trials with the Gaussian process fitted at
      the previous suggestion. At the first Bayesian suggestion, and after a restore, that
      process has never been fitted, so it predicts its prior (about 0 in raw score units),
      which can make running trials look like the optimum. It is fitted on the completed trials
      first.
    * A failure in the Gaussian-process step (a degenerate fit) falls back to a random point
      rather than crashing the search.
    """

    NUM_RESTARTS = 50  # as in KerasTuner
    DIFF_STEP = 1e-7
    SAME_POINT = 1e-4  # candidates closer than this (max norm, unit cube) to a trial are repeats

    def populate_space(self, trial_id: str) -> dict[str, Any]:
        try:
            return self._bayesian_populate_space()
        except Exception:  # noqa: BLE001 - a searcher must keep suggesting
            logger.warning("Bayesian step failed for trial %s; drawing a random point instead", trial_id, exc_info=True)
            return self._random_populate_space()

    def _bayesian_populate_space(self) -> dict[str, Any]:
        completed = [t for t in self.trials.values() if t.status == TrialStatus.COMPLETED]
        dimensions = len(self.hyperparameters.space)
        num_initial_points = self.num_initial_points or max(3 * dimensions, 3)
        if len(completed) < num_initial_points:
            return self._random_populate_space()

        # The Gaussian process works on matrices of a few hundred rows at most, where BLAS threads
        # only cost: on a busy machine a multi-threaded OpenBLAS makes each small solve 20x slower.
        with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
            return self._bayesian_step()

    def _bayesian_step(self) -> dict[str, Any]:
        x, y = self._vectorize_trials()
        self.gpr.fit(np.nan_to_num(x, posinf=0, neginf=0), np.nan_to_num(y, posinf=0, neginf=0))

        bounds = self._get_hp_bounds().astype(float)
        starts = self._random_state.uniform(bounds[:, 0], bounds[:, 1], size=(self.NUM_RESTARTS, bounds.shape[0]))
        results = []
        with sklearn.config_context(assume_finite=True):
            for start in starts:
                result = scipy.optimize.minimize(
                    self._acquisition, x0=start, jac=True, bounds=bounds, method="L-BFGS-B"
                )
                results.append((float(result.fun), np.clip(result.x, bounds[:, 0], bounds[:, 1])))
        # KerasTuner returns the best local optimum even when it is a point already tried, and a
        # repeat teaches the process nothing: take the best optimum that is new, else a random one.
        tried = [self._vector(t.hyperparameters.values) for t in self.trials.values()]
        for _, candidate in sorted(results, key=lambda r: r[0]):
            values = self._vector_to_values(candidate)
            vector = self._vector(values)
            if not any(np.max(np.abs(vector - old)) < self.SAME_POINT for old in tried):
                return {"status": TrialStatus.RUNNING, "values": values}
        logger.debug("every optimum of the acquisition was tried already; drawing a random point")
        return self._random_populate_space()

    def _vector(self, values: Mapping[str, Any]) -> np.ndarray:
        """``values`` embedded in the unit cube as the Gaussian process sees them."""
        return np.array([
            hp.value_to_prob(values[hp.name] if hp.name in values else hp.default) for hp in self._nonfixed_space()
        ])

    def _acquisition(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """The upper confidence bound to minimize at ``x``, and its forward-difference gradient."""
        d = x.shape[0]
        steps = np.where(x + self.DIFF_STEP <= 1.0, self.DIFF_STEP, -self.DIFF_STEP)
        points = np.vstack([x, x + np.diag(steps)])
        mu, sigma = self.gpr.predict(points, return_std=True)
        ucb = np.asarray(mu).reshape(d + 1) - self.beta * np.asarray(sigma).reshape(d + 1)
        return float(ucb[0]), (ucb[1:] - ucb[0]) / steps

    def _vectorize_trials(self) -> tuple[np.ndarray, np.ndarray]:
        if self.ongoing_trials and not hasattr(self.gpr, "X_train_"):
            self._fit_on_completed()
        return super()._vectorize_trials()

    def _fit_on_completed(self) -> None:
        everything = self.trials
        self.trials = {tid: t for tid, t in everything.items() if t.status == TrialStatus.COMPLETED}
        try:
            if not self.trials:
                return
            x, y = super()._vectorize_trials()
        finally:
            self.trials = everything
        self.gpr.fit(np.nan_to_num(x, posinf=0, neginf=0), np.nan_to_num(y, posinf=0, neginf=0))


def release(project_dir: str, oracle: Oracle) -> None:
    """Remove the oracle's scratch directory and KerasTuner's global lock entries for it."""
    shutil.rmtree(project_dir, ignore_errors=True)
    # ``keras_tuner.synchronized`` keys module-level dicts by oracle, which keeps every oracle alive.
    kt_oracle_module.LOCKS.pop(oracle, None)
    kt_oracle_module.THREADS.pop(oracle, None)
