"""Searchers and schedulers as data: a registry entry per name, as Ray Tune's ``search/__init__.py``.

Each ``SearcherEntry`` maps a name to a lazy factory and says whether Ray must be handed the
space as a ``param_space``. Each ``SchedulerEntry`` maps a name to a lazy factory and says what
it needs: which searchers it works with, and its checkpoint policy (every k epochs, or the best
model so far and where it must be on disk). The CLI's choices, ``--help`` and the "unknown
name" errors are built from these registries, so adding one is one entry here. Ray, Optuna and
KerasTuner are imported inside the factories: importing this module is free.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from search.errors import SearchError

if TYPE_CHECKING:
    from search.space import Space
    from search.tune.warm_start import Evaluated

PBT_KEYS = ("learning_rate", "dropout", "batch_size")
ASHA_GRACE, ASHA_REDUCTION = 2, 3
HYPERBAND_REDUCTION = 3
CHECKPOINT_SHARE = 0.02  # at most this share of a trial's time goes to optional best-model checkpoints


@dataclass(frozen=True)
class Plan:
    """What a factory needs to know about the search."""

    space: Space
    metric: str
    mode: str
    seed: int
    num_samples: int
    concurrency: int
    max_t: int  # the most epochs a trial trains
    history: tuple[Evaluated, ...] = ()  # trials evaluated before (--warm-start), in this space


@dataclass(frozen=True)
class SearcherEntry:
    """A searcher: what ``--searcher NAME`` builds."""

    name: str
    help: str
    factory: Callable[[Plan], Any]
    param_space: bool = False  # Ray samples the space itself (``space.to_ray()``); else the searcher owns it
    learns: bool = True  # whether it learns from evaluated trials (--warm-start hands them over in the Plan)


@dataclass(frozen=True)
class SchedulerEntry:
    """A trial scheduler: what ``--scheduler NAME`` builds, and what it needs from the trials."""

    name: str
    help: str
    factory: Callable[[Plan], Any]
    searchers: tuple[str, ...] | None = None  # the searchers it works with; None: any
    checkpoint_every: Callable[[int], int] = lambda max_t: 0  # write a checkpoint every k epochs (0: best so far)
    checkpoint_share: float = CHECKPOINT_SHARE  # 0: write every improvement at once
    stops_at: Callable[[int], frozenset[int]] = lambda max_t: frozenset()  # epochs where it may stop a trial
    coalesce: bool = True  # whether trials may coalesce short epochs into fewer reports (it decides only at stops_at)


def unknown(kind: str, name: str, registry: Mapping[str, Any]) -> SearchError:
    """The error for a name that is not in ``registry``, listing the valid ones."""
    return SearchError(f"unknown {kind} {name!r}; choose one of {', '.join(registry)}")


# -- searchers --------------------------------------------------------------------------------
def _random(plan: Plan) -> Any:
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # TuneConfig's max_concurrent_trials does not apply to the variant generator.
    return BasicVariantGenerator(random_state=plan.seed, max_concurrent=plan.concurrency)


def _tpe(plan: Plan) -> Any:
    import warnings

    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # multivariate/group TPE
    sampler = optuna.samplers.TPESampler(seed=plan.seed, multivariate=True, group=True, n_startup_trials=8)
    if not plan.history:
        return OptunaSearch(space=plan.space.to_optuna(), metric=plan.metric, mode=plan.mode, sampler=sampler)
    # Ray's OptunaSearch takes evaluated points only for a space of distributions, not a define-by-run
    # function; a study it loads can hold them, though: the same study, with the earlier trials in it.
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="optuna", direction=f"{plan.mode}imize")
    study.add_trials(_optuna_trials(plan))
    return OptunaSearch(space=plan.space.to_optuna(), metric=plan.metric, mode=plan.mode, sampler=sampler,
                        storage=storage, study_name="optuna")


def _optuna_trials(plan: Plan) -> list[Any]:
    """The evaluated points as finished Optuna trials, with the distributions the define-by-run space gives them."""
    import optuna

    scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=plan.seed),
                                  direction=f"{plan.mode}imize")
    define = plan.space.to_optuna()
    for point in plan.history:
        scratch.enqueue_trial(point.values)
        trial = scratch.ask()
        define(trial)
        scratch.tell(trial, point.score)
    return scratch.trials


def _bayes(plan: Plan) -> Any:
    from search.tune.kerastuner import KerasTunerSearcher

    return KerasTunerSearcher(plan.space, metric=plan.metric, mode=plan.mode, seed=plan.seed,
                              max_trials=max(plan.num_samples, 1) + len(plan.history),
                              history=[(p.values, p.score) for p in plan.history])


SEARCHERS: dict[str, SearcherEntry] = {
    e.name: e
    for e in (
        SearcherEntry("random", "Ray's variant generator", _random, param_space=True, learns=False),
        SearcherEntry("tpe", "Optuna TPE", _tpe),
        SearcherEntry("bayes", "KerasTuner's Bayesian optimization", _bayes),
    )
}


# -- schedulers -------------------------------------------------------------------------------
def asha_milestones(max_t: int) -> frozenset[int]:
    """The epochs at which ASHA (as ``_asha`` sets it up) may stop a trial."""
    grace, rf = min(ASHA_GRACE, max_t), ASHA_REDUCTION
    return frozenset(grace * rf**k for k in range(64) if grace * rf**k < max_t)


def pbt_interval(max_t: int) -> int:
    return max(1, max_t // 4)


def _fifo(plan: Plan) -> Any:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()


def _asha(plan: Plan) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    # Schedulers count epochs, not reports: a report may carry several epochs (trainable.EARLIER).
    return ASHAScheduler(time_attr="epoch", max_t=plan.max_t, grace_period=min(ASHA_GRACE, plan.max_t),
                         reduction_factor=ASHA_REDUCTION)


def _hyperband(plan: Plan) -> Any:
    from ray.tune.schedulers import HyperBandScheduler

    return HyperBandScheduler(time_attr="epoch", max_t=plan.max_t, reduction_factor=HYPERBAND_REDUCTION)


def _pbt(plan: Plan) -> Any:
    from ray.tune.schedulers import PopulationBasedTraining

    mutations = plan.space.mutations(PBT_KEYS)
    if not mutations:
        raise SearchError(
            f"pbt mutates {', '.join(PBT_KEYS)}, and space {plan.space.name} samples none of them; use another --scheduler"
        )
    return PopulationBasedTraining(time_attr="epoch", perturbation_interval=pbt_interval(plan.max_t),
                                   hyperparam_mutations=mutations, synch=False)


SCHEDULERS: dict[str, SchedulerEntry] = {
    e.name: e
    for e in (
        SchedulerEntry("fifo", "every trial runs all its epochs", _fifo),
        SchedulerEntry("asha", "asynchronous successive halving", _asha, stops_at=asha_milestones),
        # HyperBand may stop or pause a trial at many points: every improvement is written at once, and
        # every epoch is reported as it comes.
        SchedulerEntry("hyperband", "HyperBand brackets", _hyperband, checkpoint_share=0.0, coalesce=False),
        # PBT explores by mutating its own population: Ray refuses a search algorithm beside it.
        # PBT acts at its perturbation interval, where every trial writes (and so reports) a checkpoint.
        SchedulerEntry("pbt", "population-based training", _pbt, searchers=("random",), checkpoint_every=pbt_interval),
    )
}


def default_scheduler(num_samples: int, concurrency: int) -> str:
    """``asha`` when trials wait for a slot (so stopping the poor ones early pays), else ``fifo``."""
    return "asha" if num_samples > concurrency else "fifo"


def make_searcher(name: str, plan: Plan) -> Any:
    """The Ray Tune search algorithm called ``name``."""
    if name not in SEARCHERS:
        raise unknown("searcher", name, SEARCHERS)
    return SEARCHERS[name].factory(plan)


def make_scheduler(name: str, plan: Plan) -> Any:
    """The Ray Tune trial scheduler called ``name``."""
    if name not in SCHEDULERS:
        raise unknown("scheduler", name, SCHEDULERS)
    return SCHEDULERS[name].factory(plan)


def choices_help(registry: Mapping[str, SearcherEntry | SchedulerEntry]) -> str:
    """``name: help; ...`` for a ``--help`` text."""
    return "; ".join(f"{e.name}: {e.help}" for e in registry.values())
