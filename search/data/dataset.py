"""``Dataset`` and ``Split``: a named dataset with fixed train/valid/test splits, and its transforms.

Only numpy is imported here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

STD_FLOOR = 1e-7


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
    source: str = ""  # where it came from: a built-in name, or a file's absolute path

    def fingerprint(self) -> str:
        """A digest of the splits' contents: the same data, the same fingerprint, wherever it is."""
        digest = hashlib.sha256()
        for split in (self.train, self.valid, self.test):
            for array in (split.x, split.y):
                digest.update(str((array.dtype.str, array.shape)).encode())
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]

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
