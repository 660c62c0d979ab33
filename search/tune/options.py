"""A search's settings, grouped as Ray Tune groups its own (``TuneConfig``, ``RunConfig``).

``LaunchOptions`` holds four groups: what to search (``SearchSpec``), with what resources
(``Resources``), where to record it (``TrackingSpec``), and how this run goes (``RunSpec``).
``LaunchOptions.from_flat`` takes the CLI's flat options. ``validate`` refuses bad values before
anything starts. Imports nothing heavy: the CLI builds these without importing Ray.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from search.errors import SearchError
from search.tasks import AUTO, TASKS, all_epoch_metrics, get_task
from search.tune.algorithms import SCHEDULERS, SEARCHERS, unknown

SEED_MAX = 2**32 - 1  # NumPy's and Ray's seeds are 32-bit
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def default_name(space: str, dataset: str) -> str:
    """A search's name when --name is not given: SPACE-DATASET-TIME."""
    stem = Path(space).stem if space.endswith((".yaml", ".yml")) else space
    data = Path(dataset).stem if Path(dataset).suffix else dataset
    return f"{stem}-{data}-{time.strftime('%Y%m%d-%H%M%S')}"


def storage_root(path: str | None) -> str:
    """Where Ray keeps the experiment (trial results, checkpoints, searcher state)."""
    root = path or os.environ.get("SEARCH_STORAGE_PATH") or str(Path.cwd() / "ray_results")
    return root if "://" in root else str(Path(root).expanduser().resolve())


def infer_mode(metric: str) -> str:
    """``min`` for a loss or an error, ``max`` for anything else (accuracy)."""
    return "min" if re.search(r"loss|error|rmse|mae|nll", metric) else "max"


@dataclass
class SearchSpec:
    """What to search: the space, the data, the budget, the algorithms and the objective."""

    space: str | None = None  # None: the task's (default, regression)
    dataset: str = "digits"
    data_dir: str | None = None
    target: str = "label"
    task: str = AUTO  # classification, regression, or auto: inferred from the data (search.tasks)
    classes: str | None = None  # "8,9": keep these classes, relabelled 0..k-1
    train_limit: int | None = None  # keep this many training examples
    num_samples: int = 16
    max_epochs: int | None = None  # None: the space's own `epochs`
    searcher: str = "tpe"
    scheduler: str | None = None  # None: see algorithms.default_scheduler
    transfer_from: str | None = None  # a run id or model URI whose hidden layers the trials reuse
    warm_start: tuple[str, ...] = ()  # earlier searches (names or parent run ids) whose trials seed the searcher
    metric: str | None = None  # None: the task's (val_accuracy, val_rmse)
    mode: str | None = None  # None: inferred from the metric (see infer_mode)
    seed: int = 0


@dataclass
class Resources:
    """Where and how wide: the Ray cluster, trials at once, and each trial's share."""

    address: str | None = None  # None: $RAY_ADDRESS, else a local Ray
    concurrency: int | None = None  # None: as many as the CPUs allow
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0


@dataclass
class TrackingSpec:
    """Where the search is recorded."""

    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///$PWD/mlflow.db
    experiment: str = "search"
    tracking_retry_s: float = 120.0


@dataclass
class RunSpec:
    """This run of the search: its name, Ray's storage, resume, retries and checkpoints."""

    name: str | None = None  # None: SPACE-DATASET-TIME
    storage_path: str | None = None  # None: $SEARCH_STORAGE_PATH, else ./ray_results
    resume: bool = False
    max_failures: int = 0
    checkpoint_every: int = 0  # 0: when the metric improves (and at PBT perturbations)
    report_every_s: float = 0.5  # a trial reports at most about this often (0: every epoch); MLflow gets every epoch
    quiet: bool = False


GROUPS = {"search": SearchSpec, "resources": Resources, "tracking": TrackingSpec, "run": RunSpec}


@dataclass
class LaunchOptions:
    """Everything ``search launch`` takes, in groups; the defaults are the CLI's."""

    search: SearchSpec = field(default_factory=SearchSpec)
    resources: Resources = field(default_factory=Resources)
    tracking: TrackingSpec = field(default_factory=TrackingSpec)
    run: RunSpec = field(default_factory=RunSpec)
    # The flat option names the user gave (on the command line or in the environment); None: all of
    # them. A resumed search takes the others from its record, and refuses given ones that differ.
    given: frozenset[str] | None = None

    @classmethod
    def from_flat(cls, given: frozenset[str] | None = None, **options: Any) -> LaunchOptions:
        """Options by their flat names (the CLI's), each sorted into its group; unknown names are refused."""
        groups: dict[str, dict[str, Any]] = {name: {} for name in GROUPS}
        owner = {f.name: group for group, spec in GROUPS.items() for f in fields(spec)}
        for key, value in options.items():
            if key not in owner:
                raise TypeError(f"unknown launch option {key!r}")
            groups[owner[key]][key] = value
        return cls(**{group: GROUPS[group](**values) for group, values in groups.items()}, given=given)

    def with_search(self, **changes: Any) -> LaunchOptions:
        """A copy with ``changes`` to the search group."""
        return replace(self, search=replace(self.search, **changes))

    @property
    def mode(self) -> str:
        """The mode in use: ``--mode``, else inferred from the metric (the task's default metric's: max)."""
        return self.search.mode or (infer_mode(self.search.metric) if self.search.metric else "max")

    def flat(self) -> dict[str, Any]:
        """Every option by its flat name."""
        return {f.name: getattr(getattr(self, g), f.name) for g, spec in GROUPS.items() for f in fields(spec)}


