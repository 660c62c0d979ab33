"""The config vocabulary: every canonical key a trial config may hold, its domain and default.

A trial config is a flat ``dict`` of these keys. Spaces (``search.space``) define them, the
model builder (``search.model``) reads them and MLflow records them as params. Some keys
only apply under a condition on another key (``momentum`` only for the momentum optimizers,
for example); ``RULES`` states those conditions once, and both the space compiler and
``check_config`` enforce them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from search.errors import ConfigError

AUTO = "auto"
ACTIVATIONS = ("selu", "elu", "relu", "leaky_relu", "prelu", "gelu", "swish", "tanh", "sigmoid")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamax", "nadam", "adamw")
SCHEDULES = ("constant", "power", "exponential", "piecewise", "plateau", "one_cycle")
BATCH_NORM = ("none", "before", "after")
# Keras initializer names (keras.initializers.get accepts each); kept static so that
# validating a space never imports Keras.
INITIALIZERS = (
    "lecun_normal",
    "lecun_uniform",
    "he_normal",
    "he_uniform",
    "glorot_normal",
    "glorot_uniform",
    "random_normal",
    "random_uniform",
    "truncated_normal",
    "orthogonal",
    "variance_scaling",
)


@dataclass(frozen=True)
class Key:
    """One canonical key: its value type, the values it accepts, and its default."""

    name: str
    kind: type  # int, float, str or bool
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], bool] | None = None
    rule: str = ""  # the check in words, for error messages
    nullable: bool = False
    auto: bool = False  # the string "auto" is a value too: the system picks

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.auto and value == AUTO:
            return True
        if self.kind is bool:
            if not isinstance(value, bool):
                return False
        elif self.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                return False
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return False
        elif not isinstance(value, self.kind):
            return False
        if self.choices is not None and value not in self.choices:
            return False
        return self.check is None or self.check(value)

    def describe(self) -> str:
        """What the key accepts, in words."""
        if self.choices is not None:
            text = "one of " + ", ".join(str(c) for c in self.choices)
        else:
            text = f"{self.kind.__name__}" + (f" with {self.rule}" if self.rule else "")
        return text + (" (or null)" if self.nullable else "") + (" (or auto)" if self.auto else "")


def _positive(v: float) -> bool:
    return v > 0


def _non_negative(v: float) -> bool:
    return v >= 0


def _unit_open(v: float) -> bool:
    return 0 < v < 1


def _unit_half_open(v: float) -> bool:
    return 0 <= v < 1


_KEYS = (
    Key("n_hidden", int, 2, "hidden layers", check=lambda v: 1 <= v <= 64, rule="1 <= value <= 64"),
    Key("n_neurons", int, 128, "units per hidden layer (the first, with funnel)", check=_positive, rule="value > 0"),
    Key("width_shape", str, "constant", "constant width, or funnel: each layer narrower", choices=("constant", "funnel")),
    Key("activation", str, "relu", "hidden-layer activation", choices=ACTIVATIONS),
    Key("initializer", str, "he_normal", "kernel initializer", choices=INITIALIZERS),
    Key("batch_norm", str, "none", "BN placement around the activation", choices=BATCH_NORM),
    Key("input_batch_norm", bool, False, "BN right after Flatten"),
    Key("bn_momentum", float, 0.99, "BatchNormalization momentum", check=_unit_open, rule="0 < value < 1"),
    Key("dropout", float, 0.0, "dropout rate after each hidden layer", check=_unit_half_open, rule="0 <= value < 1"),
    Key("dropout_kind", str, "standard", "Dropout, or AlphaDropout (for selu)", choices=("standard", "alpha")),
    Key("l1", float, 0.0, "l1 kernel regularization factor", check=_non_negative, rule="value >= 0"),
    Key("l2", float, 0.0, "l2 kernel regularization factor", check=_non_negative, rule="value >= 0"),
    Key("max_norm", float, None, "max-norm kernel constraint", check=_positive, rule="value > 0", nullable=True),
    Key("optimizer", str, "adam", "optimizer", choices=OPTIMIZERS),
    Key("learning_rate", float, 1e-3, "initial learning rate", check=_positive, rule="value > 0"),
    Key("momentum", float, 0.9, "SGD momentum", check=_unit_half_open, rule="0 <= value < 1"),
    Key("rho", float, 0.9, "RMSprop decay", check=_unit_open, rule="0 < value < 1"),
    Key("beta_1", float, 0.9, "Adam-family first-moment decay", check=_unit_half_open, rule="0 <= value < 1"),
    Key("beta_2", float, 0.999, "Adam-family second-moment decay", check=_unit_half_open, rule="0 <= value < 1"),
    Key("weight_decay", float, 0.004, "AdamW decoupled weight decay", check=_non_negative, rule="value >= 0"),
    Key("clipnorm", float, None, "clip each gradient to this norm", check=_positive, rule="value > 0", nullable=True),
    Key("clipvalue", float, None, "clip gradient values to +-this", check=_positive, rule="value > 0", nullable=True),
    Key("lr_schedule", str, "constant", "learning-rate schedule", choices=SCHEDULES),
    Key("schedule_epochs", float, 10.0, "power/exponential/piecewise: the schedule's time constant s, in epochs",
        check=_positive, rule="value > 0"),
    Key("schedule_factor", float, 0.5, "piecewise/plateau: multiply the rate by this at each drop",
        check=_unit_open, rule="0 < value < 1"),
    Key("schedule_patience", int, 3, "plateau: epochs without val_loss improvement before a drop",
        check=_positive, rule="value > 0"),
    Key("schedule_max_lr", float, 1e-2, "one_cycle: the peak learning rate", check=_positive, rule="value > 0"),
    Key("loss", str, AUTO, "regression loss: mse, huber (delta one target std) or gaussian_nll (a mean and "
        "log-variance head); auto: mse for regression, cross-entropy for classification",
        choices=("mse", "huber", "gaussian_nll"), auto=True),
    Key("augment_shift", float, 0.0, "image inputs: shift each training image at random by up to this fraction "
        "of its height and width (Keras RandomTranslation; off at inference); auto: one pixel for image inputs, "
        "none for flat features", check=lambda v: 0 <= v < 0.5, rule="0 <= value < 0.5", auto=True),
    Key("batch_size", int, 32, "mini-batch size", check=_positive, rule="value > 0"),
    Key("standardize", bool, False, "standardize inputs with training statistics"),
    Key("epochs", int, 20, "maximum training epochs", check=_positive, rule="value > 0"),
    Key("patience", int, 5, "early-stopping patience on val_loss, in epochs", check=_positive, rule="value > 0"),
    Key("reuse_layers", int, 0, "transfer (--transfer-from): hidden layers copied from the source model",
        check=_non_negative, rule="value >= 0"),
    Key("freeze_epochs", int, 0, "transfer: epochs the copied layers stay frozen", check=_non_negative, rule="value >= 0"),
    Key("unfreeze_lr_factor", float, 0.1, "transfer: learning-rate factor once the copied layers are unfrozen",
        check=lambda v: 0 < v <= 1, rule="0 < value <= 1"),
    Key("steps_per_execution", int, AUTO, "training steps per compiled call (auto: one epoch); never changes the math",
        check=_positive, rule="value > 0", auto=True),
)

KEYS: dict[str, Key] = {k.name: k for k in _KEYS}
DEFAULTS: dict[str, Any] = {k.name: k.default for k in _KEYS}


@dataclass(frozen=True)
class Rule:
    """``key`` only applies when one of ``when`` holds: each is a key and the values it must hold."""

    key: str
    when: tuple[tuple[str, tuple[Any, ...]], ...]

    def holds(self, config: Mapping[str, Any]) -> bool:
        """Whether the rule lets ``key`` apply in ``config`` (missing keys read as their defaults)."""
        return any(config.get(on, DEFAULTS[on]) in values for on, values in self.when)

    def describe(self) -> str:
        alternatives = " or ".join(f"{on} is one of {', '.join(map(str, values))}" for on, values in self.when)
        return f"{self.key} only applies when {alternatives}"


def _rule(key: str, on: str, *values: Any) -> Rule:
    return Rule(key, ((on, values),))


@dataclass(frozen=True)
class OptionRule:
    """``key`` may only take ``option`` when ``on`` holds one of ``values``."""

    key: str
    option: Any
    on: str
    values: tuple[Any, ...]

    def describe(self) -> str:
        return f"{self.key}: {self.option} only occurs when {self.on} is one of {', '.join(map(str, self.values))}"


RULES: tuple[Rule, ...] = (
    _rule("momentum", "optimizer", "momentum", "nesterov"),
    _rule("rho", "optimizer", "rmsprop"),
    _rule("beta_1", "optimizer", "adam", "adamax", "nadam", "adamw"),
    _rule("beta_2", "optimizer", "adam", "adamax", "nadam", "adamw"),
    _rule("weight_decay", "optimizer", "adamw"),
    # Every BatchNormalization layer reads it: the hidden ones and the one on the inputs.
    Rule("bn_momentum", (("batch_norm", ("before", "after")), ("input_batch_norm", (True,)))),
    _rule("schedule_epochs", "lr_schedule", "power", "exponential", "piecewise"),
    _rule("schedule_factor", "lr_schedule", "piecewise", "plateau"),
    _rule("schedule_patience", "lr_schedule", "plateau"),
    _rule("schedule_max_lr", "lr_schedule", "one_cycle"),
)
RULES_BY_KEY: dict[str, Rule] = {r.key: r for r in RULES}

OPTION_RULES: tuple[OptionRule, ...] = (OptionRule("dropout_kind", "alpha", "activation", ("selu",)),)


def image_inputs(input_shape: tuple[int, ...]) -> bool:
    """Whether inputs of ``input_shape`` are images that ``augment_shift`` can shift: (height, width)
    or (height, width, channels); flat features are not."""
    return len(input_shape) in (2, 3)


def parse_value(key: str, text: str) -> Any:
    """Parse ``text`` (from ``--set key=text``) into a value of ``key``'s type."""
    spec = _key(key)
    lowered = text.strip().lower()
    value: Any
    if lowered in ("null", "none") and spec.nullable:
        value = None
    elif lowered == AUTO and spec.auto:
        value = AUTO
    elif spec.kind is bool:
        if lowered in ("true", "yes", "1"):
            value = True
        elif lowered in ("false", "no", "0"):
            value = False
        else:
            raise ConfigError(f"--set {key}={text}: expected true or false")
    elif spec.kind is int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"--set {key}={text}: expected an integer ({spec.describe()})") from None
    elif spec.kind is float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"--set {key}={text}: expected a number ({spec.describe()})") from None
    else:
        value = text.strip()
    if not spec.accepts(value):
        raise ConfigError(f"--set {key}={text}: {key} must be {spec.describe()}")
    return value


