"""The dimensions of a space, one class per kind: ``Fixed``, ``Choice``, ``IntRange``, ``FloatRange``.

A dimension is what a searcher samples. It sets one or more canonical keys (several for coupled
keys such as ``activation+initializer``), and is active only while its conditions on earlier
choice dimensions hold. Each class owns everything that depends on its kind: sampling, decoding
a searcher's value into canonical values, containment, and its Ray Tune, Optuna and KerasTuner
forms, so nothing outside ``search.space`` switches on the kind of a dimension. Ray, Optuna and
KerasTuner are imported inside the methods that need them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from search.config import AUTO

if TYPE_CHECKING:
    import keras_tuner
    import optuna


def label(value: Any) -> str:
    """A choice option's string label: how searchers see it."""
    if isinstance(value, tuple):
        return "/".join(label(v) for v in value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- conditions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Condition:
    """Holds when the dimension ``node`` took one of the labels in ``labels``."""

    node: str
    labels: frozenset[str]

    @property
    def nodes(self) -> tuple[str, ...]:
        return (self.node,)

    def holds(self, chosen: Mapping[str, str]) -> bool:
        return chosen.get(self.node) in self.labels

    def describe(self) -> str:
        return f"{self.node} in {{{', '.join(sorted(self.labels))}}}"


@dataclass(frozen=True)
class AnyOf:
    """Holds when one of its conditions holds (``bn_momentum``: hidden BN, or BN on the inputs)."""

    conditions: tuple[Condition, ...]

    @property
    def nodes(self) -> tuple[str, ...]:
        return tuple(c.node for c in self.conditions)

    def holds(self, chosen: Mapping[str, str]) -> bool:
        return any(c.holds(chosen) for c in self.conditions)

    def describe(self) -> str:
        return " or ".join(c.describe() for c in self.conditions)


When = Condition | AnyOf


# -- dimensions -------------------------------------------------------------------------------
@dataclass(eq=False)
class Dimension:
    """One dimension: its name, the keys it sets, and the conditions under which it is active."""

    name: str
    keys: tuple[str, ...]
    when: tuple[When, ...] = ()

    sampled: ClassVar[bool] = True  # whether a searcher draws it (a fixed value is not drawn)
    categorical: ClassVar[bool] = False  # whether it has labelled options that conditions can test

    def is_active(self, chosen: Mapping[str, str]) -> bool:
        """Whether it is active, given the labels chosen so far for categorical dimensions."""
        return all(c.holds(chosen) for c in self.when)

    def decode(self, value: Any) -> tuple[Any, ...]:
        """The canonical values a sampled ``value`` stands for, one per key."""
        raise NotImplementedError

    def sample(self, rng: random.Random) -> Any:
        """A value drawn at random (a label, for choices)."""
        raise NotImplementedError

    def contains(self, value: Any) -> bool:
        """Whether the canonical ``value`` (a tuple for coupled keys) is a point of this dimension."""
        raise NotImplementedError

    def coerce(self, value: Any) -> Any:
        """A searcher's ``value`` as a valid sampled value of this dimension (KerasTuner's can stray)."""
        return value

    def encode(self, value: tuple[Any, ...]) -> Any:
        """The sampled value that stands for the canonical ``value`` (one per key): ``decode``'s inverse."""
        return value[0]

    def max_value(self, key: str) -> Any:
        """The largest value this dimension gives ``key``."""
        raise NotImplementedError

    def to_ray(self) -> Any:
        """The Ray Tune search domain (also what PBT mutates within)."""
        raise NotImplementedError

    def suggest(self, trial: optuna.Trial) -> Any:
        """Suggest this dimension in an Optuna define-by-run trial; returns the suggested value."""
        raise NotImplementedError

    def add_to(self, hp: keras_tuner.HyperParameters) -> None:
        """Declare this dimension in KerasTuner ``HyperParameters`` (inside any conditional scopes)."""
        raise NotImplementedError

    def signature(self) -> tuple[Any, ...]:
        """What identifies the dimension: two spaces with equal signatures sample alike."""
        return (type(self).__name__, self.name, self.keys, self.when)

    def _describe_values(self) -> str:
        raise NotImplementedError

    def describe(self) -> str:
        text = self._describe_values()
        if self.when:
            text += "  when " + " and ".join(c.describe() for c in self.when)
        return text


@dataclass(eq=False)
class _Options(Dimension):
    """A dimension over a list of options (tuples for coupled keys)."""

    options: tuple[Any, ...] = ()
    categorical: ClassVar[bool] = True

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(label(o) for o in self.options)

    def _wrap(self, option: Any) -> tuple[Any, ...]:
        return option if len(self.keys) > 1 else (option,)

    def label_of(self, value: Any) -> str:
        """The label of a decoded (canonical) value."""
        return label(value if len(self.keys) > 1 else value[0])

    def contains(self, value: Any) -> bool:
        return label(value) in self.labels

    def encode(self, value: tuple[Any, ...]) -> Any:
        return self.label_of(value)

    def max_value(self, key: str) -> Any:
        index = self.keys.index(key)
        values = [self._wrap(o)[index] for o in self.options]
        numbers = [v for v in values if v != AUTO]  # auto only counts when it is the only value
        return max(numbers) if numbers else AUTO

    def signature(self) -> tuple[Any, ...]:
        return (*super().signature(), self.labels)


@dataclass(eq=False)
class Fixed(_Options):
    """One value, never sampled: ``options`` holds just it."""

    sampled: ClassVar[bool] = False

    @property
    def value(self) -> Any:
        return self.options[0]

    def decode(self, value: Any) -> tuple[Any, ...]:
        return self._wrap(self.options[0])

    def sample(self, rng: random.Random) -> Any:
        return None

    def _describe_values(self) -> str:
        return label(self.options[0])


@dataclass(eq=False)
class Choice(_Options):
    """One of several options, sampled by label (uniformly at random)."""

    def decode(self, value: Any) -> tuple[Any, ...]:
        labels = self.labels
        if value in labels:
            return self._wrap(self.options[labels.index(value)])
        if value in self.options:  # a raw value rather than its label
            return self._wrap(value)
        raise ValueError(f"{self.name}: {value!r} is not one of {', '.join(labels)}")

    def sample(self, rng: random.Random) -> Any:
        return rng.choice(self.labels)

    def coerce(self, value: Any) -> Any:
        return str(value)

    def to_ray(self) -> Any:
        from ray import tune

        return tune.choice(list(self.labels))

    def suggest(self, trial: optuna.Trial) -> Any:
        return trial.suggest_categorical(self.name, list(self.labels))

    def add_to(self, hp: keras_tuner.HyperParameters) -> None:
        hp.Choice(self.name, list(self.labels), ordered=False)

    def _describe_values(self) -> str:
        return "{" + ", ".join(self.labels) + "}"


@dataclass(eq=False)
class _Range(Dimension):
    """A numeric range ``[low, high]`` of one key, log-uniform with ``log``."""

    low: float = 0.0
    high: float = 0.0
    log: bool = False

    kind: ClassVar[str] = ""

    def contains(self, value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def max_value(self, key: str) -> Any:
        return self.decode(self.high)[0]

    def signature(self) -> tuple[Any, ...]:
        return (*super().signature(), self.low, self.high, self.log)

    def _describe_values(self) -> str:
        return f"{self.kind} [{self.low:g}, {self.high:g}]" + (" log" if self.log else "")


@dataclass(eq=False)
class IntRange(_Range):
    """Integers from ``low`` to ``high``, both included."""

    kind: ClassVar[str] = "int"

    def decode(self, value: Any) -> tuple[Any, ...]:
        return (int(round(value)),)

    def sample(self, rng: random.Random) -> Any:
        if self.log:
            return int(min(self.high, math.floor(math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1))))))
        return rng.randint(int(self.low), int(self.high))

    def contains(self, value: Any) -> bool:
        return super().contains(value) and value == int(value)

    def coerce(self, value: Any) -> Any:
        return int(min(max(round(float(value)), self.low), self.high))

    def to_ray(self) -> Any:
        from ray import tune

        lo, hi = int(self.low), int(self.high) + 1
        return tune.lograndint(lo, hi) if self.log else tune.randint(lo, hi)

    def suggest(self, trial: optuna.Trial) -> Any:
        return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)

    def add_to(self, hp: keras_tuner.HyperParameters) -> None:
        hp.Int(self.name, int(self.low), int(self.high), sampling="log" if self.log else "linear")


@dataclass(eq=False)
class FloatRange(_Range):
    """Floats from ``low`` to ``high``."""

    kind: ClassVar[str] = "float"

    def decode(self, value: Any) -> tuple[Any, ...]:
        return (float(value),)

    def sample(self, rng: random.Random) -> Any:
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)

    def coerce(self, value: Any) -> Any:
        return float(min(max(float(value), self.low), self.high))

    def to_ray(self) -> Any:
        from ray import tune

        return tune.loguniform(self.low, self.high) if self.log else tune.uniform(self.low, self.high)

    def suggest(self, trial: optuna.Trial) -> Any:
        return trial.suggest_float(self.name, self.low, self.high, log=self.log)

    def add_to(self, hp: keras_tuner.HyperParameters) -> None:
        hp.Float(self.name, self.low, self.high, sampling="log" if self.log else "linear")
