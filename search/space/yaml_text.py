"""Reading a space file's YAML: PyYAML's safe loader, with a key given twice refused.

Imports only PyYAML and ``search.errors``.
"""

from __future__ import annotations

from typing import Any

import yaml

from search.errors import SpaceError


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.safe_load``, but a key given twice in one mapping is an error: YAML keeps the last one
    silently, so ``n_hidden`` given as a range and again as a fixed value would search nothing."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key!r} is given twice (first on line {seen[key] + 1}); keep one",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str, origin: str) -> Any:
    """The data of ``text``, or a ``SpaceError`` naming ``origin`` and the line."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        kind = "" if "given twice" in problem else "malformed YAML: "
        raise SpaceError(f"{origin}:{where}: {kind}{problem}") from None