def validate(opts: LaunchOptions) -> None:
    """Reject bad or contradicting options before anything starts, each with the rule and the value."""
    s, r, run = opts.search, opts.resources, opts.run
    checks = [
        (s.num_samples >= 1, f"--num-samples must be at least 1, got {s.num_samples}"),
        (r.concurrency is None or r.concurrency >= 1, f"--concurrency must be at least 1, got {r.concurrency}"),
        (s.mode in (None, "max", "min"), f"--mode must be max or min, got {s.mode!r}"),
        (s.metric is None or s.metric in all_epoch_metrics(),  # every task's; settle_task checks the one in use
         f"--metric must be one of {', '.join(all_epoch_metrics())}; got {s.metric!r}"),
        (s.task in (AUTO, *TASKS), f"--task must be auto or one of {', '.join(TASKS)}; got {s.task!r}"),
        (0 <= s.seed <= SEED_MAX, f"--seed must be in [0, {SEED_MAX}], got {s.seed}"),
        (math.isfinite(r.cpus_per_trial) and r.cpus_per_trial > 0, f"--cpus-per-trial must be > 0, got {r.cpus_per_trial}"),
        (math.isfinite(r.gpus_per_trial) and r.gpus_per_trial >= 0, f"--gpus-per-trial must be >= 0, got {r.gpus_per_trial}"),
        (s.max_epochs is None or s.max_epochs >= 1, f"--max-epochs must be at least 1, got {s.max_epochs}"),
        (run.max_failures >= 0, f"--max-failures must be >= 0 (the retries of a trial lost to a crash), got {run.max_failures}"),
        (run.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {run.checkpoint_every}"),
        (math.isfinite(run.report_every_s) and run.report_every_s >= 0,
         f"--report-every-s must be >= 0 (0: report every epoch), got {run.report_every_s}"),
        (not run.resume or bool(run.name), "--resume needs --name: the name of the search to continue (see `search runs`)"),
        (run.name is None or bool(NAME.fullmatch(run.name)),
         f"--name must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit; got {run.name!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise SearchError(message)
    if s.searcher not in SEARCHERS:
        raise unknown("searcher", s.searcher, SEARCHERS)
    if s.scheduler is not None and s.scheduler not in SCHEDULERS:
        raise unknown("scheduler", s.scheduler, SCHEDULERS)
    if s.warm_start and not SEARCHERS[s.searcher].learns:
        learners = " or ".join(e.name for e in SEARCHERS.values() if e.learns)
        raise SearchError(f"--warm-start needs a searcher that learns from earlier trials ({learners}); "
                          f"--searcher {s.searcher} draws every trial blindly, so the earlier trials would change nothing")
    entry = SCHEDULERS.get(s.scheduler or "")
    if entry is not None and entry.searchers is not None and s.searcher not in entry.searchers:
        raise SearchError(f"--scheduler {entry.name} runs only with --searcher {' or '.join(entry.searchers)} "
                          f"(Ray Tune refuses a search algorithm beside it); got --searcher {s.searcher}")


def settle_task(opts: LaunchOptions, task: str) -> LaunchOptions:
    """``opts`` for the data's ``task``: the task's space and metric where none was given (and its
    mode), or a ``SearchError`` for a metric the task's epochs do not report."""
    spec = get_task(task)
    metric = opts.search.metric or spec.metric
    if metric not in spec.epoch_metrics:
        raise SearchError(f"--metric {metric} is not reported by a {task} task; give one of "
                          f"{', '.join(spec.epoch_metrics)} (or drop --metric for {spec.metric})")
    right = infer_mode(metric) if opts.search.metric else spec.mode
    mode = opts.search.mode or right
    if mode != right:  # every epoch metric has one better direction: the other one picks the worst trial
        raise SearchError(f"--mode {mode} with --metric {metric} would rank the worst trials first (a "
                          f"{'lower' if right == 'min' else 'higher'} {metric} is better); give --mode {right}, "
                          f"or drop --mode")
    return opts.with_search(task=task, metric=metric, mode=mode, space=opts.search.space or spec.space)

