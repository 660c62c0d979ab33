"""Search spaces: the YAML format, typed dimensions, and ``Space``.

- ``dimensions``: ``Fixed``, ``Choice``, ``IntRange``, ``FloatRange`` and their conditions;
- ``space``: ``Space``, which samples, assembles and checks configs and compiles itself for
  Ray Tune, Optuna and KerasTuner;
- ``loader``: built-in spaces and YAML files, validated with errors that name file and key.

Imports only PyYAML and the config vocabulary; the searchers' libraries load when compiling.
"""

from search.space.dimensions import AnyOf, Choice, Condition, Dimension, Fixed, FloatRange, IntRange, label
from search.space.loader import BUILTIN_PACKAGE, builtin_names, load_space, parse_space
from search.space.space import OptunaDefineByRun, Space

__all__ = [
    "BUILTIN_PACKAGE", "AnyOf", "Choice", "Condition", "Dimension", "Fixed", "FloatRange", "IntRange",
    "OptunaDefineByRun", "Space", "builtin_names", "label", "load_space", "parse_space",
]
