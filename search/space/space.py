"""``Space``: a validated search space, and the questions the rest of the project asks of it.

A space is a list of dimensions (``search.space.dimensions``) in dependency order. It turns
values from any searcher into a trial config (``assemble``), samples and checks configs, and
compiles itself for Ray Tune, Optuna and KerasTuner by asking each dimension for its form. It
also answers ``max_value(key)`` and ``mutations(keys)``, so the engine never reads dimensions.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from search import config as vocab
from search.errors import ConfigError, SpaceError
from search.space.dimensions import Condition, Dimension, label

if TYPE_CHECKING:
    import keras_tuner
    import optuna


@dataclass
class Space:
    """A validated search space."""

    name: str
    description: str
    dimensions: list[Dimension]
    source: str = ""  # the YAML text, logged as an artifact
    path: str = ""

    # -- reading -------------------------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        return [k for d in self.dimensions for k in d.keys]

    @property
    def sampled(self) -> list[Dimension]:
        return [d for d in self.dimensions if d.sampled]

    def dimension(self, name: str) -> Dimension:
        for d in self.dimensions:
            if d.name == name:
                return d
        raise KeyError(name)

    def max_value(self, key: str) -> Any:
        """The largest value any config of the space gives ``key`` (its default where it is not in the space)."""
        values = [d.max_value(key) for d in self.dimensions if key in d.keys]
        return max(values) if values else vocab.DEFAULTS[key]

    def check_inputs(self, input_shape: tuple[int, ...], dataset: str) -> None:
        """``SpaceError`` when the space can shift images (``augment_shift`` above 0) but ``dataset``'s
        inputs are flat features: every trial would fail, so the search is refused before one starts."""
        top = self.max_value("augment_shift")
        if top != vocab.AUTO and top > 0 and not vocab.image_inputs(tuple(input_shape)):
            raise SpaceError(f"space {self.name} sets augment_shift up to {top:g}, but the inputs of {dataset} are "
                             f"flat features (shape {tuple(input_shape)}), not images; set augment_shift: auto or 0 "
                             "in the space")

    def mutations(self, keys: Iterable[str]) -> dict[str, Any]:
        """Ray Tune domains of the unconditional one-key dimensions that set ``keys`` (what PBT mutates)."""
        wanted = set(keys)
        return {d.name: d.to_ray() for d in self.sampled if len(d.keys) == 1 and d.keys[0] in wanted and not d.when}

    def signature(self) -> list[tuple[Any, ...]]:
        """What identifies the space's sampling: equal signatures, the same space."""
        return [d.signature() for d in self.dimensions]

    def coerce(self, name: str, value: Any) -> Any:
        """A searcher's value for dimension ``name``, within its bounds and of its type."""
        return self.dimension(name).coerce(value)

    # -- configs -------------------------------------------------------------------------
    def assemble(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The trial config for dimension values from any searcher; inactive dimensions are ignored.

        ``values`` maps dimension names to sampled values (labels for choices); it may hold other
        entries (a searcher's own bookkeeping), which are ignored.
        """
        chosen: dict[str, str] = {}
        config: dict[str, Any] = {}
        for dim in self.dimensions:
            if not dim.is_active(chosen):
                continue
            if dim.sampled and (dim.name not in values or values[dim.name] is None):
                raise ValueError(f"no value for active dimension {dim.name!r}")
            decoded = dim.decode(values.get(dim.name))
            if dim.categorical:
                chosen[dim.name] = dim.label_of(decoded)
            for key, value in zip(dim.keys, decoded, strict=True):
                config.setdefault(key, value)  # a key split over conditional dimensions: first active wins
        return config

    def encode(self, config: Mapping[str, Any], *, budget: Iterable[str] = ()) -> dict[str, Any]:
        """The searcher values (dimension name -> sampled value) of a config of this space: ``assemble``'s
        inverse. A ``SpaceError`` says why a config is not a point of the space. Keys in ``budget`` that
        the space does not sample (``epochs`` under ``--max-epochs``) take the space's value first."""
        config = dict(config)
        for key in budget:
            fixed = [d for d in self.dimensions if key in d.keys and not d.sampled]
            if not any(key in d.keys for d in self.dimensions):
                config.pop(key, None)
            elif fixed and not any(key in d.keys and d.sampled for d in self.dimensions):
                config[key] = fixed[0].decode(None)[fixed[0].keys.index(key)]
        self.validate_config(config)
        values: dict[str, Any] = {}
        chosen: dict[str, str] = {}
        for dim in self.dimensions:
            if not dim.is_active(chosen):
                continue
            canonical = tuple(config[k] for k in dim.keys)
            if dim.categorical:
                chosen[dim.name] = dim.label_of(canonical)
            if dim.sampled:
                values[dim.name] = dim.encode(canonical)
        return values

    def sample(self, seed: int | random.Random | None = None) -> dict[str, Any]:
        """One config drawn at random; the same seed gives the same config."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        values: dict[str, Any] = {}
        chosen: dict[str, str] = {}
        for dim in self.dimensions:
            if not dim.is_active(chosen):
                continue
            values[dim.name] = dim.sample(rng)
            if dim.categorical:
                chosen[dim.name] = values[dim.name] if dim.sampled else dim.labels[0]
        return self.assemble(values)

    def samples(self, n: int, seed: int | None = None) -> list[dict[str, Any]]:
        rng = random.Random(seed)
        return [self.sample(rng) for _ in range(n)]

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Raise ``SpaceError`` unless ``config`` is a point of this space (and obeys the vocabulary)."""
        try:
            vocab.check_config(config)
        except ConfigError as err:
            raise SpaceError(f"space {self.name}: {err}") from None
        chosen: dict[str, str] = {}
        expected: set[str] = set()
        for dim in self.dimensions:
            if not dim.is_active(chosen):
                continue
            if any(k not in config for k in dim.keys):
                raise SpaceError(f"space {self.name}: config lacks {', '.join(dim.keys)} (active: {dim.describe()})")
            expected.update(dim.keys)
            got = tuple(config[k] for k in dim.keys)
            value = got if len(got) > 1 else got[0]
            if not dim.contains(value):
                if dim.categorical:
                    raise SpaceError(f"space {self.name}: {dim.name}={label(value)} is not one of {', '.join(dim.labels)}")
                raise SpaceError(f"space {self.name}: {dim.name}={value} is outside {dim.describe()}")
            if dim.categorical:
                chosen[dim.name] = label(value)
        extra = set(config) - expected
        if extra:
            raise SpaceError(f"space {self.name}: config sets {', '.join(sorted(extra))}, which the space leaves inactive")

    # -- compilers -----------------------------------------------------------------------
    def to_ray(self) -> dict[str, Any]:
        """A Ray Tune ``param_space``: one domain per sampled dimension; ``assemble`` drops inactive ones.

        Ray's ``sample_from`` cannot be seeded by the searcher, so conditional dimensions are
        sampled unconditionally and ignored when inactive: random search draws the same
        distribution of configs either way.
        """
        return {d.name: d.to_ray() for d in self.sampled}

    def to_optuna(self) -> Callable[[optuna.Trial], None]:
        """An Optuna define-by-run function: only active dimensions are suggested, so conditions are real."""
        return OptunaDefineByRun(self)

    def to_keras_tuner(self) -> keras_tuner.HyperParameters:
        """``keras_tuner.HyperParameters`` with conditional scopes for conditional dimensions.

        KerasTuner's scopes nest (and), so a condition with alternatives (``AnyOf``) gets no scope:
        that dimension is always declared, and ``assemble`` ignores it where it is inactive.
        """
        import keras_tuner

        hp = keras_tuner.HyperParameters()
        for dim in self.sampled:
            with contextlib.ExitStack() as stack:
                for cond in dim.when:
                    if isinstance(cond, Condition):  # conditions only ever test categorical dimensions
                        parent = self.dimension(cond.node)
                        labels = [lb for lb in parent.labels if lb in cond.labels]  # type: ignore[attr-defined]
                        stack.enter_context(hp.conditional_scope(cond.node, labels))
                dim.add_to(hp)
        return hp

    def describe(self) -> str:
        width = max((len(d.name) for d in self.dimensions), default=0)
        lines = [f"{self.name}: {self.description}".rstrip(": ")]
        lines += [f"  {d.name:<{width}}  {d.describe()}" for d in self.dimensions]
        return "\n".join(lines)


@dataclass
class OptunaDefineByRun:
    """The define-by-run function of a space; a class so Ray can pickle the searcher."""

    space: Space

    def __call__(self, trial: optuna.Trial) -> None:
        chosen: dict[str, str] = {}
        for dim in self.space.dimensions:
            if not dim.is_active(chosen):
                continue
            value = dim.suggest(trial) if dim.sampled else dim.labels[0]  # type: ignore[attr-defined]
            if dim.categorical:
                chosen[dim.name] = value
