"""The YAML format of a space: load a built-in space or a file, and validate it into a ``Space``.

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
sampled for the momentum optimizers, ``bn_momentum`` only with batch norm (hidden or on the
inputs), each schedule knob only with its schedule, and ``dropout_kind: alpha`` only with
``selu``. Errors name the file and the key.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search import config as vocab
from search.errors import SpaceError
from search.space.dimensions import (
    AnyOf,
    Choice,
    Condition,
    Dimension,
    Fixed,
    FloatRange,
    IntRange,
    When,
    label,
)
from search.space.space import Space
from search.space.yaml_text import read_yaml

BUILTIN_PACKAGE = "search.spaces"
COUPLE = "+"


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
    return _Builder(origin, name).build(read_yaml(text, origin), text)


@dataclass
class _Builder:
    origin: str
    name: str
    nodes: dict[str, Dimension] = field(default_factory=dict)
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
        return Space(name=self.name, description=str(data.get("description", "")).strip(), dimensions=ordered, source=text,
                     path=self.origin)

    # -- one entry -----------------------------------------------------------------------
    def _node(self, name: str, keys: tuple[str, ...], spec: Any) -> tuple[Dimension, Any, Any]:
        coupled = len(keys) > 1
        if not isinstance(spec, dict):
            value = tuple(spec) if coupled and isinstance(spec, list) else spec
            return Fixed(name, keys, options=(self._check_option(name, keys, value),)), None, None
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
            return Fixed(name, keys, options=(self._check_option(name, keys, value),)), when, None
        if kind == "choice":
            if not isinstance(body, list) or not body:
                raise self.fail(name, "choice must be a non-empty list of options")
            options = tuple(
                self._check_option(name, keys, tuple(o) if coupled and isinstance(o, list) else o) for o in body
            )
            if len({label(o) for o in options}) != len(options):
                raise self.fail(name, "choice lists the same option twice")
            if log:
                raise self.fail(name, "log only applies to int and float ranges")
            return Choice(name, keys, options=options), when, node_allow
        return self._range(name, keys[0], kind, body, log), when, None

    def _range(self, name: str, key: str, kind: str, body: Any, log: bool) -> Dimension:
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
        cls = IntRange if kind == "int" else FloatRange
        return cls(name, (key,), low=float(low), high=float(high), log=log)

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
            return None, [(label(vocab.DEFAULTS[key]), vocab.DEFAULTS[key])]
        node = self.nodes[node_name]
        if not node.categorical:
            return node_name, []
        index = node.keys.index(key)
        return node_name, [(label(o), o[index] if len(node.keys) > 1 else o) for o in node.options]

    def _condition(self, where: str, key: str, allowed: Sequence[Any], negate: bool = False) -> Condition | None:
        """A condition "``key`` in ``allowed``" on the node that sets ``key``; None if it always holds."""
        if key not in vocab.KEYS:
            raise self.fail(where, f"condition on unknown key {key!r}")
        node_name, options = self._possible(key)
        if node_name is not None and not options:
            raise self.fail(where, f"conditions can only test choice or fixed keys, and {key} is a range")
        allowed_labels = {label(a) for a in allowed}
        matches = {lb for lb, value in options if (label(value) in allowed_labels) != negate}
        text = ("not " if negate else "") + "in {" + ", ".join(sorted(allowed_labels)) + "}"
        if not matches:
            possible = ", ".join(sorted({label(v) for _, v in options}))
            raise self.fail(where, f"the condition {key} {text} can never hold ({key} can only be {possible}); "
                            "remove the key or widen the condition")
        if node_name is None or len(matches) == len(options):
            return None
        if not self.nodes[node_name].sampled:
            return None
        return Condition(node_name, frozenset(matches))

    def _rule_condition(self, where: str, rule: vocab.Rule) -> When | None:
        """The condition a vocabulary rule puts on a key: one alternative, or any of several."""
        if len(rule.when) == 1:
            (on, values), = rule.when
            return self._condition(where, on, values)
        alternatives: list[Condition] = []
        for on, values in rule.when:
            try:
                cond = self._condition(where, on, values)
            except SpaceError:  # this alternative can never hold; another may
                continue
            if cond is None:
                return None  # an alternative that always holds: no condition at all
            alternatives.append(cond)
        if not alternatives:
            text = " or ".join(f"{on} in {{{', '.join(sorted(label(v) for v in vs))}}}" for on, vs in rule.when)
            raise self.fail(where, f"the condition {text} can never hold; remove the key or widen the condition")
        return alternatives[0] if len(alternatives) == 1 else AnyOf(tuple(alternatives))

    def _conditions(self, node: Dimension, explicit: Any) -> tuple[When, ...]:
        conds: list[When] = []
        for key in node.keys:
            rule = vocab.RULES_BY_KEY.get(key)
            if rule is not None:
                cond = self._rule_condition(node.name, rule)
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
            if node.name in cond.nodes:
                raise self.fail(node.name, "a key cannot depend on itself")
        merged = _merge(conds)
        for cond in merged:
            if isinstance(cond, Condition) and not cond.labels:
                raise self.fail(node.name, f"its conditions on {cond.node} contradict each other and can never all hold")
        return tuple(merged)

    def _option_rules(self, allow: dict[str, Any]) -> list[Dimension]:
        """Split choice nodes whose options hold only under conditions (alpha dropout with selu)."""
        rules: dict[str, list[tuple[Any, str, list[Any]]]] = {}
        for orule in vocab.OPTION_RULES:
            name = self.key_node.get(orule.key)
            if name is not None and self.nodes[name].categorical:
                rules.setdefault(name, []).append((orule.option, orule.on, list(orule.values)))
        for name, spec in allow.items():
            if not isinstance(spec, dict):
                raise self.fail(name, "allow maps an option to a condition, e.g. {alpha: {activation: selu}}")
            for option, cond in spec.items():
                if not isinstance(cond, dict) or len(cond) != 1:
                    raise self.fail(name, f"allow: {option}: give one condition, e.g. {{activation: selu}}")
                (on, values), = cond.items()
                rules.setdefault(name, []).append((option, str(on), values if isinstance(values, list) else [values]))
        out: list[Dimension] = []
        for name, node in self.nodes.items():
            parts = self._split(node, rules[name]) if name in rules else [node]
            if len(parts) > 1 and any(name in c.nodes for n in self.nodes.values() for c in n.when):
                raise self.fail(name, "other keys cannot depend on a key whose options depend on a third key")
            out.extend(parts)
        return out

    def _split(self, node: Any, rules: list[tuple[Any, str, list[Any]]]) -> list[Dimension]:
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
                if all(label(on_value) in {label(v) for v in vals} for o, _, vals in rules if label(o) == labels[i])
            )
            groups.setdefault(ok, set()).add(on_label)
        if () in groups:
            values = ", ".join(sorted(label(v) for lb, v in on_options if lb in groups[()]))
            raise self.fail(node.name, f"no option of {node.name} is allowed when {on} is {values}; add an option that holds there")
        if len(groups) == 1:  # the same options hold whatever the other key is (always so when it is fixed)
            (ok,) = groups
            node.options = tuple(node.options[i] for i in ok)
            return [node]
        out = []
        on_values = dict(on_options)
        for i, (ok, on_labels) in enumerate(sorted(groups.items(), reverse=True)):
            options = tuple(node.options[j] for j in ok)
            shown = ",".join(sorted({label(on_values[lb]) for lb in on_labels}))
            cls = Choice if len(options) > 1 else Fixed
            sub = cls(
                name=node.name if i == 0 else f"{node.name}[{on}={shown}]",
                keys=node.keys,
                options=options,
                when=tuple(_merge([*node.when, Condition(on_node, frozenset(on_labels))])),
            )
            out.append(sub)
        return out

    def _order(self, nodes: list[Dimension]) -> list[Dimension]:
        """Dimensions in dependency order (file order among independent ones)."""
        by_name = {n.name: n for n in nodes}
        done: list[Dimension] = []
        seen: set[str] = set()
        visiting: set[str] = set()

        def visit(node: Dimension) -> None:
            if node.name in seen:
                return
            if node.name in visiting:
                raise self.fail(node.name, "conditions form a cycle")
            visiting.add(node.name)
            for cond in node.when:
                for name in cond.nodes:
                    visit(by_name[name])
            visiting.discard(node.name)
            seen.add(node.name)
            done.append(node)

        for node in nodes:
            visit(node)
        return done


def _merge(conds: list[When]) -> list[When]:
    """Conditions on the same dimension intersect; alternatives (``AnyOf``) are kept as they are."""
    merged: dict[str, frozenset[str]] = {}
    rest: list[When] = []
    for cond in conds:
        if isinstance(cond, Condition):
            merged[cond.node] = merged[cond.node] & cond.labels if cond.node in merged else cond.labels
        else:
            rest.append(cond)
    return [*(Condition(n, lbls) for n, lbls in merged.items()), *rest]
