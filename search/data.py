"""Datasets: the built-in registry, user files, fixed splits and input scaling.

``load_dataset`` turns a name or a path into a ``Dataset`` with three fixed splits:

- ``digits`` (the default): scikit-learn's bundled 8x8 digits, pixels scaled to [0, 1], split
  60/20/20 (train/valid/test), stratified, with a fixed seed; the splits are cached in
  ``cache_dir()`` so that later commands skip scikit-learn's import.
- ``mnist`` and ``fashion_mnist``: the four standard IDX ``.gz`` files, found in ``data_dir``,
  ``$SEARCH_DATA_DIR`` or Keras's cache, else downloaded through Keras. Pixels are scaled to
  [0, 1]; the last 1/12 of the training images (5,000 of 60,000) is the validation split and
  the ``t10k`` files are the test split.
- a ``.csv`` or ``.npz`` path: the user's own features and labels, not rescaled.

Splits never depend on a trial's seed, so every trial of a search sees the same data. Only
numpy is imported here at import time; scikit-learn and Keras are imported where needed.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import logging
import math
import os
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search.errors import DataError

logger = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist")
DEFAULT_DATASET = "digits"
SPLIT_SEED = 0  # fixed: splits are part of the dataset, never of a trial
STD_FLOOR = 1e-7

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
IDX_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
_IDX_LABELS_MAGIC = 0x00000801
_IDX_IMAGES_MAGIC = 0x00000803
# Subfolders of a data directory searched for each IDX dataset, before the directory itself.
_SUBDIRS: dict[str, tuple[str, ...]] = {
    "mnist": ("mnist",),
    "fashion_mnist": ("fashion_mnist", "fashion-mnist"),
}
_KERAS_SUBDIR = {"mnist": "mnist", "fashion_mnist": "fashion-mnist"}
_NPZ_VALID_KEYS = (("x_valid", "y_valid"), ("x_val", "y_val"))


@dataclass(frozen=True, eq=False)
class Split:
    """One split: features ``x`` (float32, one row per example) and class ids ``y`` (int64)."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"Split: {len(self.x)} rows of x but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A named dataset with fixed train/valid/test splits and ``n_classes`` classes."""

    name: str
    train: Split
    valid: Split
    test: Split
    n_classes: int
    class_names: tuple[str, ...] | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example, e.g. ``(8, 8)`` for digits."""
        return tuple(int(d) for d in self.train.x.shape[1:])

    def describe(self) -> str:
        """One line: sizes, classes and input shape."""
        return (
            f"{self.name}: {len(self.train)} train / {len(self.valid)} valid / {len(self.test)} test, "
            f"{self.n_classes} classes, input {self.input_shape}"
        )


# --------------------------------------------------------------------------- entry point


def load_dataset(
    name_or_path: str = DEFAULT_DATASET,
    *,
    data_dir: str | Path | None = None,
    target: str = "label",
) -> Dataset:
    """Load a built-in dataset by name (``DATASETS``) or a ``.csv``/``.npz`` file by path.

    ``data_dir`` is where ``mnist``/``fashion_mnist`` look for their IDX files first;
    ``target`` names the label column of a CSV file.
    """
    text = str(name_or_path).strip()
    path = Path(text).expanduser()
    if text and path.is_file():
        return _load_file(path, target=target)
    if text and path.is_dir():
        raise DataError(f"{text} is a directory; give a .csv or .npz file, or one of {', '.join(DATASETS)}")
    key = text.lower().replace("-", "_")
    if key == "digits":
        return load_digits()
    if key in ("mnist", "fashion_mnist"):
        return load_idx_dataset(key, data_dir=data_dir)
    if path.suffix or os.sep in text or "/" in text:
        raise DataError(
            f"no such dataset file: {text}; give a .csv or .npz path, or one of {', '.join(DATASETS)}"
        )
    raise DataError(f"unknown dataset {text!r}: give one of {', '.join(DATASETS)}, or a path to a .csv or .npz file")


def _load_file(path: Path, *, target: str) -> Dataset:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return load_csv(path, target=target)
    if suffix == ".npz":
        return load_npz(path)
    raise DataError(f"unsupported dataset file type {suffix or '(none)'!r}: {path}; give a .csv or .npz file")


