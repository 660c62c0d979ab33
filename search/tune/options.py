"""A search's settings, grouped as Ray Tune groups its own (``TuneConfig``, ``RunConfig``).

``LaunchOptions`` holds four groups: what to search (``SearchSpec``), with what resources
(``Resources``), where to record it (``TrackingSpec``), and how this run goes (``RunSpec``).
``LaunchOptions.from_flat`` takes the CLI's flat options. ``validate`` refuses bad values before
anything starts. Imports nothing heavy: the CLI builds these without importing Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from search.errors import SearchError
from search.tune.algorithms import SCHEDULERS, SEARCHERS, unknown

METRICS = ("val_accuracy", "val_loss", "accuracy", "loss")


@dataclass
class SearchSpec:
    """What to search: the space, the data, the budget, the algorithms and the objective."""

    space: str = "default"
    dataset: str = "digits"
    data_dir: str | None = None
    target: str = "label"
    num_samples: int = 16
    max_epochs: int | None = None  # None: the space's own `epochs`
    searcher: str = "tpe"
    scheduler: str | None = None  # None: see algorithms.default_scheduler
    metric: str = "val_accuracy"
    mode: str = "max"
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

    @classmethod
    def from_flat(cls, **options: Any) -> LaunchOptions:
        """Options by their flat names (the CLI's), each sorted into its group; unknown names are refused."""
        groups: dict[str, dict[str, Any]] = {name: {} for name in GROUPS}
        owner = {f.name: group for group, spec in GROUPS.items() for f in fields(spec)}
        for key, value in options.items():
            if key not in owner:
                raise TypeError(f"unknown launch option {key!r}")
            groups[owner[key]][key] = value
        return cls(**{group: GROUPS[group](**values) for group, values in groups.items()})

    def flat(self) -> dict[str, Any]:
        """Every option by its flat name."""
        return {f.name: getattr(getattr(self, g), f.name) for g, spec in GROUPS.items() for f in fields(spec)}


def validate(opts: LaunchOptions) -> None:
    """Reject bad options before anything starts."""
    s, r, run = opts.search, opts.resources, opts.run
    if s.num_samples < 1:
        raise SearchError(f"--num-samples must be at least 1, got {s.num_samples}")
    if r.concurrency is not None and r.concurrency < 1:
        raise SearchError(f"--concurrency must be at least 1, got {r.concurrency}")
    if s.searcher not in SEARCHERS:
        raise unknown("searcher", s.searcher, SEARCHERS)
    if s.scheduler is not None and s.scheduler not in SCHEDULERS:
        raise unknown("scheduler", s.scheduler, SCHEDULERS)
    if s.mode not in ("max", "min"):
        raise SearchError(f"--mode must be max or min, got {s.mode!r}")
    if s.metric not in METRICS:
        raise SearchError(f"--metric must be one of {', '.join(METRICS)}; got {s.metric!r}")
    if r.cpus_per_trial <= 0:
        raise SearchError(f"--cpus-per-trial must be > 0, got {r.cpus_per_trial}")
    if r.gpus_per_trial < 0:
        raise SearchError(f"--gpus-per-trial must be >= 0, got {r.gpus_per_trial}")
    if s.max_epochs is not None and s.max_epochs < 1:
        raise SearchError(f"--max-epochs must be at least 1, got {s.max_epochs}")
    if run.resume and not run.name:
        raise SearchError("--resume needs --name: the name of the search to continue (see `search runs`)")
