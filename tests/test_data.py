"""Tests for search.data: built-in datasets, IDX files, user files, splits and transforms."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from search import data
from search.data import DATASETS, Dataset, Split, load_dataset, merge_train_valid, standardize
from search.errors import DataError

# --------------------------------------------------------------------------- helpers


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True, magic: int | None = None) -> Path:
    """Write ``array`` (uint8) in the real IDX format: magic, big-endian dims, raw bytes."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x00000800 | array.ndim
    payload = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)
    return path


def tiny_images(n: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 28x28 images with known, distinct pixel values, and labels cycling 0..9."""
    base = np.arange(28 * 28, dtype=np.int64).reshape(28, 28)
    images = np.stack([(base + 7 * (i + offset)) % 256 for i in range(n)]).astype(np.uint8)
    labels = (np.arange(n) + offset) % 10
    return images, labels.astype(np.uint8)


def write_idx_set(folder: Path, n_train: int = 24, n_test: int = 8) -> dict[str, np.ndarray]:
    """The four standard IDX .gz files in ``folder``; returns what was written."""
    x_train, y_train = tiny_images(n_train, 0)
    x_test, y_test = tiny_images(n_test, 100)
    write_idx(folder / "train-images-idx3-ubyte.gz", x_train)
    write_idx(folder / "train-labels-idx1-ubyte.gz", y_train)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", x_test)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", y_test)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def check_idx_dataset(ds: Dataset, written: dict[str, np.ndarray], name: str = "fashion_mnist") -> None:
    n = len(written["y_train"])
    n_valid = max(1, n // 12)
    assert ds.name == name
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (n - n_valid, n_valid, len(written["y_test"]))
    assert ds.input_shape == (28, 28)
    assert ds.n_classes == 10
    expected_train = written["x_train"].astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(ds.train.x, expected_train[: n - n_valid])
    np.testing.assert_array_equal(ds.valid.x, expected_train[n - n_valid :])
    np.testing.assert_array_equal(ds.test.x, written["x_test"].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(ds.train.y, written["y_train"][: n - n_valid])
    np.testing.assert_array_equal(ds.valid.y, written["y_train"][n - n_valid :])
    np.testing.assert_array_equal(ds.test.y, written["y_test"])
    for split in (ds.train, ds.valid, ds.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        assert 0.0 <= split.x.min() and split.x.max() <= 1.0


@pytest.fixture
def no_local_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No SEARCH_DATA_DIR, an empty KERAS_HOME, and a download that fails as offline."""
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.delenv("SEARCH_DATA_DIR", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(home))

    def offline(name: str) -> None:
        raise OSError("network is unreachable")

    monkeypatch.setattr(data.idx, "_download", offline)
    return home


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def all_rows(ds: Dataset) -> int:
    return len(ds.train) + len(ds.valid) + len(ds.test)


# --------------------------------------------------------------------------- digits


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


def test_registry_names() -> None:
    assert tuple(DATASETS) == ("digits", "diabetes", "mnist", "fashion_mnist")


def test_digits_shapes_and_sizes(digits: Dataset) -> None:
    assert digits.name == "digits"
    assert digits.input_shape == (8, 8)
    assert digits.n_classes == 10
    assert digits.class_names == tuple(str(i) for i in range(10))
    assert all_rows(digits) == 1797
    assert (len(digits.train), len(digits.valid), len(digits.test)) == (1078, 359, 360)
    assert digits.describe() == "digits: 1078 train / 359 valid / 360 test, 10 classes, input (8, 8)"
    for split in (digits.train, digits.valid, digits.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        assert split.x.min() >= 0.0 and split.x.max() <= 1.0
        assert set(np.unique(split.y)) == set(range(10))  # stratified: every class in every split
    assert digits.train.x.max() == 1.0


def test_digits_deterministic(digits: Dataset) -> None:
    again = load_dataset("digits")
    for a, b in ((digits.train, again.train), (digits.valid, again.valid), (digits.test, again.test)):
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)


def test_digits_splits_do_not_overlap(digits: Dataset) -> None:
    rows = [{r.tobytes() for r in split.x.reshape(len(split), -1)} for split in (digits.train, digits.valid, digits.test)]
    assert sum(len(r) for r in rows) == 1797
    assert not rows[0] & rows[1] and not rows[0] & rows[2] and not rows[1] & rows[2]


def _sklearn_digits_splits() -> list[np.ndarray]:
    """The digits splits computed here with scikit-learn directly: test first, then valid from the rest."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x, y = (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)
    rest_x, test_x, rest_y, test_y = train_test_split(x, y, test_size=360, stratify=y, random_state=0)
    train_x, valid_x, train_y, valid_y = train_test_split(rest_x, rest_y, test_size=359, stratify=rest_y, random_state=0)
    return [train_x, train_y, valid_x, valid_y, test_x, test_y]


def _arrays(ds: Dataset) -> list[np.ndarray]:
    return [a for split in (ds.train, ds.valid, ds.test) for a in (split.x, split.y)]


def test_digits_split_cache_gives_the_same_splits_and_skips_sklearn(tmp_path, monkeypatch) -> None:
    import subprocess
    import sys

    monkeypatch.setenv("SEARCH_CACHE_DIR", str(tmp_path / "cache"))
    expected = _sklearn_digits_splits()
    first = load_dataset("digits")  # computes and writes the cache
    files = list((tmp_path / "cache").glob("digits-splits-*.npz"))
    assert len(files) == 1
    second = load_dataset("digits")  # reads it
    for got_first, got_second, want in zip(_arrays(first), _arrays(second), expected, strict=True):
        np.testing.assert_array_equal(got_first, want)
        np.testing.assert_array_equal(got_second, want)
    # a fresh process with the cache in place never imports scikit-learn
    code = "import sys; from search.data import load_dataset; load_dataset('digits'); print('sklearn' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_damaged_or_unwritable_split_cache_is_rebuilt_or_skipped(tmp_path, monkeypatch) -> None:
    expected = _sklearn_digits_splits()
    monkeypatch.setenv("SEARCH_CACHE_DIR", str(tmp_path / "cache"))
    load_dataset("digits")
    (path,) = (tmp_path / "cache").glob("digits-splits-*.npz")
    path.write_bytes(b"not an npz file")
    for got, want in zip(_arrays(load_dataset("digits")), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    with np.load(path) as f:  # rewritten whole
        assert f["test_x"].shape == (360, 8, 8)

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SEARCH_CACHE_DIR", str(blocker / "cache"))  # cannot be created
    for got, want in zip(_arrays(load_dataset("digits")), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_default_is_digits() -> None:
    assert load_dataset().name == "digits"


# --------------------------------------------------------------------------- IDX files


def test_idx_from_data_dir(tmp_path: Path, no_local_data: Path) -> None:
    written = write_idx_set(tmp_path / "idx")
    ds = load_dataset("fashion_mnist", data_dir=tmp_path / "idx")
    check_idx_dataset(ds, written)
    assert ds.class_names is not None and ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"
    assert ds.describe() == "fashion_mnist: 22 train / 2 valid / 8 test, 10 classes, input (28, 28)"


def test_idx_from_named_subfolder(tmp_path: Path, no_local_data: Path) -> None:
    written = write_idx_set(tmp_path / "idx" / "fashion-mnist", n_train=13, n_test=3)
    check_idx_dataset(load_dataset("fashion_mnist", data_dir=tmp_path / "idx"), written)
    written = write_idx_set(tmp_path / "idx" / "mnist", n_train=36, n_test=5)
    ds = load_dataset("mnist", data_dir=tmp_path / "idx")
    check_idx_dataset(ds, written, name="mnist")
    assert ds.class_names == tuple(str(i) for i in range(10))


def test_idx_from_env(tmp_path: Path, no_local_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written = write_idx_set(tmp_path / "env" / "fashion_mnist")
    monkeypatch.setenv("SEARCH_DATA_DIR", str(tmp_path / "env"))
    check_idx_dataset(load_dataset("fashion_mnist"), written)


def test_idx_from_keras_cache(no_local_data: Path) -> None:
    written = write_idx_set(no_local_data / "datasets" / "fashion-mnist")
    check_idx_dataset(load_dataset("fashion_mnist"), written)


def test_mnist_from_keras_npz_cache(no_local_data: Path) -> None:
    x_train, y_train = tiny_images(12, 0)
    x_test, y_test = tiny_images(4, 50)
    (no_local_data / "datasets").mkdir()
    np.savez(no_local_data / "datasets" / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    written = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    check_idx_dataset(load_dataset("mnist"), written, name="mnist")


def test_idx_download_is_used_when_nothing_is_local(no_local_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x_train, y_train = tiny_images(24, 0)
    x_test, y_test = tiny_images(8, 3)
    monkeypatch.setattr(data.idx, "_download", lambda name: (x_train, y_train, x_test, y_test))
    written = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    check_idx_dataset(load_dataset("mnist"), written, name="mnist")


def test_full_size_split_rule() -> None:
    images = np.zeros((60000, 2, 2), dtype=np.uint8)
    labels = (np.arange(60000) % 10).astype(np.uint8)
    ds = data.idx._idx_dataset("mnist", images, labels, images[:10], labels[:10])
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (55000, 5000, 10)


def test_read_idx_uncompressed(tmp_path: Path) -> None:
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    path = write_idx(tmp_path / "labels", labels, compress=False)
    np.testing.assert_array_equal(data.read_idx(path, kind="labels"), labels)


def test_idx_bad_magic(tmp_path: Path, no_local_data: Path) -> None:
    folder = tmp_path / "idx"
    write_idx_set(folder)
    x_train, _ = tiny_images(24, 0)
    write_idx(folder / "train-images-idx3-ubyte.gz", x_train, magic=0x00000999)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*magic number 0x00000999"):
        load_dataset("fashion_mnist", data_dir=folder)


def test_idx_labels_file_with_images_magic(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x.gz", np.zeros((2, 3, 3)))
    with pytest.raises(DataError, match="not an IDX labels file"):
        data.read_idx(path, kind="labels")


def test_idx_truncated(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "x.gz", np.zeros((4, 28, 28)))
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(DataError, match="truncated"):
        data.read_idx(path, kind="images")


def test_idx_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "x.gz"
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    with pytest.raises(DataError, match="cannot read"):
        data.read_idx(path, kind="images")


def test_idx_partial_set(tmp_path: Path, no_local_data: Path) -> None:
    write_idx_set(tmp_path / "idx")
    (tmp_path / "idx" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="lacks t10k-labels-idx1-ubyte.gz"):
        load_dataset("fashion_mnist", data_dir=tmp_path / "idx")


def test_idx_missing_and_offline(tmp_path: Path, no_local_data: Path) -> None:
    with pytest.raises(DataError) as info:
        load_dataset("fashion_mnist", data_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    for name in data.IDX_FILES:
        assert name in message
    assert "--data-dir" in message and "SEARCH_DATA_DIR" in message and "fashion-mnist" in message
    assert "network is unreachable" in message


def test_mnist_missing_and_offline_mentions_npz(no_local_data: Path) -> None:
    with pytest.raises(DataError, match=r"mnist: no data found\. Put train-images.*mnist\.npz"):
        load_dataset("mnist")


def test_partial_keras_cache_falls_through_to_download(no_local_data: Path) -> None:
    write_idx_set(no_local_data / "datasets" / "fashion-mnist")
    (no_local_data / "datasets" / "fashion-mnist" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError, match="no data found.*download failed: network is unreachable"):
        load_dataset("fashion_mnist")


def test_idx_missing_data_dir(tmp_path: Path, no_local_data: Path) -> None:
    with pytest.raises(DataError, match="no such directory"):
        load_dataset("mnist", data_dir=tmp_path / "nope")


# --------------------------------------------------------------------------- CSV


def test_csv_string_labels(tmp_path: Path) -> None:
    species = ["setosa", "versicolor", "virginica"]
    lines = ["a,b,label"] + [f"{i},{i * 0.5},{species[i % 3]}" for i in range(40)]
    ds = load_dataset(str(write_csv(tmp_path / "iris.csv", "\n".join(lines) + "\n")))
    assert ds.name == "iris"
    assert ds.class_names == ("setosa", "versicolor", "virginica")
    assert ds.n_classes == 3
    assert ds.input_shape == (2,)
    assert all_rows(ds) == 40
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (28, 6, 6)
    for split in (ds.train, ds.valid, ds.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        # not rescaled, and every label matches its row (a = i, label = species[i % 3])
        np.testing.assert_array_equal(split.y, split.x[:, 0].astype(int) % 3)
        np.testing.assert_allclose(split.x[:, 1], split.x[:, 0] * 0.5)
    assert load_dataset(str(tmp_path / "iris.csv")).train.x.tolist() == ds.train.x.tolist()


def test_csv_int_labels_sorted_numerically(tmp_path: Path) -> None:
    lines = ["f,label"] + [f"{i},{[10, 9, 2][i % 3]}" for i in range(30)]
    ds = load_dataset(str(write_csv(tmp_path / "n.csv", "\n".join(lines))))
    assert ds.class_names == ("2", "9", "10")
    for split in (ds.train, ds.valid, ds.test):
        expected = np.array([{2: 0, 9: 1, 10: 2}[[10, 9, 2][int(i) % 3]] for i in split.x[:, 0]])
        np.testing.assert_array_equal(split.y, expected)


def test_csv_other_target(tmp_path: Path) -> None:
    lines = ["kind,x1,x2"] + [f"{'ab'[i % 2]},{i},{-i}" for i in range(20)]
    path = write_csv(tmp_path / "t.csv", "\n".join(lines))
    ds = load_dataset(str(path), target="kind")
    assert ds.class_names == ("a", "b") and ds.input_shape == (2,)


def test_csv_missing_target(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "kind,x1,x2\na,1,2\nb,3,4\n")
    with pytest.raises(DataError, match=r"no column 'label' \(columns: kind, x1, x2\).*--target"):
        load_dataset(str(path))


def test_csv_non_numeric_feature(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "x,color,label\n1,red,a\n2,blue,b\n3,red,a\n")
    with pytest.raises(DataError, match=r"t\.csv: feature column 'color' is not numeric \(line 2: 'red'\)"):
        load_dataset(str(path))


def test_csv_one_class(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "x,label\n1,a\n2,a\n3,a\n4,a\n")
    with pytest.raises(DataError, match="at least 2"):
        load_dataset(str(path))


@pytest.mark.parametrize("text", ["", "\n\n", "x,label\n"])
def test_csv_empty(tmp_path: Path, text: str) -> None:
    path = write_csv(tmp_path / "t.csv", text)
    with pytest.raises(DataError, match=r"t\.csv: (empty file|a header but no rows)"):
        load_dataset(str(path))


def test_csv_ragged_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "x,label\n1,a\n2\n")
    with pytest.raises(DataError, match="line 3 has 1 fields"):
        load_dataset(str(path))


# --------------------------------------------------------------------------- NPZ


def test_npz_x_y(tmp_path: Path) -> None:
    x = np.arange(100 * 3, dtype=np.float64).reshape(100, 3) * 10  # not rescaled
    y = np.arange(100) % 4
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (70, 15, 15)
    assert ds.n_classes == 4 and ds.class_names == ("0", "1", "2", "3")
    merged = np.concatenate([ds.train.x, ds.valid.x, ds.test.x])
    assert sorted(merged[:, 0].tolist()) == x[:, 0].tolist()
    for split in (ds.train, ds.valid, ds.test):
        assert split.x.dtype == np.float32
        np.testing.assert_array_equal(split.y, (split.x[:, 0] / 30).astype(int) % 4)


def test_npz_small_classes_fall_back_to_random_split(tmp_path: Path) -> None:
    x = np.arange(12, dtype=np.float32).reshape(12, 1)
    y = np.array([0] * 11 + [1])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    assert all_rows(load_dataset(str(tmp_path / "d.npz"))) == 12


def test_npz_pre_split_with_valid(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    parts = {
        "x_train": rng.normal(size=(20, 2, 2)), "y_train": np.array(["cat", "dog"] * 10),
        "x_val": rng.normal(size=(6, 2, 2)), "y_val": np.array(["dog", "cat"] * 3),
        "x_test": rng.normal(size=(4, 2, 2)), "y_test": np.array(["cat"] * 4),
    }
    np.savez(tmp_path / "p.npz", **parts)
    ds = load_dataset(str(tmp_path / "p.npz"))
    assert ds.class_names == ("cat", "dog") and ds.input_shape == (2, 2)
    np.testing.assert_array_equal(ds.train.x, parts["x_train"].astype(np.float32))
    np.testing.assert_array_equal(ds.valid.x, parts["x_val"].astype(np.float32))
    np.testing.assert_array_equal(ds.valid.y, [1, 0] * 3)
    np.testing.assert_array_equal(ds.test.y, [0] * 4)


def test_npz_pre_split_without_valid(tmp_path: Path) -> None:
    x_train = np.arange(60, dtype=np.float32).reshape(30, 2)
    y_train = np.arange(30) % 3
    np.savez(tmp_path / "p.npz", x_train=x_train, y_train=y_train, x_test=x_train[:5], y_test=y_train[:5])
    ds = load_dataset(str(tmp_path / "p.npz"))
    assert (len(ds.train), len(ds.valid), len(ds.test)) == (25, 5, 5)
    rows = sorted(np.concatenate([ds.train.x, ds.valid.x])[:, 0].tolist())
    assert rows == x_train[:, 0].tolist()


def test_npz_missing_keys(tmp_path: Path) -> None:
    np.savez(tmp_path / "p.npz", x_train=np.zeros((4, 2)), y_train=np.arange(4) % 2)
    with pytest.raises(DataError, match=r"p\.npz: holds x_train, y_train; it needs x and y"):
        load_dataset(str(tmp_path / "p.npz"))


def test_npz_half_a_valid_pair(tmp_path: Path) -> None:
    arrays = {"x_train": np.zeros((4, 2)), "y_train": np.arange(4) % 2, "x_test": np.zeros((2, 2)),
              "y_test": np.arange(2), "x_valid": np.zeros((2, 2))}
    np.savez(tmp_path / "p.npz", **arrays)
    with pytest.raises(DataError, match="x_valid/y_valid"):
        load_dataset(str(tmp_path / "p.npz"))


def test_npz_length_mismatch(tmp_path: Path) -> None:
    np.savez(tmp_path / "p.npz", x=np.zeros((10, 2)), y=np.arange(9) % 2)
    with pytest.raises(DataError, match="9 labels for 10 examples"):
        load_dataset(str(tmp_path / "p.npz"))


def test_npz_empty(tmp_path: Path) -> None:
    np.savez(tmp_path / "p.npz")
    with pytest.raises(DataError, match="empty archive"):
        load_dataset(str(tmp_path / "p.npz"))


# --------------------------------------------------------------------------- names and paths


def test_nonexistent_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=r"no such dataset file: .*nope\.csv; give a \.csv or \.npz path, or one of digits"):
        load_dataset(str(missing))


def test_unknown_name() -> None:
    with pytest.raises(DataError, match=r"unknown dataset 'cifar10': give one of digits, diabetes, mnist, fashion_mnist"):
        load_dataset("cifar10")


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "d.txt"
    path.write_text("1,2\n")
    with pytest.raises(DataError, match=r"unsupported dataset file type '\.txt'"):
        load_dataset(str(path))


def test_directory_is_not_a_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        load_dataset(str(tmp_path))


# --------------------------------------------------------------------------- transforms


def test_standardize_uses_train_statistics(digits: Dataset) -> None:
    scaled = standardize(digits)
    assert scaled is not digits and scaled.describe() == digits.describe()
    flat = digits.train.x.reshape(len(digits.train), -1).astype(np.float64)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    varying = std > 1e-7
    train = scaled.train.x.reshape(len(scaled.train), -1)
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(axis=0)[varying], 1.0, atol=1e-4)
    for raw, out in ((digits.valid, scaled.valid), (digits.test, scaled.test)):
        expected = (raw.x.reshape(len(raw), -1) - mean) / np.where(varying, std, 1.0)
        np.testing.assert_allclose(out.x.reshape(len(out), -1), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(out.y, raw.y)
        assert out.x.dtype == np.float32 and out.x.shape == raw.x.shape
    # valid is not standardized with its own statistics
    assert not np.allclose(scaled.valid.x.mean(axis=0), 0.0, atol=1e-5)
    # a feature constant in train is centred, not blown up in valid/test
    assert np.abs(scaled.test.x).max() < 1e3


def test_merge_train_valid(digits: Dataset) -> None:
    merged = merge_train_valid(digits)
    assert len(merged.train) == len(digits.train) + len(digits.valid)
    assert merged.valid is digits.test and merged.test is digits.test
    np.testing.assert_array_equal(merged.train.x[: len(digits.train)], digits.train.x)
    np.testing.assert_array_equal(merged.train.y[len(digits.train) :], digits.valid.y)
    assert merged.n_classes == 10 and merged.class_names == digits.class_names


def test_held_out_carves_a_stratified_calibration_slice_off_train_and_valid(digits: Dataset) -> None:
    from search.data import held_out
    from search.errors import DataError

    merged = merge_train_valid(digits)
    rest, held = held_out(digits, 0.1)
    n = len(merged.train)
    assert held is not None and len(held) == round(n * 0.1) and len(rest.train) + len(held) == n
    assert rest.test is digits.test and rest.valid is digits.test
    # Together the rows of train+valid, each once (as a multiset: digits has a few duplicate images).
    both = np.concatenate([rest.train.x, held.x])
    assert sorted(r.tobytes() for r in both) == sorted(r.tobytes() for r in merged.train.x)
    # Stratified: every class's share of the slice is within one example of its share of train+valid.
    classes, counts = np.unique(merged.train.y, return_counts=True)
    assert all(abs(int((held.y == c).sum()) - k * 0.1) <= 1 for c, k in zip(classes, counts))
    again_rest, again = held_out(digits, 0.1)  # the same slice every time
    np.testing.assert_array_equal(again.x, held.x)
    np.testing.assert_array_equal(again_rest.train.y, rest.train.y)
    none_rest, none = held_out(digits, 0.0)
    assert none is None and len(none_rest.train) == n
    with pytest.raises(DataError, match=r"calibration fraction must be in \[0, 0.5\), got 0.5"):
        held_out(digits, 0.5)


def test_split_checks_lengths() -> None:
    with pytest.raises(ValueError):
        Split(np.zeros((3, 2), dtype=np.float32), np.zeros(2, dtype=np.int64))


def test_import_does_not_load_keras() -> None:
    import subprocess
    import sys

    code = "import sys, search.data; print('tensorflow' in sys.modules or 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- subsets


def test_classes_keep_and_relabel_in_the_order_given() -> None:
    from search.data import load_subset

    full = load_dataset("digits")
    sub = load_subset("digits", classes="9,8")
    assert sub.n_classes == 2 and sub.class_names == ("9", "8")
    for whole, part in ((full.train, sub.train), (full.valid, sub.valid), (full.test, sub.test)):
        mask = (whole.y == 9) | (whole.y == 8)
        np.testing.assert_array_equal(part.x, whole.x[mask])
        np.testing.assert_array_equal(part.y, np.where(whole.y[mask] == 9, 0, 1))  # 9 -> 0, 8 -> 1


def test_train_limit_is_stratified_and_fixed() -> None:
    from search.data import load_subset

    a = load_subset("digits", classes="8,9", train_limit=50)
    b = load_subset("digits", classes="8,9", train_limit=50)
    assert len(a.train) == 50 and np.bincount(a.train.y).tolist() in ([25, 25], [24, 26], [26, 24])
    np.testing.assert_array_equal(a.train.x, b.train.x)  # the same seed, the same rows
    assert len(a.valid) == len(load_subset("digits", classes="8,9").valid)  # valid and test stay whole
    assert a.fingerprint() == b.fingerprint() != load_subset("digits", classes="8,9").fingerprint()


@pytest.mark.parametrize(("classes", "limit", "message"), [
    ("8,x", None, "digits has no class 'x'"),
    ("8", None, "keep at least 2 classes"),
    ("8,8", None, "names a class twice"),
    ("8,,9", None, "separated by commas"),
    ("8,9", 1, "at least one example per class"),
])
def test_bad_subsets(classes: str, limit: int | None, message: str) -> None:
    from search.data import load_subset

    with pytest.raises(DataError, match=message):
        load_subset("digits", classes=classes, train_limit=limit)
