"""A search's lifecycle, and nothing else: start, run, then finish, interrupt or fail.

``launch(LaunchOptions(...))`` is what ``search launch`` runs. ``Search.start`` checks the
options, loads the space and the dataset, opens the store, starts Ray and opens the parent run;
``Search.run`` builds the Ray Tune ``Tuner`` (or restores it, for ``--resume``) and fits it;
then exactly one of ``finish`` (every trial ended), ``interrupt`` (Ctrl-C: Ray saved its
state, ``--resume`` continues) or ``fail`` (anything else) ends the parent run, in a known state.

The driver loads the dataset once and hands it to the trials through Ray's object store; the
trials (``search.tune.trainable``) fit and report; ``MLflowCallback`` records every trial.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search import scratch
from search.errors import Interrupted, SearchError, SearchFailed, TrackingError, cause_of
from search.interrupts import interrupt_code, record
from search.tasks import AUTO
from search.tracking.writer import reason_of
from search.tracking import SearchRecord, Tracker, check_reachable, resolve_tracking_uri, tags, transfer_source
from search.tune.algorithms import SCHEDULERS, SEARCHERS, Plan, default_scheduler, make_scheduler, make_searcher
from search.tune.options import LaunchOptions, default_name, settle_task, storage_root, validate
from search.tune.results import Grid, SearchResult, replace_callbacks, summarize

if TYPE_CHECKING:
    from search.data import Dataset
    from search.space import Space
    from search.tune.warm_start import WarmStart

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def launch(opts: LaunchOptions, *, progress: Progress | None = None, notice: Progress | None = None) -> SearchResult:
    """Run a search and record it in MLflow; returns its summary. ``progress`` gets the live line,
    ``notice`` one-line messages (what a warm start took)."""
    search = Search(opts, progress=progress, notice=notice)
    search.start()
    return search.run()


class Search:
    """One search, from start to end; whatever happens after ``start``, its parent run is ended."""

    def __init__(self, opts: LaunchOptions, *, progress: Progress | None = None,
                 notice: Progress | None = None) -> None:
        self.opts = opts
        self.progress = progress
        self.notice: Progress = notice or log.info  # one-line messages for the user (stderr in the CLI)
        self.started = time.perf_counter()
        self.space: Space
        self.dataset: Dataset
        self.uri = ""
        self.name = opts.run.name or default_name(opts.search.space or "default", opts.search.dataset)
        self.root = storage_root(opts.run.storage_path)
        self.tracker: Tracker | None = None
        self.plan: Plan | None = None
        self.scheduler = ""
        self.parent_run_id: str | None = None
        self.record: SearchRecord | None = None  # --resume: the search being continued
        self.recorded_space: Space | None = None
        self.transfer: tuple[str, dict[str, Any]] | None = None  # (model URI, its hidden layers' weights)
        self.warm: WarmStart | None = None  # --warm-start: the earlier trials handed to the searcher

    @property
    def resume_hint(self) -> str:
        storage = f" --storage-path {self.opts.run.storage_path}" if self.opts.run.storage_path else ""
        return f"`search launch --name {self.name} --resume`{storage}"

    # -- start -----------------------------------------------------------------------------
    def start(self) -> None:
        """Everything before the trials; bad input fails here, with nothing recorded."""
        from search.tune.session import connect, resolve_concurrency

        validate(self.opts)
        scratch.sweep()  # the scratch folders of searches and trials that were killed
        self.uri = resolve_tracking_uri(self.opts.tracking.tracking_uri)
        check_reachable(self.uri)
        self.tracker = Tracker(self.uri, self.opts.tracking.experiment, retry_s=self.opts.tracking.tracking_retry_s)
        if "://" not in self.root:
            _check_writable_folder(Path(self.root))
        if self.opts.run.resume:
            self._take_the_record()
        elif "://" not in self.root and _can_restore(self.experiment_dir):
            raise SearchError(f"a search named {self.name} already exists (Ray's state at {self.experiment_dir}); "
                              "continue it with --resume, or pick another --name")
        self._load()
        # Importing mlflow and opening the store (creating a new SQLite store's tables) takes seconds, and so
        # does starting Ray, which mostly waits on the processes it starts: do both at once.
        opening = _InBackground(self.tracker.experiment_id)
        s = self.opts.search
        joined = connect(self.opts.resources.address, quiet=self.opts.run.quiet)
        if joined:
            self.notice(f"ray: joined the Ray already running at {joined} (`ray start`); `ray stop` ends it")
        concurrency = resolve_concurrency(self.opts.resources, s.num_samples)
        self.scheduler = s.scheduler or default_scheduler(s.num_samples, concurrency)
        opening.result()
        if not self.opts.run.resume and self.tracker.find_search(self.name) is not None:
            raise SearchError(f"a search named {self.name} already exists in experiment {self.opts.tracking.experiment!r}; "
                              "continue it with --resume, or pick another --name")
        self._gather_warm_start()
        self.plan = Plan(space=self.space, metric=s.metric, mode=s.mode or "max", seed=s.seed,
                         num_samples=s.num_samples, concurrency=concurrency,
                         max_t=s.max_epochs or int(self.space.max_value("epochs")),
                         history=tuple(self.warm.points) if self.warm else ())
        self._open_parent()

    def _gather_warm_start(self) -> None:
        """--warm-start on a new search: the earlier trials that are points of this space, said on stderr.
        (A resumed search's searcher comes back from Ray's state with them already in it.)"""
        from search.tune.warm_start import gather

        s = self.opts.search
        if not s.warm_start or self.opts.run.resume:
            return
        self.warm = gather(self.uri, self.opts.tracking.experiment, s.warm_start, self.space, metric=s.metric)
        self.notice(self.warm.summary())

    def _take_the_record(self) -> None:
        """--resume: the recorded search's settings and space, or why it cannot be resumed."""
        from search.tune.resume import recorded_space, resumed_options

        assert self.tracker is not None
        run = self.tracker.find_search(self.name)
        if run is None:
            raise SearchError(f"no search named {self.name} in experiment {self.opts.tracking.experiment!r} at "
                              f"{self.uri}; check --name (see `search runs`) and --tracking-uri")
        self.record = SearchRecord(self.uri, run)
        self.opts = resumed_options(self.opts, self.record)
        if "://" not in self.root and not _can_restore(self.experiment_dir):
            raise SearchError(f"nothing to resume at {self.experiment_dir}; check --name and --storage-path")
        self.recorded_space = recorded_space(self.record)

    def _load(self) -> None:
        """The dataset and the space (a resumed search's as recorded, the dataset checked against its fingerprint)."""
        from search.data import load_recorded, load_subset
        from search.space import load_space

        s = self.opts.search
        # Loaded before Ray starts, so that a missing dataset is one line with nothing started. (Loading it in
        # a thread beside ray.init gained nothing on 2 cores: start-up there is CPU-bound; docs/benchmarks.md.)
        params = self.record.params if self.record is not None else {}
        subset = {"classes": s.classes, "train_limit": s.train_limit, "task": s.task}
        if params.get("dataset_source"):
            self.dataset = load_recorded(params["dataset_source"], params.get("dataset_fingerprint"),
                                         data_dir=s.data_dir, target=s.target, what=f"search {self.name}", **subset)
        else:
            self.dataset = load_subset(s.dataset, data_dir=s.data_dir, target=s.target, **subset)
        self.opts = settle_task(self.opts, self.dataset.task)  # the task's space and metric, unless given
        if s.task == AUTO and not self.opts.run.resume and Path(self.dataset.source).is_absolute():  # a file's
            self.notice(f"task: {self.dataset.task} (inferred from the target of {self.dataset.name}; --task sets it)")
        s = self.opts.search
        self.name = self.opts.run.name or default_name(str(s.space), s.dataset)
        self.space = self.recorded_space or load_space(str(s.space))
        self.space.check_inputs(self.dataset.input_shape, self.dataset.name)
        if s.transfer_from:
            if int(self.space.max_value("reuse_layers")) < 1:
                raise SearchError(f"--transfer-from {s.transfer_from}, but space {self.space.name} never sets "
                                  "reuse_layers above 0, so nothing would be reused; add reuse_layers to the space")
            self.transfer = transfer_source(self.uri, s.transfer_from)

    @property
    def experiment_dir(self) -> Path:
        return Path(self.root, self.name)

    def _open_parent(self) -> None:
        from search.tune.summary import search_params, search_tags

        assert self.tracker is not None and self.plan is not None
        kw = {"scheduler": self.scheduler, "concurrency": self.plan.concurrency, "max_t": self.plan.max_t}
        warm = self.warm.summary().removeprefix("warm start: ") if self.warm else ""
        self.parent_run_id = self.tracker.start_search(
            self.name, search_params(self.opts, self.dataset, **kw),
            search_tags(self.opts, self.space, self.dataset, **kw, warm_start=warm), resume=self.opts.run.resume,
        )
        if not self.opts.run.resume:
            self.tracker.log_text(self.parent_run_id, self.space.source, tags.SPACE_ARTIFACT)
        if self.warm is not None:
            self.tracker.set_tags(self.parent_run_id, {tags.WARM_START_RUNS: ",".join(r.run_id for r in self.warm.searches)})
            self.tracker.final_metrics(self.parent_run_id, {tags.WARM_START_TRIALS: len(self.warm.points),
                                                            tags.WARM_START_SKIPPED: self.warm.skipped})

    # -- run -------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        """Fit the trials; then finish, interrupt or fail."""
        from search.tune.session import quiet_ray_output, released

        try:
            tuner = self._tuner()
            with quiet_ray_output(self.opts.run.quiet), _TermAsInterrupt() as term:
                grid = Grid(tuner.fit())
        except BaseException as err:
            # The callback gave up on MLflow: Tune stopped the trials and raised it (as it is, or inside a
            # TuneError, depending on which event the callback was handling). Its last saved state (saved at
            # each trial checkpoint) is what --resume continues; MLflow is not written again.
            gave_up = cause_of(err, TrackingError)
            if gave_up is not None:
                raise TrackingError(
                    f"{gave_up}; the search stopped (Ray saved its state): once the tracking server at {self.uri} "
                    f"is back, continue it with {self.resume_hint}"
                ) from None
            self.fail(err)
            raise
        assert self.tracker is not None
        with released():  # what is left reads Ray's results from the storage path, not from Ray: Ray stops meanwhile
            unfinished = grid.unfinished(self.tracker)
            if unfinished:  # Ctrl-C or SIGTERM: Ray saved the experiment; leave the runs for --resume to reopen
                self.interrupt(unfinished, exit_code=143 if term.received else 130)
            try:
                return self.finish(grid)
            except SearchError:
                raise
            except BaseException as err:
                self.fail(err)
                raise

    def _tuner(self) -> Any:
        from ray import tune

        from search.tune.callbacks import driver_callbacks
        from search.tune.trainable import CHECKPOINT_SCORE, run_trial

        assert self.tracker is not None and self.plan is not None
        s, plan, entry = self.opts.search, self.plan, SCHEDULERS[self.scheduler]
        callbacks = driver_callbacks(self.tracker, self.space, metric=s.metric, mode=s.mode, max_epochs=s.max_epochs,
                                     transfer_from=self.transfer[0] if self.transfer else None, progress=self.progress)
        trainable = tune.with_resources(
            tune.with_parameters(
                run_trial, space=self.space, dataset=self.dataset, max_epochs=s.max_epochs,
                cpu_threads=max(1, int(self.opts.resources.cpus_per_trial)), metric=s.metric, mode=s.mode,
                checkpoint_every=self.opts.run.checkpoint_every or entry.checkpoint_every(plan.max_t),
                checkpoint_share=entry.checkpoint_share, checkpoint_at=entry.stops_at(plan.max_t),
                source=self.transfer[1] if self.transfer else None,
                report_every_s=self.opts.run.report_every_s if entry.coalesce else 0.0, report_at=entry.stops_at(plan.max_t),
            ),
            {"cpu": self.opts.resources.cpus_per_trial, "gpu": self.opts.resources.gpus_per_trial},
        )
        if self.opts.run.resume:
            tuner = tune.Tuner.restore(str(self.experiment_dir), trainable, resume_unfinished=True, resume_errored=False)
            replace_callbacks(tuner, callbacks)
            return tuner
        return tune.Tuner(
            trainable,
            param_space=self.space.to_ray() if SEARCHERS[s.searcher].param_space else {},
            tune_config=tune.TuneConfig(
                search_alg=make_searcher(s.searcher, plan), scheduler=make_scheduler(self.scheduler, plan),
                metric=s.metric, mode=s.mode, num_samples=s.num_samples, max_concurrent_trials=plan.concurrency,
                reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name=self.name, storage_path=self.root, callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=self.opts.run.max_failures),
                checkpoint_config=tune.CheckpointConfig(
                    num_to_keep=1, checkpoint_score_attribute=CHECKPOINT_SCORE, checkpoint_score_order=s.mode
                ),  # the best checkpoint, and Ray always keeps the latest for resuming
                verbose=0, progress_reporter=None,
            ),
        )

    # -- the three ends --------------------------------------------------------------------
    def finish(self, grid: Grid) -> SearchResult:
        """Every trial ended: the summary, the best trial and the report on the parent run; close it.

        A search in which no trial produced a result ends FAILED, and says why its first trial failed.
        """
        from search.tune.summary import finish_search

        assert self.tracker is not None
        s = self.opts.search
        self._drop_lost_runs(grid)
        result = summarize(grid, self.tracker, self.space, name=self.name, experiment=self.opts.tracking.experiment,
                           uri=self.uri, metric=s.metric, mode=s.mode or "max", max_epochs=s.max_epochs,
                           storage=str(self.experiment_dir))
        result.wall_time_s = time.perf_counter() - self.started
        failure = None if result.best is not None else self._first_failure(result)
        finish_search(self.tracker, result, grid, failure=failure)
        if failure is not None:
            raise SearchFailed(f"every trial of search {self.name} failed ({len(result.trials)} trials); the first: "
                               f"{failure}")
        return result

    def _drop_lost_runs(self, grid: Grid) -> None:
        """A trial that ran when the driver died, before Ray saved it, runs again under a new id on --resume:
        its partial run is deleted (MLflow keeps it restorable), so each trial has exactly one run."""
        assert self.tracker is not None
        known = {t.trial_id for t in grid.trials}
        for trial_id, run_id in list(self.tracker.runs.items()):
            if trial_id not in known:
                log.info("trial %s was lost with the driver and ran again; deleting its partial run %s", trial_id, run_id)
                self.tracker.end_run(run_id, "KILLED", {tags.END_STATE: tags.END_INTERRUPTED})
                self.tracker.delete_run(run_id)
                del self.tracker.runs[trial_id]

    def _first_failure(self, result: SearchResult) -> str:
        assert self.tracker is not None
        failed = sorted((r for r in self.tracker.child_runs(role=tags.ROLE_TRIAL) if tags.FAIL_REASON in r.data.tags),
                        key=lambda r: r.info.start_time or 0)
        return failed[0].data.tags[tags.FAIL_REASON] if failed else "no trial reported the metric"

    def interrupt(self, unfinished: list[Any], *, exit_code: int = 130) -> None:
        """Ctrl-C or SIGTERM: end the open runs KILLED (``--resume`` reopens them) and say how to continue."""
        assert self.tracker is not None and self.parent_run_id is not None
        self.tracker.flush()
        for trial in unfinished:
            if trial.trial_id in self.tracker.runs:
                self.tracker.end_run(self.tracker.runs[trial.trial_id], "KILLED", {tags.END_STATE: tags.END_INTERRUPTED})
        self.tracker.end_run(self.parent_run_id, "KILLED", {tags.SEARCH_STATE: tags.END_INTERRUPTED})
        signal_name = "SIGTERM" if exit_code == 143 else "Ctrl-C"
        raise Interrupted(f"search {self.name} stopped by {signal_name} with {len(unfinished)} trials unfinished; "
                          f"continue it with {self.resume_hint}", exit_code=exit_code)

    def fail(self, err: BaseException) -> None:
        """Anything else: the open trial runs and the parent run end FAILED (KILLED for a signal), with the reason."""
        if self.tracker is None or self.parent_run_id is None:
            return
        reason = reason_of(err)
        status = "FAILED" if interrupt_code(err) is None else "KILLED"
        try:
            for run in self.tracker.child_runs(role=tags.ROLE_TRIAL):
                if run.info.status == "RUNNING":
                    self.tracker.end_run(run.info.run_id, status, {tags.END_STATE: tags.END_INTERRUPTED,
                                                                   tags.FAIL_REASON: f"the search stopped: {reason}"})
            self.tracker.end_run(self.parent_run_id, status, {tags.FAIL_REASON: reason})
        except Exception as write_err:  # noqa: BLE001 (the original error is the one to raise)
            log.warning("could not mark the search's runs %s: %s", status, write_err)


class _TermAsInterrupt:
    """While Ray Tune runs, SIGTERM stops it as Ctrl-C does (Ray takes SIGUSR1 for that): trials are
    saved and the search can be resumed. ``received`` says whether it came."""

    def __enter__(self) -> _TermAsInterrupt:
        import signal

        self.received = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        self.received = True
        record(signum)
        os.kill(os.getpid(), signal.SIGUSR1)

    def __exit__(self, *exc: Any) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _check_writable_folder(root: Path) -> None:
    """Ray keeps the search's state under --storage-path: it must be a folder this process can write."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SearchError(f"--storage-path {root} cannot be made a folder ({err.strerror or err}); give a writable "
                          "folder") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise SearchError(f"--storage-path {root} is not writable; give a writable folder")


def _can_restore(path: Path) -> bool:
    from ray import tune

    return tune.Tuner.can_restore(str(path))


class _InBackground:
    """Run ``fn`` in a thread now; ``result()`` waits for it and returns or raises what it did."""

    def __init__(self, fn: Callable[[], Any]) -> None:
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
