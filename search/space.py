"""Search spaces: load and validate the YAML format, sample configs, compile for the searchers.

A space file maps canonical keys (see ``search.config``) to what the search may try::

    description: a line about the space
    params:
      n_hidden: {int: [1, 4]}                    # int range, inclusive
      learning_rate: {float: [1e-4, 1e-1], log: true}
      optimizer: {choice: [sgd, momentum, adam]}
      batch_size: 32                             # fixed
      activation+initializer:                    # coupled keys: one choice of pairs
        choice: [[selu, lecun_normal], [relu, he_normal]]
      dropout: {float: [0.0, 0.4], when: {n_hidden: [2, 3]}}   # explicit condition

Conditions from the vocabulary (``config.RULES``) are added on their own: ``momentum`` is only
sampled for the momentum optimizers, ``bn_momentum`` only with batch norm, each schedule knob
only with its schedule, and ``dropout_kind: alpha`` only with ``selu``.

Internally a space is a list of *nodes* in dependency order. A node is what a searcher
samples: a choice (by string label), an int or a float range, or a fixed value. Each node sets
one or more canonical keys, and is active only when its conditions on earlier choice nodes hold.
``Space.assemble`` turns node values from any searcher into a trial config.
"""

from __future__ import annotations

import importlib.resources
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from search import config as vocab
from search.errors import SpaceError

if TYPE_CHECKING:
    import keras_tuner
    import optuna

BUILTIN_PACKAGE = "search.spaces"
COUPLE = "+"