def _key(name: str) -> Key:
    try:
        return KEYS[name]
    except KeyError:
        raise ConfigError(f"unknown key {name!r}; known keys: {', '.join(KEYS)}") from None


def applies(key: str, config: Mapping[str, Any]) -> bool:
    """Whether ``key`` applies in ``config`` (missing keys read as their defaults)."""
    rule = RULES_BY_KEY.get(key)
    return rule is None or rule.holds(config)


def check_config(config: Mapping[str, Any]) -> None:
    """Raise ``ConfigError`` unless every key is known, every value in its domain, and every rule holds.

    A key that does not apply (``momentum`` with ``adam``) must be absent or ``None``.
    """
    for name, value in config.items():
        spec = _key(name)
        if value is None and not spec.nullable and name in RULES_BY_KEY:
            continue  # an inactive conditional key, recorded as null
        if not spec.accepts(value):
            raise ConfigError(f"{name}={value!r}: {name} must be {spec.describe()}")
    for rule in RULES:
        if config.get(rule.key) is not None and not applies(rule.key, config):
            raise ConfigError(f"{rule.key}={config[rule.key]!r} is set, but {rule.describe()}")
    if config.get("clipnorm") is not None and config.get("clipvalue") is not None:
        raise ConfigError("clipnorm and clipvalue are both set; Keras 3 optimizers take one of them, so set the other to null")
    for orule in OPTION_RULES:
        if config.get(orule.key) == orule.option and config.get(orule.on, DEFAULTS[orule.on]) not in orule.values:
            raise ConfigError(f"{orule.key}={orule.option!r} is set, but {orule.describe()}")