# --------------------------------------------------------------------------- digits


def load_digits() -> Dataset:
    """scikit-learn's 8x8 digits, pixels in [0, 1], split 60/20/20 stratified with seed 0.

    The splits are cached (see ``cache_dir``): importing scikit-learn costs seconds on every
    ``search`` command, reading the cache milliseconds.
    """
    cached = _read_split_cache("digits")
    if cached is not None:
        train, valid, test = cached
    else:
        from sklearn.datasets import load_digits as sk_load_digits

        bunch = sk_load_digits()
        x = (bunch.images / 16.0).astype(np.float32)
        y = bunch.target.astype(np.int64)
        train, valid, test = _split_three(x, y, valid_fraction=0.2, test_fraction=0.2, what="digits")
        _write_split_cache("digits", (train, valid, test))
    return Dataset("digits", train, valid, test, 10, tuple(str(i) for i in range(10)))


def cache_dir() -> Path:
    """Where split caches live: ``$SEARCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/search``, else ``~/.cache/search``."""
    env = os.environ.get("SEARCH_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "search")


def _split_cache_path(name: str) -> Path:
    from importlib.metadata import version

    # The splits depend on scikit-learn's splitter and on the seed; a new version gets a new file.
    return cache_dir() / f"{name}-splits-sklearn{version('scikit-learn')}-seed{SPLIT_SEED}.npz"


def _read_split_cache(name: str) -> tuple[Split, Split, Split] | None:
    path = _split_cache_path(name)
    try:
        with np.load(path) as f:
            return tuple(Split(f[f"{part}_x"], f[f"{part}_y"]) for part in ("train", "valid", "test"))  # type: ignore[return-value]
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 (a damaged cache is rebuilt, never trusted)
        logger.info("ignoring the unreadable split cache %s (%s); rebuilding it", path, err)
        return None


def _write_split_cache(name: str, splits: tuple[Split, Split, Split]) -> None:
    path = _split_cache_path(name)
    arrays = {f"{part}_{k}": getattr(split, k) for part, split in zip(("train", "valid", "test"), splits) for k in "xy"}
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb") as f:
            np.savez(f, **arrays)
        os.replace(partial, path)  # atomic: concurrent writers leave one whole file
    except OSError as err:  # a read-only home only costs the next command the same seconds
        logger.debug("could not write the split cache %s: %s", path, err)
        with contextlib.suppress(OSError):  # a full disk must not leave half a file behind
            partial.unlink()


# --------------------------------------------------------------------------- IDX (MNIST family)


def read_idx(path: str | Path, *, kind: str) -> np.ndarray:
    """Read one IDX file of unsigned bytes (gzip-compressed or not).

    ``kind`` is ``"labels"`` (magic 0x00000801, one dimension) or ``"images"`` (magic
    0x00000803, three dimensions). Raises ``DataError`` on a bad magic number or a size that
    does not match the header.
    """
    path = Path(path)
    expected_magic = {"labels": _IDX_LABELS_MAGIC, "images": _IDX_IMAGES_MAGIC}[kind]
    raw = _read_maybe_gzip(path)
    if len(raw) < 4:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes); download it again")
    (magic,) = struct.unpack(">I", raw[:4])
    if magic != expected_magic:
        raise DataError(
            f"{path}: not an IDX {kind} file (magic number 0x{magic:08x}, expected 0x{expected_magic:08x}); "
            "download it again"
        )
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DataError(f"{path}: truncated IDX header; download it again")
    dims = struct.unpack(f">{ndim}I", raw[4:header_size])
    size = math.prod(dims)
    body = len(raw) - header_size
    if body != size:
        state = "truncated" if body < size else "longer than its header says"
        raise DataError(f"{path}: IDX file {state} ({body} data bytes, header says {size}); download it again")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(dims)


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            head = fh.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: cannot read ({exc}); download it again") from None


