"""Datasets: the built-in registry, user files, fixed splits and input scaling.

``load_dataset`` turns a name or a path into a ``Dataset`` with three fixed splits:

- ``registry``: the names (``DATASETS``) and ``load_dataset``; ``digits`` is the default;
- ``idx``: ``mnist`` and ``fashion_mnist`` from IDX files;
- ``files``: the user's ``.csv`` and ``.npz`` files;
- ``splits``: fixed, seeded splits and the split cache;
- ``dataset``: ``Dataset``, ``Split``, ``standardize`` and ``merge_train_valid``.

Splits never depend on a trial's seed, so every trial of a search sees the same data. Only
numpy is imported here at import time; scikit-learn and Keras are imported where needed.
"""

from search.data.dataset import STD_FLOOR, Dataset, Split, merge_train_valid, standardization, standardize
from search.data.files import load_csv, load_npz
from search.data.idx import FASHION_MNIST_CLASSES, IDX_FILES, keras_home, load_idx_dataset, read_idx
from search.data.registry import DATASETS, DEFAULT_DATASET, load_dataset, load_digits, load_recorded, load_searched, load_subset
from search.data.splits import SPLIT_SEED, cache_dir, held_out

__all__ = [
    "DATASETS", "DEFAULT_DATASET", "FASHION_MNIST_CLASSES", "IDX_FILES", "SPLIT_SEED", "STD_FLOOR", "Dataset", "Split",
    "cache_dir", "held_out", "keras_home", "load_csv", "load_dataset", "load_digits", "load_idx_dataset", "load_npz", "load_recorded", "load_searched", "load_subset",
    "merge_train_valid", "read_idx", "standardization", "standardize",
]