def _label(value: Any) -> str:
    """A choice option's string label: how searchers see it."""
    if isinstance(value, tuple):
        return "/".join(_label(v) for v in value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Condition:
    """Active only when the node ``node`` has one of the labels in ``labels``."""

    node: str
    labels: frozenset[str]


@dataclass
class Node:
    """One sampled dimension of a space."""

    name: str
    keys: tuple[str, ...]
    kind: str  # "choice", "int", "float" or "fixed"
    options: tuple[Any, ...] = ()  # choice options (tuples for coupled keys), or (value,) when fixed
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    when: tuple[Condition, ...] = ()

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(_label(o) for o in self.options)

    def decode(self, value: Any) -> tuple[Any, ...]:
        """The canonical values this node's sampled ``value`` stands for, one per key."""
        if self.kind == "fixed":
            option = self.options[0]
        elif self.kind == "choice":
            labels = self.labels
            if value in labels:
                option = self.options[labels.index(value)]
            elif value in self.options:  # a raw value rather than its label
                option = value
            else:
                raise ValueError(f"{self.name}: {value!r} is not one of {', '.join(labels)}")
        elif self.kind == "int":
            option = int(round(value))
        else:
            option = float(value)
        return option if len(self.keys) > 1 else (option,)

    def sample(self, rng: random.Random) -> Any:
        """A value (a label, for choices) drawn uniformly, log-uniformly for ``log`` ranges."""
        import math

        if self.kind == "fixed":
            return None
        if self.kind == "choice":
            return rng.choice(self.labels)
        if self.kind == "int":
            if self.log:
                return int(min(self.high, math.floor(math.exp(rng.uniform(math.log(self.low), math.log(self.high + 1))))))
            return rng.randint(int(self.low), int(self.high))
        if self.log:
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.uniform(self.low, self.high)

    def describe(self) -> str:
        if self.kind == "fixed":
            text = _label(self.options[0])
        elif self.kind == "choice":
            text = "{" + ", ".join(self.labels) + "}"
        else:
            text = f"{self.kind} [{self.low:g}, {self.high:g}]" + (" log" if self.log else "")
        if self.when:
            text += "  when " + " and ".join(f"{c.node} in {{{', '.join(sorted(c.labels))}}}" for c in self.when)
        return text


@dataclass
class Space:
    """A validated search space."""

    name: str
    description: str
    nodes: list[Node]
    source: str = ""  # the YAML text, logged as an artifact
    path: str = ""

    # -- reading -------------------------------------------------------------------------
    @property
    def keys(self) -> list[str]:
        return [k for n in self.nodes for k in n.keys]

    @property
    def sampled(self) -> list[Node]:
        return [n for n in self.nodes if n.kind != "fixed"]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def is_active(self, node: Node, labels: Mapping[str, str]) -> bool:
        """Whether ``node`` is active, given the labels chosen so far for choice nodes."""
        return all(labels.get(c.node) in c.labels for c in node.when)

    # -- configs -------------------------------------------------------------------------
    def assemble(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The trial config for node values from any searcher; inactive nodes are ignored.

        ``values`` maps node names to sampled values (labels for choices); it may hold other
        entries (a searcher's own bookkeeping), which are ignored.
        """
        labels: dict[str, str] = {}
        config: dict[str, Any] = {}
        for node in self.nodes:
            if not self.is_active(node, labels):
                continue
            if node.kind == "fixed":
                raw = node.options[0]
            else:
                if node.name not in values or values[node.name] is None:
                    raise ValueError(f"no value for active dimension {node.name!r}")
                raw = values[node.name]
            decoded = node.decode(raw)
            if node.kind in ("choice", "fixed"):
                labels[node.name] = _label(decoded if len(node.keys) > 1 else decoded[0])
            for key, value in zip(node.keys, decoded, strict=True):
                config.setdefault(key, value)  # a key split over conditional nodes: first active wins
        return config

    def sample(self, seed: int | random.Random | None = None) -> dict[str, Any]:
        """One config drawn at random; the same seed gives the same config."""
        rng = seed if isinstance(seed, random.Random) else random.Random(seed)
        values: dict[str, Any] = {}
        labels: dict[str, str] = {}
        for node in self.nodes:
            if not self.is_active(node, labels):
                continue
            values[node.name] = node.sample(rng)
            if node.kind == "choice":
                labels[node.name] = values[node.name]
            elif node.kind == "fixed":
                labels[node.name] = node.labels[0]
        return self.assemble(values)

    def samples(self, n: int, seed: int | None = None) -> list[dict[str, Any]]:
        rng = random.Random(seed)
        return [self.sample(rng) for _ in range(n)]

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Raise ``SpaceError`` unless ``config`` is a point of this space (and obeys the vocabulary)."""
        from search.errors import ConfigError

        try:
            vocab.check_config(config)
        except ConfigError as err:
            raise SpaceError(f"space {self.name}: {err}") from None
        labels: dict[str, str] = {}
        expected: set[str] = set()
        for node in self.nodes:
            if not self.is_active(node, labels):
                continue
            got = tuple(config.get(k) for k in node.keys)
            if any(k not in config for k in node.keys):
                raise SpaceError(f"space {self.name}: config lacks {', '.join(node.keys)} (active: {node.describe()})")
            expected.update(node.keys)
            value = got if len(got) > 1 else got[0]
            if node.kind in ("choice", "fixed"):
                if _label(value) not in node.labels:
                    raise SpaceError(f"space {self.name}: {node.name}={_label(value)} is not one of {', '.join(node.labels)}")
                labels[node.name] = _label(value)
            elif not (node.low <= value <= node.high) or (node.kind == "int" and value != int(value)):
                raise SpaceError(f"space {self.name}: {node.name}={value} is outside {node.describe()}")
        extra = set(config) - expected
        if extra:
            raise SpaceError(f"space {self.name}: config sets {', '.join(sorted(extra))}, which the space leaves inactive")

    # -- compilers -----------------------------------------------------------------------
    def to_ray(self) -> dict[str, Any]:
        """A Ray Tune ``param_space``: one domain per node; ``assemble`` drops the inactive ones.

        Ray's ``sample_from`` cannot be seeded by the searcher, so conditional nodes are
        sampled unconditionally and ignored when inactive: random search draws the same
        distribution of configs either way.
        """
        from ray import tune

        space: dict[str, Any] = {}
        for node in self.sampled:
            if node.kind == "choice":
                space[node.name] = tune.choice(list(node.labels))
            elif node.kind == "int":
                lo, hi = int(node.low), int(node.high) + 1
                space[node.name] = tune.lograndint(lo, hi) if node.log else tune.randint(lo, hi)
            else:
                space[node.name] = tune.loguniform(node.low, node.high) if node.log else tune.uniform(node.low, node.high)
        return space

    def to_optuna(self) -> Callable[[optuna.Trial], None]:
        """An Optuna define-by-run function: only active nodes are suggested, so conditions are real."""
        return OptunaDefineByRun(self)

    def to_keras_tuner(self) -> keras_tuner.HyperParameters:
        """``keras_tuner.HyperParameters`` with conditional scopes for conditional nodes."""
        import contextlib

        import keras_tuner

        hp = keras_tuner.HyperParameters()
        for node in self.sampled:
            with contextlib.ExitStack() as stack:
                for cond in node.when:  # conditions only ever test choice nodes
                    parent = self.node(cond.node)
                    stack.enter_context(hp.conditional_scope(cond.node, [lb for lb in parent.labels if lb in cond.labels]))
                if node.kind == "choice":
                    hp.Choice(node.name, list(node.labels), ordered=False)
                elif node.kind == "int":
                    hp.Int(node.name, int(node.low), int(node.high), sampling="log" if node.log else "linear")
                else:
                    hp.Float(node.name, node.low, node.high, sampling="log" if node.log else "linear")
        return hp

    def describe(self) -> str:
        width = max((len(n.name) for n in self.nodes), default=0)
        lines = [f"{self.name}: {self.description}".rstrip(": ")]
        lines += [f"  {n.name:<{width}}  {n.describe()}" for n in self.nodes]
        return "\n".join(lines)


@dataclass
class OptunaDefineByRun:
    """The define-by-run function of a space; a class so Ray can pickle the searcher."""

    space: Space

    def __call__(self, trial: optuna.Trial) -> None:
        labels: dict[str, str] = {}
        for node in self.space.nodes:
            if not self.space.is_active(node, labels):
                continue
            if node.kind == "fixed":
                labels[node.name] = node.labels[0]
            elif node.kind == "choice":
                labels[node.name] = trial.suggest_categorical(node.name, list(node.labels))
            elif node.kind == "int":
                trial.suggest_int(node.name, int(node.low), int(node.high), log=node.log)
            else:
                trial.suggest_float(node.name, node.low, node.high, log=node.log)


# ----------------------------------------------------------------------------------------
# Loading and validation
# ----------------------------------------------------------------------------------------


def builtin_names() -> list[str]:
    """Names of the spaces that ship with the package."""
    root = importlib.resources.files(BUILTIN_PACKAGE)
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_space(name_or_path: str | Path) -> Space:
    """Load a built-in space by name, or a space file by path, and validate it."""
    text_name = str(name_or_path)
    path = Path(text_name).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise SpaceError(f"no such space file: {text_name}; give a YAML path or one of {', '.join(builtin_names())}")
        return parse_space(path.read_text(), name=path.stem, origin=str(path))
    if text_name not in builtin_names():
        raise SpaceError(f"unknown space {text_name!r}; built-in spaces: {', '.join(builtin_names())} (or give a .yaml path)")
    text = importlib.resources.files(BUILTIN_PACKAGE).joinpath(f"{text_name}.yaml").read_text()
    return parse_space(text, name=text_name, origin=f"spaces/{text_name}.yaml")


def parse_space(text: str, *, name: str = "space", origin: str = "<string>") -> Space:
    """Parse and validate the YAML text of a space. Errors name ``origin`` and the key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpaceError(f"{origin}:{where}: malformed YAML: {problem}") from None
    return _Builder(origin, name).build(data, text)


@dataclass
class _Builder:
    origin: str
    name: str
    nodes: dict[str, Node] = field(default_factory=dict)
    key_node: dict[str, str] = field(default_factory=dict)

    def fail(self, where: str, message: str) -> SpaceError:
        return SpaceError(f"{self.origin}: {where}: {message}" if where else f"{self.origin}: {message}")

    def build(self, data: Any, text: str) -> Space:
        if not isinstance(data, dict):
            raise self.fail("", "a space file is a mapping with a 'params' mapping (and an optional 'description')")
        unknown = set(data) - {"description", "params", "name"}
        if unknown:
            raise self.fail("", f"unknown top-level field(s) {', '.join(sorted(map(str, unknown)))}; expected description, params")
        params = data.get("params")
        if not isinstance(params, dict) or not params:
            raise self.fail("params", "must be a non-empty mapping of canonical keys to a value, a choice or a range")
        explicit_when: dict[str, Any] = {}
        allow: dict[str, Any] = {}
        for raw_name, spec in params.items():
            name = str(raw_name)
            keys = tuple(k.strip() for k in name.split(COUPLE))
            for key in keys:
                if key not in vocab.KEYS:
                    raise self.fail(name, f"unknown key {key!r}; known keys: {', '.join(vocab.KEYS)}")
                if key in self.key_node:
                    raise self.fail(name, f"key {key!r} is already set by {self.key_node[key]!r}")
            node, when, node_allow = self._node(name, keys, spec)
            self.nodes[name] = node
            for key in keys:
                self.key_node[key] = name
            explicit_when[name] = when
            if node_allow:
                allow[name] = node_allow
        # Conditions need every node, so they are resolved in a second pass.
        for name, node in self.nodes.items():
            node.when = self._conditions(node, explicit_when[name])
        expanded = self._option_rules(allow)
        ordered = self._order(expanded)
        return Space(name=self.name, description=str(data.get("description", "")).strip(), nodes=ordered, source=text, path=self.origin)

    # -- one entry -----------------------------------------------------------------------
    def _node(self, name: str, keys: tuple[str, ...], spec: Any) -> tuple[Node, Any, Any]:
        coupled = len(keys) > 1
        if not isinstance(spec, dict):
            value = tuple(spec) if coupled and isinstance(spec, list) else spec
            return Node(name, keys, "fixed", options=(self._check_option(name, keys, value),)), None, None
        spec = dict(spec)
        when = spec.pop("when", None)
        node_allow = spec.pop("allow", None)
        log = spec.pop("log", False)
        if not isinstance(log, bool):
            raise self.fail(name, f"log must be true or false, got {log!r}")
        kinds = [k for k in ("fixed", "choice", "int", "float") if k in spec]
        extra = set(spec) - {"fixed", "choice", "int", "float"}
        if extra or len(kinds) != 1:
            raise self.fail(
                name,
                "give exactly one of fixed, choice, int or float (with optional log, when, allow)"
                + (f"; unknown field(s) {', '.join(sorted(map(str, extra)))}" if extra else ""),
            )
        kind = kinds[0]
        body = spec[kind]
        if kind in ("int", "float") and coupled:
            raise self.fail(name, "coupled keys take a choice (or a fixed list), not a range")
        if node_allow is not None and kind != "choice":
            raise self.fail(name, "allow only applies to a choice")
        if kind == "fixed":
            value = tuple(body) if coupled and isinstance(body, list) else body
            return Node(name, keys, "fixed", options=(self._check_option(name, keys, value),)), when, None
        if kind == "choice":
            if not isinstance(body, list) or not body:
                raise self.fail(name, "choice must be a non-empty list of options")
            options = tuple(
                self._check_option(name, keys, tuple(o) if coupled and isinstance(o, list) else o) for o in body
            )
            if len({_label(o) for o in options}) != len(options):
                raise self.fail(name, "choice lists the same option twice")
            if log:
                raise self.fail(name, "log only applies to int and float ranges")
            return Node(name, keys, "choice", options=options), when, node_allow
        return self._range(name, keys[0], kind, body, log), when, None

    def _range(self, name: str, key: str, kind: str, body: Any, log: bool) -> Node:
        spec = vocab.KEYS[key]
        if not isinstance(body, list) or len(body) != 2:
            raise self.fail(name, f"{kind} takes [low, high], got {body!r}")
        low, high = body
        bad = [v for v in (low, high) if isinstance(v, bool) or not isinstance(v, (int, float))]
        if bad:
            raise self.fail(name, f"{kind} bounds must be numbers, got {bad[0]!r}")
        if kind == "int" and not all(float(v).is_integer() for v in (low, high)):
            raise self.fail(name, f"int bounds must be integers, got [{low}, {high}]")
        if kind == "int" and spec.kind is not int:
            raise self.fail(name, f"{key} is a {spec.kind.__name__}; use {spec.kind.__name__ if spec.kind is float else 'choice'}")
        if kind == "float" and spec.kind is not float:
            raise self.fail(name, f"{key} is a {spec.kind.__name__}; use {'int' if spec.kind is int else 'choice'}")
        if low > high:
            raise self.fail(name, f"low <= high must hold, but got low={low}, high={high}")
        if log and low <= 0:
            raise self.fail(name, f"a log range needs low > 0, but got low={low}")
        for v in (low, high):
            value = int(v) if kind == "int" else float(v)
            if not spec.accepts(value):
                raise self.fail(name, f"bound {v} is outside the domain of {key}: {spec.describe()}")
        return Node(name, (key,), kind, low=float(low), high=float(high), log=log)

    def _check_option(self, name: str, keys: tuple[str, ...], option: Any) -> Any:
        """``option`` validated against each key's domain, ints widened to float for float keys."""
        coupled = len(keys) > 1
        if coupled and (not isinstance(option, tuple) or len(option) != len(keys)):
            raise self.fail(name, f"each option must list {len(keys)} values ({', '.join(keys)}), got {option!r}")
        out = []
        for key, value in zip(keys, option if coupled else (option,), strict=True):
            spec = vocab.KEYS[key]
            if spec.kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not spec.accepts(value):
                raise self.fail(name, f"{value!r} is not a valid {key}: {key} must be {spec.describe()}")
            out.append(value)
        return tuple(out) if coupled else out[0]

    # -- conditions ----------------------------------------------------------------------
    def _possible(self, key: str) -> tuple[str | None, list[tuple[str, Any]]]:
        """The node that sets ``key`` (None if the key is not in the space), with (label, key value) pairs."""
        node_name = self.key_node.get(key)
        if node_name is None:
            return None, [(_label(vocab.DEFAULTS[key]), vocab.DEFAULTS[key])]
        node = self.nodes[node_name]
        if node.kind in ("int", "float"):
            return node_name, []
        index = node.keys.index(key)
        return node_name, [(_label(o), o[index] if len(node.keys) > 1 else o) for o in node.options]

    def _condition(self, where: str, key: str, allowed: Sequence[Any], negate: bool = False) -> Condition | None:
        """A condition "``key`` in ``allowed``" on the node that sets ``key``; None if it always holds."""
        if key not in vocab.KEYS:
            raise self.fail(where, f"condition on unknown key {key!r}")
        node_name, options = self._possible(key)
        if node_name is not None and not options:
            raise self.fail(where, f"conditions can only test choice or fixed keys, and {key} is a range")
        allowed_labels = {_label(a) for a in allowed}
        matches = {label for label, value in options if (_label(value) in allowed_labels) != negate}
        text = ("not " if negate else "") + "in {" + ", ".join(sorted(allowed_labels)) + "}"
        if not matches:
            possible = ", ".join(sorted({_label(v) for _, v in options}))
            raise self.fail(where, f"the condition {key} {text} can never hold ({key} can only be {possible}); "
                            "remove the key or widen the condition")
        if node_name is None or len(matches) == len(options):
            return None
        if self.nodes[node_name].kind == "fixed":
            return None
        return Condition(node_name, frozenset(matches))

    def _conditions(self, node: Node, explicit: Any) -> tuple[Condition, ...]:
        conds: list[Condition] = []
        for key in node.keys:
            rule = vocab.RULES_BY_KEY.get(key)
            if rule is not None:
                cond = self._condition(node.name, rule.on, rule.values)
                if cond is not None:
                    conds.append(cond)
        if explicit is not None:
            if not isinstance(explicit, dict) or not explicit:
                raise self.fail(node.name, "when must map keys to a value, a list of values, or {not: values}")
            for key, allowed in explicit.items():
                negate = isinstance(allowed, dict)
                if negate:
                    if set(allowed) != {"not"}:
                        raise self.fail(node.name, f"when: {key}: the only operator is 'not', got {allowed!r}")
                    allowed = allowed["not"]
                values = allowed if isinstance(allowed, list) else [allowed]
                cond = self._condition(node.name, str(key), values, negate)
                if cond is not None:
                    conds.append(cond)
        for cond in conds:
            if cond.node == node.name:
                raise self.fail(node.name, "a key cannot depend on itself")
        merged = _merge(conds)
        for cond in merged:
            if not cond.labels:
                raise self.fail(node.name, f"its conditions on {cond.node} contradict each other and can never all hold")
        return tuple(merged)

    def _option_rules(self, allow: dict[str, Any]) -> list[Node]:
        """Split choice nodes whose options hold only under conditions (alpha dropout with selu)."""
        rules: dict[str, list[tuple[Any, str, list[Any]]]] = {}
        for orule in vocab.OPTION_RULES:
            name = self.key_node.get(orule.key)
            if name is not None and self.nodes[name].kind in ("choice", "fixed"):
                rules.setdefault(name, []).append((orule.option, orule.on, list(orule.values)))
        for name, spec in allow.items():
            if not isinstance(spec, dict):
                raise self.fail(name, "allow maps an option to a condition, e.g. {alpha: {activation: selu}}")
            for option, cond in spec.items():
                if not isinstance(cond, dict) or len(cond) != 1:
                    raise self.fail(name, f"allow: {option}: give one condition, e.g. {{activation: selu}}")
                (on, values), = cond.items()
                rules.setdefault(name, []).append((option, str(on), values if isinstance(values, list) else [values]))
        out: list[Node] = []
        for name, node in self.nodes.items():
            parts = self._split(node, rules[name]) if name in rules else [node]
            if len(parts) > 1 and any(c.node == name for n in self.nodes.values() for c in n.when):
                raise self.fail(name, "other keys cannot depend on a key whose options depend on a third key")
            out.extend(parts)
        return out

    def _split(self, node: Node, rules: list[tuple[Any, str, list[Any]]]) -> list[Node]:
        ons = {on for _, on, _ in rules}
        if len(ons) != 1:
            raise self.fail(node.name, "options of one key may only depend on one other key")
        on = ons.pop()
        on_node, on_options = self._possible(on)
        if on_node is not None and not on_options:
            raise self.fail(node.name, f"option conditions can only test choice or fixed keys, and {on} is a range")
        labels = node.labels
        # For each value of the key the options depend on, which of this node's options hold?
        groups: dict[tuple[int, ...], set[str]] = {}
        for on_label, on_value in on_options:
            ok = tuple(
                i for i, opt in enumerate(node.options)
                if all(_label(on_value) in {_label(v) for v in vals} for o, _, vals in rules if _label(o) == labels[i])
            )
            groups.setdefault(ok, set()).add(on_label)
        if () in groups:
            values = ", ".join(sorted(_label(v) for lb, v in on_options if lb in groups[()]))
            raise self.fail(node.name, f"no option of {node.name} is allowed when {on} is {values}; add an option that holds there")
        if len(groups) == 1:  # the same options hold whatever the other key is (always so when it is fixed)
            (ok,) = groups
            node.options = tuple(node.options[i] for i in ok)
            return [node]
        out = []
        on_values = dict(on_options)
        for i, (ok, on_labels) in enumerate(sorted(groups.items(), reverse=True)):
            options = tuple(node.options[j] for j in ok)
            shown = ",".join(sorted({_label(on_values[lb]) for lb in on_labels}))
            sub = Node(
                name=node.name if i == 0 else f"{node.name}[{on}={shown}]",
                keys=node.keys,
                kind="choice" if len(options) > 1 else "fixed",
                options=options,
                when=tuple(_merge([*node.when, Condition(on_node, frozenset(on_labels))])),
            )
            out.append(sub)
        return out

    def _order(self, nodes: list[Node]) -> list[Node]:
        """Nodes in dependency order (file order among independent nodes)."""
        by_name = {n.name: n for n in nodes}
        done: list[Node] = []
        seen: set[str] = set()
        visiting: set[str] = set()

        def visit(node: Node) -> None:
            if node.name in seen:
                return
            if node.name in visiting:
                raise self.fail(node.name, "conditions form a cycle")
            visiting.add(node.name)
            for cond in node.when:
                visit(by_name[cond.node])
            visiting.discard(node.name)
            seen.add(node.name)
            done.append(node)

        for node in nodes:
            visit(node)
        return done


def _merge(conds: list[Condition]) -> list[Condition]:
    """Conditions on the same node intersect."""
    merged: dict[str, frozenset[str]] = {}
    for cond in conds:
        merged[cond.node] = merged[cond.node] & cond.labels if cond.node in merged else cond.labels
    return [Condition(n, lbls) for n, lbls in merged.items()]
