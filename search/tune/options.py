"""A search's settings, grouped as Ray Tune groups its own (``TuneConfig``, ``RunConfig``).

``LaunchOptions`` holds four groups: what to search (``SearchSpec``), with what resources
(``Resources``), where to record it (``TrackingSpec``), and how this run goes (``RunSpec``).
``LaunchOptions.from_flat`` takes the CLI's flat options. ``validate`` refuses bad values before
anything starts. Imports nothing heavy: the CLI builds these without importing Ray.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from search.errors import SearchError
from search.tune.algorithms import SCHEDULERS, SEARCHERS, unknown

METRICS = ("val_accuracy", "val_loss", "accuracy", "loss")
SEED_MAX = 2**32 - 1  # NumPy's and Ray's seeds are 32-bit
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def infer_mode(metric: str) -> str:
    """``min`` for a loss or an error, ``max`` for anything else (accuracy)."""
    return "min" if re.search(r"loss|error|rmse|mae|nll", metric) else "max"


@dataclass
class SearchSpec:
    """What to search: the space, the data, the budget, the algorithms and the objective."""

    space: str = "default"
    dataset: str = "digits"
    data_dir: str | None = None
    target: str = "label"
    classes: str | None = None  # "8,9": keep these classes, relabelled 0..k-1
    train_limit: int | None = None  # keep this many training examples
    num_samples: int = 16
    max_epochs: int | None = None  # None: the space's own `epochs`
    searcher: str = "tpe"
    scheduler: str | None = None  # None: see algorithms.default_scheduler
    transfer_from: str | None = None  # a run id or model URI whose hidden layers the trials reuse
    metric: str = "val_accuracy"
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
        """The mode in use: ``--mode``, else inferred from the metric."""
        return self.search.mode or infer_mode(self.search.metric)

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
        (s.metric in METRICS, f"--metric must be one of {', '.join(METRICS)}; got {s.metric!r}"),
        (0 <= s.seed <= SEED_MAX, f"--seed must be in [0, {SEED_MAX}], got {s.seed}"),
        (math.isfinite(r.cpus_per_trial) and r.cpus_per_trial > 0, f"--cpus-per-trial must be > 0, got {r.cpus_per_trial}"),
        (math.isfinite(r.gpus_per_trial) and r.gpus_per_trial >= 0, f"--gpus-per-trial must be >= 0, got {r.gpus_per_trial}"),
        (s.max_epochs is None or s.max_epochs >= 1, f"--max-epochs must be at least 1, got {s.max_epochs}"),
        (run.max_failures >= 0, f"--max-failures must be >= 0 (the retries of a trial lost to a crash), got {run.max_failures}"),
        (run.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {run.checkpoint_every}"),
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
    entry = SCHEDULERS.get(s.scheduler or "")
    if entry is not None and entry.searchers is not None and s.searcher not in entry.searchers:
        raise SearchError(f"--scheduler {entry.name} runs only with --searcher {' or '.join(entry.searchers)} "
                          f"(Ray Tune refuses a search algorithm beside it); got --searcher {s.searcher}")
