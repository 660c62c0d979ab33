"""Subsets of a dataset: some of its classes (relabelled 0..k-1), and a smaller training split.

``--classes 0,1,...`` keeps the named classes of any classification dataset, in the order given,
so that ``--classes 8,9`` makes a two-class task of digits 8 and 9 (8 becomes 0, 9 becomes 1).
``--train-limit N`` keeps N training examples, drawn with the fixed split seed (stratified for classes); the
validation and test splits stay whole, so results stay comparable. Only numpy is imported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from search.data.dataset import Dataset, Split
from search.data.splits import SPLIT_SEED
from search.errors import DataError
from search.tasks import get_task


def parse_classes(text: str | None) -> list[str] | None:
    """``"8,9"`` -> ``["8", "9"]``; None or blank -> None."""
    if text is None or not text.strip():
        return None
    names = [part.strip() for part in text.split(",")]
    if any(not n for n in names):
        raise DataError(f"--classes {text!r}: give class names or ids separated by commas, e.g. --classes 8,9")
    if len(set(names)) != len(names):
        raise DataError(f"--classes {text!r} names a class twice")
    return names


def select_classes(dataset: Dataset, classes: Sequence[str]) -> Dataset:
    """The examples of ``classes`` (names, or ids where the dataset's classes are numbered), relabelled
    0..k-1 in the order given."""
    if get_task(dataset.task).numeric:
        raise DataError(f"--classes: {dataset.name} has a {dataset.task} target, not classes; drop --classes")
    names = dataset.class_names or tuple(str(i) for i in range(dataset.n_classes))
    ids = []
    for wanted in classes:
        if wanted in names:
            ids.append(names.index(wanted))
        elif wanted.isdigit() and int(wanted) < dataset.n_classes:
            ids.append(int(wanted))
        else:
            raise DataError(f"--classes: {dataset.name} has no class {wanted!r}; its classes are {', '.join(names)}")
    if len(ids) < 2:
        raise DataError(f"--classes: keep at least 2 classes of {dataset.name}, got {len(ids)}")
    mapping = np.full(dataset.n_classes, -1, dtype=np.int64)
    mapping[ids] = np.arange(len(ids))

    def keep(split: Split) -> Split:
        mask = np.isin(split.y, ids)
        return Split(split.x[mask], mapping[split.y[mask]])

    parts = [keep(s) for s in (dataset.train, dataset.valid, dataset.test)]
    for part, label in zip(parts, ("train", "valid", "test"), strict=True):
        if len(part) == 0:
            raise DataError(f"--classes: the {label} split of {dataset.name} holds none of {', '.join(classes)}")
    train, valid, test = parts
    return dataclasses.replace(dataset, name=f"{dataset.name}[{','.join(classes)}]", train=train, valid=valid,
                               test=test, n_classes=len(ids), class_names=tuple(names[i] for i in ids))


def limit_train(dataset: Dataset, limit: int) -> Dataset:
    """At most ``limit`` training examples, stratified, with the fixed split seed."""
    n = len(dataset.train)
    if limit < dataset.n_classes:
        raise DataError(f"--train-limit {limit}: keep at least one example per class ({dataset.n_classes})")
    if limit >= n:
        return dataset
    from sklearn.model_selection import train_test_split

    strata = None if get_task(dataset.task).numeric else dataset.train.y
    try:
        x, _, y, _ = train_test_split(dataset.train.x, dataset.train.y, train_size=limit, stratify=strata,
                                      random_state=SPLIT_SEED)
    except ValueError:  # a class too small to stratify
        x, _, y, _ = train_test_split(dataset.train.x, dataset.train.y, train_size=limit, random_state=SPLIT_SEED)
    return dataclasses.replace(dataset, name=f"{dataset.name}[train {limit}]", train=Split(x, y))
