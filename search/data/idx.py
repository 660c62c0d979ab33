"""The MNIST family: IDX files (gzip-compressed or not), found locally, in Keras's cache, or downloaded.

``mnist`` and ``fashion_mnist``: the four standard IDX ``.gz`` files, found in ``data_dir``,
``$SEARCH_DATA_DIR`` or Keras's cache, else downloaded through Keras. Pixels are scaled to
[0, 1]; the last 1/12 of the training images (5,000 of 60,000) is the validation split and the
``t10k`` files are the test split. Keras is imported only to download.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import struct
from pathlib import Path

import numpy as np

from search.data.dataset import Dataset, Split
from search.data.files import read_npz
from search.errors import DataError

logger = logging.getLogger(__name__)

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
    arrays = read_npz(npz)
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