def resolve(config: Mapping[str, Any]) -> dict[str, Any]:
    """The full config: ``config`` over the defaults, with keys that do not apply dropped."""
    check_config(config)
    full = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None or KEYS[k].nullable}}
    return {k: v for k, v in full.items() if applies(k, full)}


class TrialConfig(Mapping[str, Any]):
    """One trial's config, checked and resolved once: every key that applies, over the defaults.

    Immutable. As a mapping it holds exactly the keys that apply (``momentum`` only for the
    momentum optimizers); attribute access reads any key, falling back to its default where it
    does not apply, which is what the model builder wants. ``TrialConfig.of`` returns a
    ``TrialConfig`` unchanged, so passing one down the calls never resolves it again.
    """

    __slots__ = ("_values",)

    def __init__(self, config: Mapping[str, Any]) -> None:
        object.__setattr__(self, "_values", resolve(config))

    @classmethod
    def of(cls, config: Mapping[str, Any]) -> TrialConfig:
        """``config`` as a ``TrialConfig``: itself if it already is one."""
        return config if isinstance(config, TrialConfig) else cls(config)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in KEYS:
            raise AttributeError(name)
        return self._values.get(name, DEFAULTS[name])

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"TrialConfig is immutable; use .replace({name}=...)")

    def __reduce__(self) -> tuple[Any, ...]:
        return (TrialConfig, (dict(self._values),))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._values) == dict(other)

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self._values.items())))

    def __repr__(self) -> str:
        return f"TrialConfig({self._values!r})"

    def replace(self, **changes: Any) -> TrialConfig:
        """A new config with ``changes`` applied (and resolved)."""
        return TrialConfig({**self._values, **changes})

    def to_dict(self) -> dict[str, Any]:
        return dict(self._values)
