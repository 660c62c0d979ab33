"""The dataset registry: a name (or a path) to a ``Dataset``; a new dataset is one entry here.

- ``digits`` (the default): scikit-learn's bundled 8x8 digits, pixels scaled to [0, 1], split
  60/20/20 (train/valid/test), stratified, with a fixed seed; the splits are cached in
  ``cache_dir()`` so that later commands skip scikit-learn's import.
- ``diabetes``: scikit-learn's bundled diabetes regression set (442 patients, 10 features, a
  disease-progression score), features standardized with the training split's statistics,
  split 60/20/20 at random with a fixed seed; cached like digits.
- ``mnist`` and ``fashion_mnist``: the IDX files (``search.data.idx``).
- a ``.csv`` or ``.npz`` path: the user's own features and labels or regression targets
  (``search.data.files``; ``task`` auto infers which).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from search.data.dataset import Dataset, standardize
from search.data.files import load_csv, load_npz
from search.data.idx import load_idx_dataset
from search.data.splits import _read_split_cache, split_three, _write_split_cache
from search.errors import DataError
from search.tasks import AUTO, REGRESSION, get_task

DEFAULT_DATASET = "digits"
Loader = Callable[["str | Path | None"], Dataset]  # data_dir -> Dataset


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
        train, valid, test = split_three(x, y, valid_fraction=0.2, test_fraction=0.2, what="digits")
        _write_split_cache("digits", (train, valid, test))
    return Dataset("digits", train, valid, test, 10, tuple(str(i) for i in range(10)))


def load_diabetes() -> Dataset:
    """scikit-learn's diabetes regression set: the raw features standardized with the training split's
    mean and std, the target (a disease-progression score, 25-346) as it is; split 60/20/20, seed 0."""
    cached = _read_split_cache("diabetes")
    if cached is not None:
        train, valid, test = cached
    else:
        from sklearn.datasets import load_diabetes as sk_load_diabetes

        bunch = sk_load_diabetes(scaled=False)
        x, y = bunch.data.astype(np.float64), bunch.target.astype(np.float32)
        raw = Dataset("diabetes", *split_three(x, y, valid_fraction=0.2, test_fraction=0.2, what="diabetes",
                                                stratify=False), 0, None, task=REGRESSION)
        scaled = standardize(raw)  # with the training split's mean and std
        train, valid, test = scaled.train, scaled.valid, scaled.test
        _write_split_cache("diabetes", (train, valid, test))
    return Dataset("diabetes", train, valid, test, 0, None, task=REGRESSION)


# name -> loader(data_dir); names are matched case-insensitively, with "-" read as "_".
DATASETS: dict[str, Loader] = {
    "digits": lambda data_dir: load_digits(),
    "diabetes": lambda data_dir: load_diabetes(),
    "mnist": lambda data_dir: load_idx_dataset("mnist", data_dir=data_dir),
    "fashion_mnist": lambda data_dir: load_idx_dataset("fashion_mnist", data_dir=data_dir),
}
FILE_LOADERS: dict[str, Callable[..., Dataset]] = {".csv": load_csv, ".npz": load_npz}


def load_dataset(
    name_or_path: str = DEFAULT_DATASET,
    *,
    data_dir: str | Path | None = None,
    target: str = "label",
    task: str = AUTO,
) -> Dataset:
    """Load a built-in dataset by name (``DATASETS``) or a ``.csv``/``.npz`` file by path.

    ``data_dir`` is where ``mnist``/``fashion_mnist`` look for their IDX files first;
    ``target`` names the label column of a CSV file; ``task`` (``search.tasks``) is what the
    target is: auto infers it from a file, and a built-in dataset has its own.
    """
    if task != AUTO:
        get_task(task)
    text = str(name_or_path).strip()
    path = Path(text).expanduser()
    if target != "label" and path.suffix.lower() != ".csv":  # a missing CSV is said below, as missing
        raise DataError(f"--target {target!r} names the label column of a CSV file, but {text} is not one (it "
                        f"carries its own labels); drop --target")
    if text and path.is_file():
        return dataclasses.replace(_load_file(path, target=target, task=task), source=str(path.resolve()))
    if text and path.is_dir():
        raise DataError(f"{text} is a directory; give a .csv or .npz file, or one of {', '.join(DATASETS)}")
    key = text.lower().replace("-", "_")
    if key in DATASETS:
        dataset = DATASETS[key](data_dir)
        if task not in (AUTO, dataset.task):
            raise DataError(f"{key} is a {dataset.task} dataset, so --task {task} does not fit it; drop --task")
        return dataclasses.replace(dataset, source=key)
    if path.suffix or os.sep in text or "/" in text:
        raise DataError(
            f"no such dataset file: {text}; give a .csv or .npz path, or one of {', '.join(DATASETS)}"
        )
    raise DataError(f"unknown dataset {text!r}: give one of {', '.join(DATASETS)}, or a path to a .csv or .npz file")


def _load_file(path: Path, *, target: str, task: str) -> Dataset:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return load_csv(path, target=target, task=task)
    if suffix in FILE_LOADERS:
        return FILE_LOADERS[suffix](path, task=task)
    raise DataError(f"unsupported dataset file type {suffix or '(none)'!r}: {path}; give a .csv or .npz file")


def load_subset(name_or_path: str, *, data_dir: str | Path | None = None, target: str = "label",
                classes: str | None = None, train_limit: int | None = None, task: str = AUTO) -> Dataset:
    """``load_dataset``, then ``--classes`` and ``--train-limit`` (see ``search.data.subsets``)."""
    from search.data.subsets import limit_train, parse_classes, select_classes

    dataset = load_dataset(name_or_path, data_dir=data_dir, target=target, task=task)
    chosen = parse_classes(classes)
    if chosen is not None:
        dataset = select_classes(dataset, chosen)
    if train_limit is not None:
        dataset = limit_train(dataset, int(train_limit))
    return dataset


def load_recorded(source: str, fingerprint: str | None, *, data_dir: str | Path | None = None, target: str = "label",
                  what: str = "the search", classes: str | None = None, train_limit: int | None = None,
                  task: str = AUTO) -> Dataset:
    """The dataset ``what`` recorded (a built-in name or an absolute path), checked against its fingerprint.

    A file that moved is an error that names it; a file whose contents changed (an edited CSV) is
    refused, since its trials were scored on other data.
    """
    path = Path(source)
    if path.is_absolute() and not path.is_file():
        raise DataError(f"{what} used the dataset {source}, which is no longer there; put it back, or pass --dataset")
    dataset = load_subset(source, data_dir=data_dir, target=target, classes=classes, train_limit=train_limit, task=task)
    if fingerprint and dataset.fingerprint() != fingerprint:
        raise DataError(
            f"the dataset {source} changed since {what} used it (fingerprint {dataset.fingerprint()}, recorded "
            f"{fingerprint}): its results were measured on other data; restore the file, or pass --dataset to "
            "use this data knowingly"
        )
    return dataset


def load_searched(params: Mapping[str, str], *, data_dir: str | Path | None = None, target: str | None = None,
                  what: str = "the search") -> Dataset:
    """The data a search ran on, from its parent run's params: the recorded path (checked against its
    fingerprint) or, for a search recorded before that, its dataset name; with its class subset and task."""
    data_dir = data_dir or params.get("data_dir") or None
    target = target or params.get("target", "label")
    subset = {"classes": params.get("classes") or None,
              "train_limit": int(params["train_limit"]) if params.get("train_limit") else None,
              "task": params.get("task") or AUTO}
    if params.get("dataset_source"):
        return load_recorded(params["dataset_source"], params.get("dataset_fingerprint"), data_dir=data_dir,
                             target=target, what=what, **subset)
    return load_subset(params.get("dataset") or "digits", data_dir=data_dir, target=target, **subset)