def load_idx_dataset(name: str, *, data_dir: str | Path | None = None) -> Dataset:
    """``mnist`` or ``fashion_mnist`` from local IDX files, Keras's cache, or a Keras download.

    Looks in ``data_dir``, then ``$SEARCH_DATA_DIR`` (each in a subfolder named after the
    dataset, then directly), then Keras's cache (``$KERAS_HOME`` or ``~/.keras``), and only then
    downloads. The last 1/12 of the training images (at least one) is the validation split:
    55,000/5,000 for the full 60,000, as in Géron's notebooks. ``t10k`` is the test split.
    """
    if name not in _SUBDIRS:
        raise DataError(f"unknown IDX dataset {name!r}: give mnist or fashion_mnist")
    arrays = _find_local_idx(name, data_dir)
    if arrays is None:
        arrays = _keras_cache(name)
    if arrays is None:
        try:
            arrays = _download(name)
        except Exception as exc:  # Keras raises bare Exception on network failure
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise DataError(f"{_missing_message(name)}; download failed: {reason}") from None
    return _idx_dataset(name, *arrays)


_Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _find_local_idx(name: str, data_dir: str | Path | None) -> _Arrays | None:
    bases: list[Path] = []
    if data_dir is not None:
        base = Path(data_dir).expanduser()
        if not base.is_dir():
            raise DataError(f"--data-dir {data_dir}: no such directory")
        bases.append(base)
    env = os.environ.get("SEARCH_DATA_DIR")
    if env:
        base = Path(env).expanduser()
        if base.is_dir():
            bases.append(base)
        else:
            logger.warning("SEARCH_DATA_DIR=%s is not a directory; ignoring it", env)
    for base in bases:
        for folder in [base / sub for sub in _SUBDIRS[name]] + [base]:
            found = _read_idx_folder(name, folder)
            if found is not None:
                return found
    return None


def _read_idx_folder(name: str, folder: Path, *, strict: bool = True) -> _Arrays | None:
    """The four IDX arrays from ``folder``; None if it holds none of the files (or, unless
    ``strict``, only some: a download into Keras's cache that stopped half way)."""
    present = [f for f in IDX_FILES if (folder / f).is_file()]
    if not present:
        return None
    missing = [f for f in IDX_FILES if f not in present]
    if missing and not strict:
        logger.info("%s: %s lacks %s; Keras will fetch them", name, folder, ", ".join(missing))
        return None
    if missing:
        raise DataError(f"{name}: {folder} lacks {', '.join(missing)}; put all four IDX files there")
    logger.info("%s: reading IDX files from %s", name, folder)
    x_train = read_idx(folder / IDX_FILES[0], kind="images")
    y_train = read_idx(folder / IDX_FILES[1], kind="labels")
    x_test = read_idx(folder / IDX_FILES[2], kind="images")
    y_test = read_idx(folder / IDX_FILES[3], kind="labels")
    return x_train, y_train, x_test, y_test


def keras_home() -> Path:
    """Keras's cache root: ``$KERAS_HOME`` or ``~/.keras``."""
    return Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser()


def _keras_cache(name: str) -> _Arrays | None:
    datasets = keras_home() / "datasets"
    found = _read_idx_folder(name, datasets / _KERAS_SUBDIR[name], strict=False)
    if found is not None or name != "mnist":
        return found
    npz = datasets / "mnist.npz"
    if not npz.is_file():
        return None
    logger.info("mnist: reading %s", npz)
    arrays = _read_npz(npz)
    keys = ("x_train", "y_train", "x_test", "y_test")
    absent = [k for k in keys if k not in arrays]
    if absent:
        raise DataError(f"{npz}: lacks {', '.join(absent)}; delete it so Keras downloads it again")
    return tuple(arrays[k] for k in keys)  # type: ignore[return-value]


def _download(name: str) -> _Arrays:
    """Download through ``keras.datasets.<name>.load_data()`` (into Keras's cache)."""
    import contextlib
    import importlib
    import sys

    logger.info("%s: not found locally; downloading through Keras", name)
    module = importlib.import_module(f"keras.datasets.{name}")
    with contextlib.redirect_stdout(sys.stderr):  # Keras prints progress; stdout is for results
        (x_train, y_train), (x_test, y_test) = module.load_data()
    return x_train, y_train, x_test, y_test


