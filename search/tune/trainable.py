"""The trainable, on the workers: one trial fits its config and reports its epochs to Ray Tune.

``run_trial`` is what Ray runs per trial. It assembles the trial config from the space, fits it
with ``search.train.fit`` in a thread of its own, and reports its epochs (with a ``.keras``
checkpoint where ``CheckpointPolicy`` says so). Short epochs are coalesced: at most one report
about every ``report_every_s``, each carrying the epochs since the last one under ``EARLIER``,
so the driver records every epoch; epochs where a scheduler decides (``report_at``), epochs with
a checkpoint, and the final epoch are always reported as they come. No MLflow here: the driver
records the results.
"""

from __future__ import annotations

import importlib.abc
import json
import queue
import shutil
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray import tune

from search import scratch

if TYPE_CHECKING:
    from search.data import Dataset
    from search.space import Space

CHECKPOINT_SCORE = "checkpoint_score"  # the metric value of the weights a reported checkpoint holds
EARLIER = "earlier_epochs"  # a report's epochs before its own, since the last report (coalesced), oldest first
ENDED_AT = "epoch_ended_ms"  # when the epoch ended in the worker (Unix time, ms): its MLflow timestamp
_WORKER_CONFIGURED = False
_DONE = object()
# Keras imports these at its own import when they are installed (for its scikit-learn wrappers and its
# image-gallery plots), which a trial uses neither of: about 2 s of each worker's TF import on 2 cores
# (docs/benchmarks.md). A trial worker imports Keras without them; they stay importable afterwards.
KERAS_EXTRAS = ("sklearn", "matplotlib")


def trial_config(space: Space, values: Mapping[str, Any], max_epochs: int | None) -> dict[str, Any]:
    """The trial config of a Ray trial's values, with ``--max-epochs`` over the space's epochs."""
    cfg = space.assemble(values)
    if max_epochs:
        cfg["epochs"] = max_epochs
    return cfg


def _configure_worker(cpu_threads: int) -> None:
    """Once per worker process: TF threads to the trial's CPU share, GPU memory growth."""
    global _WORKER_CONFIGURED
    if _WORKER_CONFIGURED:
        return
    from search.train import configure_runtime

    with hidden(KERAS_EXTRAS):  # configure_runtime imports TF, which imports Keras
        configure_runtime(cpu_threads=cpu_threads, gpu_memory_growth=True)
    _WORKER_CONFIGURED = True


