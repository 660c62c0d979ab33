"""``Dataset`` and ``Split``: a named dataset with fixed train/valid/test splits, and its transforms.

Only numpy is imported here.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np

from search.tasks import CLASSIFICATION, Output, get_task

STD_FLOOR = 1e-7


@dataclass(frozen=True, eq=False)
class Split:
    """One split: features ``x`` (float32, one row per example) and targets ``y``: class ids (int64),
    or numbers (float32) for regression."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"Split: {len(self.x)} rows of x but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A named dataset with fixed train/valid/test splits: ``n_classes`` classes, or a regression
    target (``task`` regression, ``n_classes`` 0)."""

    name: str
    train: Split
    valid: Split
    test: Split
    n_classes: int
    class_names: tuple[str, ...] | None = None
    source: str = ""  # where it came from: a built-in name, or a file's absolute path
    task: str = CLASSIFICATION

    @property
    def output(self) -> Output:
        """What a model of this data predicts: its classes, or the training targets' mean and std."""
        if not get_task(self.task).numeric:
            return Output(self.task, self.n_classes)
        y = self.train.y.astype(np.float64)
        std = float(y.std())
        return Output(self.task, 0, float(y.mean()), std if std > STD_FLOOR else 1.0)

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
        """One line: sizes, classes (or the target) and input shape."""
        what = f"a {self.task} target" if get_task(self.task).numeric else f"{self.n_classes} classes"
        return (
            f"{self.name}: {len(self.train)} train / {len(self.valid)} valid / {len(self.test)} test, "
            f"{what}, input {self.input_shape}"
        )


def standardization(train: Split) -> tuple[np.ndarray, np.ndarray]:
    """The (mean, scale) ``standardize`` applies, from the training split: the scale is the std, or 1 where
    the std is below ``STD_FLOOR``."""
    mean = train.x.mean(axis=0, dtype=np.float64)
    std = train.x.std(axis=0, dtype=np.float64)
    return mean, np.where(std < STD_FLOOR, 1.0, std)


def standardize(dataset: Dataset) -> Dataset:
    """Standardize every feature with the TRAIN split's mean and standard deviation.

    Valid and test use the training statistics too, so nothing leaks from them. A feature
    whose training std is below 1e-7 (constant in train, like the corner pixels of digits)
    is only centred, not divided, so it cannot blow up in valid or test. Returns a new Dataset.
    """
    mean, scale = standardization(dataset.train)

    def apply(split: Split) -> Split:
        return Split(((split.x - mean) / scale).astype(np.float32), split.y)

    return dataclasses.replace(dataset, train=apply(dataset.train), valid=apply(dataset.valid), test=apply(dataset.test))


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
    return dataclasses.replace(dataset, train=train, valid=dataset.test)
