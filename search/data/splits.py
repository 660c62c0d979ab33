"""Fixed splits: train/valid/test with a fixed seed (stratified where possible), and the split cache.

Splits never depend on a trial's seed, so every trial of a search sees the same data.
scikit-learn is imported where a split is made, not at import time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
from pathlib import Path

import numpy as np

from search.data.dataset import Dataset, Split, merge_train_valid
from search.errors import DataError
from search.tasks import get_task

logger = logging.getLogger(__name__)

SPLIT_SEED = 0  # fixed: splits are part of the dataset, never of a trial


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


def split_three(
    x: np.ndarray, y: np.ndarray, *, valid_fraction: float, test_fraction: float, what: str, stratify: bool = True
) -> tuple[Split, Split, Split]:
    """Train/valid/test with fixed seed: test takes ceil(n * test_fraction), valid
    round(n * valid_fraction), each at least one example; stratified by class where possible
    (``stratify`` False: at random, as for a regression target)."""
    n = len(y)
    n_test = max(1, math.ceil(n * test_fraction))
    n_valid = max(1, round(n * valid_fraction))
    if n - n_test - n_valid < 1:
        raise DataError(f"{what}: {n} examples are too few to split into train, valid and test; give at least 3")
    rest_x, test_x, rest_y, test_y = _stratified(x, y, n_test, stratify)
    train_x, valid_x, train_y, valid_y = _stratified(rest_x, rest_y, n_valid, stratify)
    if stratify:
        _warn_missing_classes(y, {"train": train_y, "valid": valid_y, "test": test_y}, what)
    return Split(train_x, train_y), Split(valid_x, valid_y), Split(test_x, test_y)


MIN_PER_CLASS = 3  # so that train, valid and test can each hold every class


def _warn_missing_classes(y: np.ndarray, parts: dict[str, np.ndarray], what: str) -> None:
    classes, counts = np.unique(y, return_counts=True)
    missing = [name for name, part in parts.items() if len(np.unique(part)) < len(classes)]
    if missing:
        few = int(counts.min())
        names = " and ".join([", ".join(missing[:-1]), missing[-1]] if len(missing) > 1 else missing)
        logger.warning("%s: the %s split%s lack%s a class: every class needs at least %d examples (the smallest has %d)",
                       what, names, "s" if len(missing) > 1 else "", "" if len(missing) > 1 else "s", MIN_PER_CLASS, few)


def split_two(x: np.ndarray, y: np.ndarray, *, fraction: float, what: str, stratify: bool = True) -> tuple[Split, Split]:
    """Carve ``fraction`` of the rows (at least one) off as a second split."""
    n_second = max(1, round(len(y) * fraction))
    if len(y) - n_second < 1:
        raise DataError(f"{what}: {len(y)} examples are too few to carve a second split from; give at least 2")
    a_x, b_x, a_y, b_y = _stratified(x, y, n_second, stratify)
    return Split(a_x, a_y), Split(b_x, b_y)


def held_out(dataset: Dataset, fraction: float) -> tuple[Dataset, Split | None]:
    """Retrain's data: train+valid as train (the test split as valid and test, as ``merge_train_valid``),
    less a calibration slice of ``fraction`` of it (stratified, fixed seed), returned beside it.

    No model retrain fits sees the slice, so temperatures and a regressor's noise are measured on it
    honestly. The same dataset and fraction always give the same slice. ``fraction`` 0: no slice (None).
    """
    if not 0 <= fraction < 0.5:
        raise DataError(f"the calibration fraction must be in [0, 0.5), got {fraction}")
    merged = merge_train_valid(dataset)
    if fraction == 0:
        return merged, None
    rest, held = split_two(merged.train.x, merged.train.y, fraction=fraction, stratify=not get_task(dataset.task).numeric,
                           what=f"{dataset.name}: the calibration slice of train+valid")
    return dataclasses.replace(merged, train=rest), held


def _stratified(x: np.ndarray, y: np.ndarray, n_second: int, stratify: bool = True) -> list[np.ndarray]:
    from sklearn.model_selection import train_test_split

    if not stratify:
        return train_test_split(x, y, test_size=n_second, random_state=SPLIT_SEED)
    try:
        return train_test_split(x, y, test_size=n_second, stratify=y, random_state=SPLIT_SEED)
    except ValueError:
        logger.info("a class is too small to stratify %d/%d examples; splitting at random", n_second, len(y))
        return train_test_split(x, y, test_size=n_second, random_state=SPLIT_SEED)
