"""The user's own files: a ``.csv`` with a label column, or an ``.npz`` of arrays. Not rescaled.

The target is class labels or, for regression, numbers (``task``; ``auto`` infers it: numbers that
are not all integers, with more than ``MANY_VALUES`` distinct values, are a regression target).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from search.data.dataset import Dataset, Split
from search.data.splits import split_three, split_two
from search.errors import DataError
from search.tasks import AUTO, CLASSIFICATION, REGRESSION, get_task

MANY_VALUES = 10  # auto: more distinct non-integer numbers than this make a regression target

_NPZ_VALID_KEYS = (("x_valid", "y_valid"), ("x_val", "y_val"))


def load_csv(path: str | Path, *, target: str = "label", task: str = AUTO) -> Dataset:
    """A CSV file with a header row: column ``target`` holds the labels, every other column a
    numeric feature. Labels (strings or integers) become class ids 0..K-1 in sorted order; a
    regression target stays a number. Split 70/15/15 with seed 0 (stratified where every class is
    large enough). Not rescaled.
    """
    path = Path(path)
    header, rows = _read_csv_rows(path)
    if target not in header:
        raise DataError(
            f"{path}: no column {target!r} (columns: {', '.join(header)}); name the label column with --target"
        )
    t = header.index(target)
    features = [i for i in range(len(header)) if i != t]
    if not features:
        raise DataError(f"{path}: only the label column {target!r}; add at least one feature column")
    columns = [_numeric_column(path, header[i], [r[i] for r in rows]) for i in features]
    x = np.stack(columns, axis=1).astype(np.float32)
    labels = [r[t].strip() for r in rows]
    if any(label == "" for label in labels):
        line = labels.index("") + 2
        raise DataError(f"{path}: empty label in column {target!r} at line {line}; fill it or drop the row")
    return _dataset(path, x, np.asarray(labels), task, source=f"{path}: column {target!r}")


def _dataset(path: Path, x: np.ndarray, raw: np.ndarray, task: str, *, source: str) -> Dataset:
    """Split ``x`` and its targets ``raw`` 70/15/15 into a dataset of ``task`` (auto: inferred)."""
    task = infer_task(raw, source) if task == AUTO else task
    if get_task(task).numeric:
        y = _numbers(raw, source)
        train, valid, test = split_three(x, y, valid_fraction=0.15, test_fraction=0.15, what=str(path), stratify=False)
        return Dataset(path.stem, train, valid, test, 0, None, task=task)
    y, names = _encode_labels(raw, source=source)
    train, valid, test = split_three(x, y, valid_fraction=0.15, test_fraction=0.15, what=str(path))
    return Dataset(path.stem, train, valid, test, len(names), names)


def _as_floats(raw: np.ndarray) -> np.ndarray | None:
    """The targets as float64, or None where one is not a number."""
    values = np.char.decode(raw, "utf-8") if raw.dtype.kind == "S" else raw
    try:
        return np.asarray([float(v) for v in values], dtype=np.float64) if values.dtype.kind in "UO" else values.astype(np.float64)
    except ValueError:
        return None


def infer_task(raw: np.ndarray, source: str) -> str:
    """``regression`` for numbers that are not all integers, with more than ``MANY_VALUES`` distinct
    values; ``classification`` otherwise (names, integers); an error for a few distinct fractions."""
    numbers = _as_floats(raw)
    if numbers is None or not np.isfinite(numbers).all() or np.all(numbers == np.round(numbers)):
        return CLASSIFICATION
    distinct = len(np.unique(numbers))
    if distinct > MANY_VALUES:
        return REGRESSION
    raise DataError(f"{source} holds {distinct} distinct non-integer numbers: too few to call it a regression "
                    f"target for sure; pass --task regression for a number, or --task classification with "
                    "integer or named labels")


def _numbers(raw: np.ndarray, source: str) -> np.ndarray:
    numbers = _as_floats(raw)
    if numbers is None:
        raise DataError(f"{source} holds labels that are not numbers; a regression target must be numeric "
                        "(or drop --task regression to classify them)")
    if not np.isfinite(numbers).all():
        raise DataError(f"{source} holds NaN or infinite targets; clean them before the search")
    if len(np.unique(numbers)) < 2:
        raise DataError(f"{source} holds a single value; a regression target needs at least 2")
    return numbers.astype(np.float32)


def _read_csv_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            table = [row for row in csv.reader(fh) if row and any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})") from None
    if not table:
        raise DataError(f"{path}: empty file; give a CSV with a header row and one row per example")
    header = [h.strip() for h in table[0]]
    rows = table[1:]
    if not rows:
        raise DataError(f"{path}: a header but no rows; add one row per example")
    for n, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}: line {n} has {len(row)} fields, the header has {len(header)}")
    return header, rows


def _numeric_column(path: Path, name: str, cells: list[str]) -> np.ndarray:
    try:
        column = np.array([c.strip() for c in cells], dtype=np.float64)
    except ValueError:
        column = None
    if column is not None and np.isfinite(column).all():
        return column
    for line, cell in enumerate(cells, start=2):
        try:
            ok = math.isfinite(float(cell))
        except ValueError:
            ok = False
        if not ok:
            raise DataError(
                f"{path}: feature column {name!r} is not numeric (line {line}: {cell!r}); "
                "encode it as numbers, drop it, or name it with --target if it holds the labels"
            )
    raise AssertionError("unreachable")  # pragma: no cover


def load_npz(path: str | Path, *, task: str = AUTO) -> Dataset:
    """An ``.npz`` file holding ``x``/``y`` (split 70/15/15, seed 0), or pre-split ``x_train``,
    ``y_train``, ``x_test``, ``y_test`` with optional ``x_valid``/``y_valid`` (or ``x_val``/
    ``y_val``); without them, 1/6 of train becomes the validation split. Not rescaled.
    """
    path = Path(path)
    arrays = read_npz(path)
    if not arrays:
        raise DataError(f"{path}: empty archive; save x and y (or x_train, y_train, x_test, y_test) in it")
    pre_split = ("x_train", "y_train", "x_test", "y_test")
    if all(k in arrays for k in pre_split):
        return _npz_pre_split(path, arrays, task)
    if "x" in arrays and "y" in arrays:
        x = _features(path, "x", arrays["x"])
        return _dataset(path, x, _labels_array(path, "y", arrays["y"], len(x)), task, source=f"{path}: y")
    raise DataError(
        f"{path}: holds {', '.join(sorted(arrays)) or 'nothing'}; it needs x and y, "
        "or x_train, y_train, x_test, y_test (and optionally x_valid, y_valid)"
    )


def read_npz(path: Path) -> dict[str, np.ndarray]:
    import zipfile

    if path.is_file() and not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an .npz archive (an .npz is a zip file of arrays); save it with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read as .npz ({exc}); save it with numpy.savez") from None


def _npz_pre_split(path: Path, arrays: Mapping[str, np.ndarray], task: str) -> Dataset:
    valid_keys = next(((xk, yk) for xk, yk in _NPZ_VALID_KEYS if xk in arrays or yk in arrays), None)
    if valid_keys is not None and not all(k in arrays for k in valid_keys):
        raise DataError(f"{path}: has only one of {valid_keys[0]}/{valid_keys[1]}; save both or neither")
    parts = [("train", "x_train", "y_train"), ("test", "x_test", "y_test")]
    if valid_keys is not None:
        parts.append(("valid", *valid_keys))
    xs: dict[str, np.ndarray] = {}
    raw_labels: dict[str, np.ndarray] = {}
    for part, xk, yk in parts:
        xs[part] = _features(path, xk, arrays[xk])
        raw_labels[part] = _labels_array(path, yk, arrays[yk], len(xs[part]))
    shapes = {part: x.shape[1:] for part, x in xs.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"{path}: splits disagree on the example shape ({shapes}); save them with the same shape")
    order = list(xs)
    raw = np.concatenate([raw_labels[p] for p in order])
    source = f"{path}: y_*"
    task = infer_task(raw, source) if task == AUTO else task
    names: tuple[str, ...] | None = None
    if get_task(task).numeric:
        joined = _numbers(raw, source)
    else:
        joined, names = _encode_labels(raw, source=source)
    bounds = np.cumsum([len(raw_labels[p]) for p in order])[:-1]
    ys = dict(zip(order, np.split(joined, bounds)))
    train = Split(xs["train"], ys["train"])
    test = Split(xs["test"], ys["test"])
    if "valid" in xs:
        valid = Split(xs["valid"], ys["valid"])
    else:
        train, valid = split_two(train.x, train.y, fraction=1 / 6, what=f"{path}: x_train", stratify=names is not None)
    return Dataset(path.stem, train, valid, test, len(names or ()), names, task=task)


def _features(path: Path, key: str, x: np.ndarray) -> np.ndarray:
    if x.ndim < 2:
        raise DataError(f"{path}: {key} has shape {x.shape}; it needs one row per example, shape (n, features...)")
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: {key} has dtype {x.dtype}; it must be numeric")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: {key} holds NaN or infinite values; clean them before the search")
    return x


def _labels_array(path: Path, key: str, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise DataError(f"{path}: {key} has shape {y.shape}; it needs one class label per example, shape (n,)")
    if len(y) != n:
        raise DataError(f"{path}: {key} has {len(y)} labels for {n} examples; they must match")
    if y.dtype.kind not in "biufUS":
        raise DataError(f"{path}: {key} has dtype {y.dtype}; labels must be integers or strings")
    return y


def _encode_labels(labels: Sequence[Any] | np.ndarray, *, source: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map labels to 0..K-1 in sorted order (numeric order when every label is an integer).

    The class names are the labels as first spelled in the data.
    """
    values = np.asarray(labels)
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8")
    keys = values
    if values.dtype.kind == "U":
        keys = _try_int(values)
        if keys is None:
            _refuse_float_labels(values, source)
            keys = values
    elif values.dtype.kind == "f":
        _refuse_float_labels(values, source)
        keys = values.astype(np.int64)
    classes, first, ids = np.unique(keys, return_index=True, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{source} holds {len(classes)} class; classification needs at least 2")
    names = tuple(str(values[i]) for i in first)
    return ids.astype(np.int64).ravel(), names


REGRESSION_HINT = ("it looks like a regression target (continuous values): use --task regression, "
                   "or give class labels (names or integers)")


def _refuse_float_labels(values: np.ndarray, source: str) -> None:
    """Labels that are all numbers, some not integers, are a regression target: not hundreds of classes."""
    try:
        numbers = np.array([float(v) for v in values], dtype=np.float64)
    except ValueError:
        return  # names, such as "cat" and "dog"
    if not np.isfinite(numbers).all() or not np.all(numbers == np.round(numbers)):
        sample = ", ".join(str(v) for v in values[:3].tolist())
        raise DataError(f"{source} holds non-integer numbers ({sample}, ...): {REGRESSION_HINT}")


def _try_int(values: np.ndarray) -> np.ndarray | None:
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        return None