def _missing_message(name: str) -> str:
    cache = keras_home() / "datasets"
    text = (
        f"{name}: no data found. Put {', '.join(IDX_FILES)} in --data-dir DIR "
        f"(or $SEARCH_DATA_DIR, or {cache / _KERAS_SUBDIR[name]}{os.sep})"
    )
    if name == "mnist":
        text += f", or Keras's mnist.npz in {cache}{os.sep}"
    return text


def _idx_dataset(name: str, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> Dataset:
    for x, y, part in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if len(x) != len(y):
            raise DataError(f"{name}: {part} has {len(x)} images but {len(y)} labels; the files do not belong together")
        if len(y) and int(y.max()) >= 10:
            raise DataError(f"{name}: {part} labels go up to {int(y.max())}, expected 0..9")
    if len(x_train) < 2 or len(x_test) < 1:
        raise DataError(f"{name}: need at least 2 training and 1 test image, found {len(x_train)} and {len(x_test)}")
    n_valid = max(1, len(x_train) // 12)
    cut = len(x_train) - n_valid
    x_train_f = _scale_pixels(x_train)
    x_test_f = _scale_pixels(x_test)
    y_train_i = np.asarray(y_train, dtype=np.int64)
    train = Split(x_train_f[:cut], y_train_i[:cut])
    valid = Split(x_train_f[cut:], y_train_i[cut:])
    test = Split(x_test_f, np.asarray(y_test, dtype=np.int64))
    names = FASHION_MNIST_CLASSES if name == "fashion_mnist" else tuple(str(i) for i in range(10))
    return Dataset(name, train, valid, test, 10, names)


def _scale_pixels(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.float32) / np.float32(255.0)


# --------------------------------------------------------------------------- user files


def load_csv(path: str | Path, *, target: str = "label") -> Dataset:
    """A CSV file with a header row: column ``target`` holds the labels, every other column a
    numeric feature. Labels (strings or integers) become class ids 0..K-1 in sorted order.
    Split 70/15/15, stratified where every class is large enough, seed 0. Not rescaled.
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
    y, names = _encode_labels(labels, source=f"{path}: column {target!r}")
    train, valid, test = _split_three(x, y, valid_fraction=0.15, test_fraction=0.15, what=str(path))
    return Dataset(path.stem, train, valid, test, len(names), names)


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


def load_npz(path: str | Path) -> Dataset:
    """An ``.npz`` file holding ``x``/``y`` (split 70/15/15, seed 0), or pre-split ``x_train``,
    ``y_train``, ``x_test``, ``y_test`` with optional ``x_valid``/``y_valid`` (or ``x_val``/
    ``y_val``); without them, 1/6 of train becomes the validation split. Not rescaled.
    """
    path = Path(path)
    arrays = _read_npz(path)
    if not arrays:
        raise DataError(f"{path}: empty archive; save x and y (or x_train, y_train, x_test, y_test) in it")
    pre_split = ("x_train", "y_train", "x_test", "y_test")
    if all(k in arrays for k in pre_split):
        return _npz_pre_split(path, arrays)
    if "x" in arrays and "y" in arrays:
        x = _features(path, "x", arrays["x"])
        y, names = _encode_labels(_labels_array(path, "y", arrays["y"], len(x)), source=f"{path}: y")
        train, valid, test = _split_three(x, y, valid_fraction=0.15, test_fraction=0.15, what=str(path))
        return Dataset(path.stem, train, valid, test, len(names), names)
    raise DataError(
        f"{path}: holds {', '.join(sorted(arrays)) or 'nothing'}; it needs x and y, "
        "or x_train, y_train, x_test, y_test (and optionally x_valid, y_valid)"
    )


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: cannot read as .npz ({exc}); save it with numpy.savez") from None


def _npz_pre_split(path: Path, arrays: Mapping[str, np.ndarray]) -> Dataset:
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
    joined, names = _encode_labels(np.concatenate([raw_labels[p] for p in order]), source=f"{path}: y_*")
    bounds = np.cumsum([len(raw_labels[p]) for p in order])[:-1]
    ys = dict(zip(order, np.split(joined, bounds)))
    train = Split(xs["train"], ys["train"])
    test = Split(xs["test"], ys["test"])
    if "valid" in xs:
        valid = Split(xs["valid"], ys["valid"])
    else:
        train, valid = _split_two(train.x, train.y, fraction=1 / 6, what=f"{path}: x_train")
    return Dataset(path.stem, train, valid, test, len(names), names)


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
    if y.dtype.kind == "f":
        if not np.isfinite(y).all() or not np.all(y == np.round(y)):
            raise DataError(f"{path}: {key} holds non-integer values; labels must be class ids or names")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "biuUS":
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
            keys = values
    classes, first, ids = np.unique(keys, return_index=True, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"{source} holds {len(classes)} class; classification needs at least 2")
    names = tuple(str(values[i]) for i in first)
    return ids.astype(np.int64).ravel(), names


def _try_int(values: np.ndarray) -> np.ndarray | None:
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        return None


# --------------------------------------------------------------------------- splitting


def _split_three(
    x: np.ndarray, y: np.ndarray, *, valid_fraction: float, test_fraction: float, what: str
) -> tuple[Split, Split, Split]:
    """Train/valid/test with fixed seed: test takes ceil(n * test_fraction), valid
    round(n * valid_fraction), each at least one example; stratified where possible."""
    n = len(y)
    n_test = max(1, math.ceil(n * test_fraction))
    n_valid = max(1, round(n * valid_fraction))
    if n - n_test - n_valid < 1:
        raise DataError(f"{what}: {n} examples are too few to split into train, valid and test; give at least 3")
    rest_x, test_x, rest_y, test_y = _stratified(x, y, n_test)
    train_x, valid_x, train_y, valid_y = _stratified(rest_x, rest_y, n_valid)
    return Split(train_x, train_y), Split(valid_x, valid_y), Split(test_x, test_y)


def _split_two(x: np.ndarray, y: np.ndarray, *, fraction: float, what: str) -> tuple[Split, Split]:
    """Carve ``fraction`` of the rows (at least one) off as a second split."""
    n_second = max(1, round(len(y) * fraction))
    if len(y) - n_second < 1:
        raise DataError(f"{what}: {len(y)} examples are too few to carve a validation split; give at least 2")
    a_x, b_x, a_y, b_y = _stratified(x, y, n_second)
    return Split(a_x, a_y), Split(b_x, b_y)


def _stratified(x: np.ndarray, y: np.ndarray, n_second: int) -> list[np.ndarray]:
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(x, y, test_size=n_second, stratify=y, random_state=SPLIT_SEED)
    except ValueError:
        logger.info("a class is too small to stratify %d/%d examples; splitting at random", n_second, len(y))
        return train_test_split(x, y, test_size=n_second, random_state=SPLIT_SEED)


# --------------------------------------------------------------------------- transforms


def standardize(dataset: Dataset) -> Dataset:
    """Standardize every feature with the TRAIN split's mean and standard deviation.

    Valid and test use the training statistics too, so nothing leaks from them. A feature
    whose training std is below 1e-7 (constant in train, like the corner pixels of digits)
    is only centred, not divided, so it cannot blow up in valid or test. Returns a new Dataset.
    """
    mean = dataset.train.x.mean(axis=0, dtype=np.float64)
    std = dataset.train.x.std(axis=0, dtype=np.float64)
    scale = np.where(std < STD_FLOOR, 1.0, std)

    def apply(split: Split) -> Split:
        return Split(((split.x - mean) / scale).astype(np.float32), split.y)

    return Dataset(
        dataset.name, apply(dataset.train), apply(dataset.valid), apply(dataset.test),
        dataset.n_classes, dataset.class_names,
    )


def merge_train_valid(dataset: Dataset) -> Dataset:
    """For retraining the chosen config: train becomes train + valid, and valid becomes the
    test split (test is unchanged).

    The returned valid split IS the test split, so anything tuned on it (early stopping, a
    plateau schedule) peeks at the test set: retrain for a fixed number of epochs instead.
    """
    train = Split(
        np.concatenate([dataset.train.x, dataset.valid.x]),
        np.concatenate([dataset.train.y, dataset.valid.y]),
    )
    return Dataset(dataset.name, train, dataset.test, dataset.test, dataset.n_classes, dataset.class_names)