class hidden(importlib.abc.MetaPathFinder):
    """Within ``with hidden(names)``, importing one of these top-level packages (not yet imported) fails
    as if it were not installed; on exit they import as usual again."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = {n for n in names if n not in sys.modules}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {fullname!r} (hidden while Keras is imported)", name=fullname)

    def __enter__(self) -> hidden:
        sys.meta_path.insert(0, self)
        return self

    def __exit__(self, *exc: Any) -> None:
        sys.meta_path.remove(self)


class CheckpointPolicy:
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
    is what Ray ranks checkpoints by. Its folder is a ``search.scratch`` folder, removed once Ray
    has taken it.
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
        folder = scratch.make("checkpoint-")
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
    source: Mapping[str, list[Any]] | None = None,
    report_every_s: float = 0.0,
    report_at: frozenset[int] = frozenset(),
) -> None:
    """One trial: fit the assembled config, reporting its epochs (with .keras checkpoints, see
    ``CheckpointPolicy``; coalesced to one report per ``report_every_s`` at most, except at the
    epochs in ``report_at``, at checkpoints and at the end).

    ``tune.report`` blocks until the driver has taken the result and asked for the next one, a
    round trip through the driver's callbacks; so the fit runs in a thread of its own and hands
    each epoch over, and this thread reports it while the next epoch trains (one epoch ahead at
    most). When Ray stops the trial, the fit stops after its current batch.
    """
    _configure_worker(cpu_threads)
    cfg = trial_config(space, config, max_epochs)
    scratch.sweep()  # checkpoints that killed workers on this node left behind
    policy = CheckpointPolicy(cfg, metric=metric, mode=mode, every=checkpoint_every, share=checkpoint_share,
                              at=checkpoint_at)
    # Nodes on one host share an IP; the node id tells them apart (and shows where a retried trial went).
    fitter = _Fitter(cfg, dataset, policy, tune.get_checkpoint(), ray.get_runtime_context().get_node_id(), source)
    try:
        fitter.report_epochs(every_s=report_every_s, at=report_at)
    finally:  # done, failed, or stopped by Ray (SystemExit from tune.report): end the fit thread first
        fitter.stop()


class Coalescer:
    """Sends a trial's epochs to Tune, at most one report about every ``every_s``.

    An epoch is held back (and sent with the next report, under ``EARLIER``) when the last report
    was less than ``every_s`` ago, unless it is the final epoch, holds a checkpoint ``folder``, or
    is in ``at``; the first epoch is always sent at once. ``every_s`` 0 sends every epoch.
    """

    def __init__(self, *, every_s: float = 0.0, at: frozenset[int] = frozenset()) -> None:
        self.every_s, self.at = every_s, at
        self.held: list[dict[str, Any]] = []
        self.last = float("-inf")

    def offer(self, row: dict[str, Any], folder: str | None = None, score: float = 0.0) -> None:
        """Send ``row`` now (with what is held), or hold it; a checkpoint ``folder`` is removed once sent."""
        must = folder is not None or bool(row.get("final")) or int(row["epoch"]) in self.at or self.every_s <= 0
        if not must and time.monotonic() - self.last < self.every_s:
            self.held.append(row)
            return
        report = {**row, EARLIER: self.held} if self.held else row
        self.held = []
        try:
            if folder is None:
                tune.report(report)
            else:
                tune.report({**report, CHECKPOINT_SCORE: score}, checkpoint=tune.Checkpoint.from_directory(folder))
        finally:
            self.last = time.monotonic()
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    def close(self) -> None:
        """Send what is still held (the last held epoch, with the ones before it)."""
        if self.held:
            held, self.held = self.held, []
            tune.report({**held[-1], EARLIER: held[:-1]})


class _Fitter:
    """The fit in its own thread, handing each epoch's row (and checkpoint folder) over a queue."""

    def __init__(self, cfg: dict[str, Any], dataset: Dataset, policy: CheckpointPolicy, checkpoint: Any,
                 node_id: str, source: Mapping[str, list[Any]] | None = None) -> None:
        self.cfg, self.dataset, self.policy, self.checkpoint, self.node_id = cfg, dataset, policy, checkpoint, node_id
        self.source = source
        self.outbox: queue.Queue = queue.Queue(maxsize=1)
        self.stopping = threading.Event()
        self.model: Any = None
        self.thread = threading.Thread(target=self._train, name="search-fit", daemon=True)
        self.thread.start()

    def _start_from(self) -> tuple[int, Any, Any]:
        """(epochs done, model to train on, weights for a new model) from the trial's checkpoint."""
        if self.checkpoint is None:
            return 0, None, None
        import keras

        with self.checkpoint.as_directory() as folder:  # a resumed trial, or a PBT exploit
            state = json.loads(Path(folder, "state.json").read_text())
            initial = keras.saving.load_model(Path(folder, "model.keras"))
        if state["config"] != json.loads(json.dumps(self.cfg)):  # PBT mutated it: new model, trained weights
            return int(state["epoch"]), None, initial.get_weights()
        return int(state["epoch"]), initial, None

    def _train(self) -> None:
        try:
            from search.train import fit

            start_epoch, initial, weights = self._start_from()

            def report(row: dict[str, float], model: Any) -> None:
                if self.stopping.is_set():
                    model.stop_training = True
                    return
                ended = int(time.time() * 1000)  # before any checkpoint; a coalesced epoch reaches the driver later
                folder, score = self.policy(row, model)
                self.outbox.put(({**row, "node_id": self.node_id, ENDED_AT: ended}, folder, score, model))

            fit(self.cfg, self.dataset, report=report, seed=None, initial_model=initial, initial_weights=weights,
                initial_epoch=start_epoch, source=self.source)
            self.outbox.put(_DONE)
        except BaseException as err:  # noqa: BLE001 (handed to the reporting thread, which raises it)
            self.outbox.put(err)

    def report_epochs(self, *, every_s: float = 0.0, at: frozenset[int] = frozenset()) -> None:
        """Report the epochs to Tune as the fit hands them over (through a ``Coalescer``); raise what
        the fit raised."""
        coalescer = Coalescer(every_s=every_s, at=at)
        while True:
            item = self.outbox.get()
            if item is _DONE:
                coalescer.close()  # a fit ends with a final row, always sent; this is for one that did not
                return
            if isinstance(item, BaseException):
                raise item
            row, folder, score, self.model = item
            coalescer.offer(row, folder, score)

    def stop(self) -> None:
        """Stop the fit after its current batch, drop what it still hands over, and wait for it."""
        self.stopping.set()
        if self.model is not None:
            self.model.stop_training = True
        while self.thread.is_alive() or not self.outbox.empty():
            try:
                item = self.outbox.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, tuple) and item[1] is not None:
                shutil.rmtree(item[1], ignore_errors=True)
        self.thread.join()
