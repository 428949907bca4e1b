"""Tests for kernelkip.data.loaders: format round trips on files built here, digits, sampling."""
import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.io import savemat

from kernelkip.data import (DATASET_NAMES, Dataset, class_balanced_sample, load_cifar10,
                            load_cifar100, load_dataset, load_digits, load_idx, load_npz,
                            load_svhn, read_idx)
from kernelkip.data import loaders

DIGITS_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# ----------------------------------------------------------------------------- writers

_IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i1"): 0x09, np.dtype(">i2"): 0x0B,
              np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def write_idx(path, array, *, gz=False):
    """Write ``array`` as an IDX file (big-endian payload), gzip-compressed if ``gz``."""
    big = np.asarray(array).astype(np.asarray(array).dtype.newbyteorder(">"))
    header = bytes([0, 0, _IDX_CODES[big.dtype], big.ndim]) + struct.pack(
        f">{big.ndim}I", *big.shape)
    payload = header + big.tobytes()
    path = Path(f"{path}.gz") if gz else Path(path)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def make_idx_dir(directory, rng, *, gz=(False, False, False, False), n_train=7, n_test=5,
                 num_classes=10):
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, num_classes, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, num_classes, n_test).astype(np.uint8),
    }
    arrays["train-labels-idx1-ubyte"][0] = num_classes - 1  # pin num_classes
    for (base, array), compress in zip(arrays.items(), gz):
        write_idx(directory / base, array, gz=compress)
    return arrays


def write_cifar_batch(path, data, labels, *, label_key=b"labels", protocol=2):
    # the real batches are dicts with bytes keys (written by Python 2's cPickle)
    with open(path, "wb") as f:
        pickle.dump({b"batch_label": b"test", label_key: list(map(int, labels)),
                     b"data": data}, f, protocol=protocol)


def chw_rows(images_nhwc):
    """Inverse of the CIFAR layout: (n, 32, 32, 3) -> (n, 3072) channel-major rows."""
    return images_nhwc.transpose(0, 3, 1, 2).reshape(images_nhwc.shape[0], -1)


# ----------------------------------------------------------------------------- IDX

@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips_every_type(tmp_path, dtype, gz):
    rng = np.random.default_rng(1)
    array = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    path = write_idx(tmp_path / "a-idx3", array, gz=gz)
    out = read_idx(path)
    assert out.shape == array.shape and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("gz", [(False,) * 4, (True,) * 4, (True, False, False, True)])
def test_load_idx_round_trip(tmp_path, gz):
    arrays = make_idx_dir(tmp_path, np.random.default_rng(0), gz=gz)
    ds = load_idx(tmp_path, name="toy")
    assert ds.name == "toy" and ds.num_classes == 10
    assert ds.x_train.shape == (7, 28, 28, 1) and ds.x_train.dtype == np.float32
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.x_test[..., 0], arrays["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.y_train.dtype == np.int64


def test_read_idx_rejects_bad_magic(tmp_path):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(bytes([0x50, 0x4B, 3, 4, 0, 0, 0, 1, 9]))
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


def test_read_idx_rejects_truncated_payload(tmp_path):
    path = write_idx(tmp_path / "x-idx1-ubyte", np.arange(10, dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError, match="header declares shape"):
        read_idx(path)


def test_read_idx_rejects_bad_gzip(tmp_path):
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="gzip"):
        read_idx(path)


def test_load_idx_corrupt_magic_in_directory(tmp_path):
    make_idx_dir(tmp_path, np.random.default_rng(0))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(ValueError, match="magic"):
        load_idx(tmp_path)


def test_load_idx_missing_directory_names_path_and_files(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere.*train-images-idx3-ubyte"):
        load_idx(missing)


def test_load_idx_missing_file_is_named(tmp_path):
    make_idx_dir(tmp_path, np.random.default_rng(0))
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks t10k-images-idx3-ubyte\[\.gz\]"):
        load_idx(tmp_path)


def test_load_idx_count_mismatch(tmp_path):
    make_idx_dir(tmp_path, np.random.default_rng(0))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, dtype=np.uint8))
    with pytest.raises(ValueError, match="5 images but 4 labels"):
        load_idx(tmp_path)


# ----------------------------------------------------------------------------- CIFAR

@pytest.mark.parametrize("nested", [False, True])
def test_load_cifar10_round_trip(tmp_path, nested):
    rng = np.random.default_rng(2)
    root = tmp_path / "cifar-10-batches-py" if nested else tmp_path
    root.mkdir(exist_ok=True)
    batches = []
    for i, fname in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, 3)
        write_cifar_batch(root / fname, data, labels, protocol=2 if i % 2 else 5)
        batches.append((data, labels))
    names = [f"class{c}".encode() for c in range(10)]
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, f, protocol=2)

    ds = load_cifar10(tmp_path)
    assert ds.x_train.shape == (15, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    np.testing.assert_array_equal(chw_rows(ds.x_train), np.concatenate([b[0] for b in batches[:5]]))
    np.testing.assert_array_equal(ds.y_train, np.concatenate([b[1] for b in batches[:5]]))
    np.testing.assert_array_equal(chw_rows(ds.x_test), batches[5][0])
    np.testing.assert_array_equal(ds.y_test, batches[5][1])
    # red channel comes first in each row: pixel (h=1, w=2) of channel 2 sits at 2*1024 + 34
    assert ds.x_train[0, 1, 2, 2] == batches[0][0][0, 2 * 1024 + 1 * 32 + 2]
    assert ds.class_names == tuple(f"class{c}" for c in range(10))
    assert ds.num_classes == 10 and ds.name == "cifar10"


def test_load_cifar10_missing_batch(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(1, 5):
        write_cifar_batch(tmp_path / f"data_batch_{i}", rng.integers(0, 256, (1, 3072),
                                                                     dtype=np.uint8), [0])
    with pytest.raises(FileNotFoundError, match="data_batch_5, test_batch"):
        load_cifar10(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar10(tmp_path / "absent")


def test_cifar_pickle_refuses_foreign_globals(tmp_path):
    root = tmp_path
    for fname in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / fname, "wb") as f:
            pickle.dump({b"data": print, b"labels": [0]}, f)  # references builtins.print
    with pytest.raises(ValueError, match="builtins.print.*original archive"):
        load_cifar10(root)


def test_cifar_pickle_with_numpy1_module_names(tmp_path):
    # batches written before numpy 2 name numpy.core.multiarray instead of numpy._core
    rng = np.random.default_rng(6)
    data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
    blob = pickle.dumps({b"data": data, b"labels": [3, 4]}, protocol=2)
    blob = blob.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in blob
    for fname in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (tmp_path / fname).write_bytes(blob)
    ds = load_cifar10(tmp_path)
    np.testing.assert_array_equal(chw_rows(ds.x_test), data)
    assert ds.class_names is None


def test_load_cifar100_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    splits = {}
    for fname, n in (("train", 6), ("test", 4)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n)
        with open(root / fname, "wb") as f:
            pickle.dump({b"data": data, b"fine_labels": list(map(int, fine)),
                         b"coarse_labels": [0] * n}, f, protocol=2)
        splits[fname] = (data, fine)
    with open(root / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [f"f{c}".encode() for c in range(100)],
                     b"coarse_label_names": [b"c"] * 20}, f, protocol=2)

    ds = load_cifar100(tmp_path)
    assert ds.num_classes == 100 and len(ds.class_names) == 100 and ds.class_names[7] == "f7"
    np.testing.assert_array_equal(chw_rows(ds.x_train), splits["train"][0])
    np.testing.assert_array_equal(ds.y_train, splits["train"][1])
    np.testing.assert_array_equal(chw_rows(ds.x_test), splits["test"][0])
    np.testing.assert_array_equal(ds.y_test, splits["test"][1])


# ----------------------------------------------------------------------------- SVHN

def test_load_svhn_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    raw = {}
    for fname, n in (("train_32x32.mat", 5), ("test_32x32.mat", 3)):
        X = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)  # HWCN, as released
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        y[0, 0] = 10
        savemat(tmp_path / fname, {"X": X, "y": y})
        raw[fname] = (X, y)
    ds = load_svhn(tmp_path)
    X, y = raw["train_32x32.mat"]
    assert ds.x_train.shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(ds.x_train, X.transpose(3, 0, 1, 2))
    np.testing.assert_array_equal(ds.y_train, np.where(y[:, 0] == 10, 0, y[:, 0]))
    assert ds.y_train[0] == 0 and ds.y_train.max() <= 9
    X, y = raw["test_32x32.mat"]
    np.testing.assert_array_equal(ds.x_test, X.transpose(3, 0, 1, 2))
    np.testing.assert_array_equal(ds.y_test, np.where(y[:, 0] == 10, 0, y[:, 0]))


def test_load_svhn_missing_file(tmp_path):
    savemat(tmp_path / "train_32x32.mat", {"X": np.zeros((32, 32, 3, 1), np.uint8),
                                           "y": np.ones((1, 1))})
    with pytest.raises(FileNotFoundError, match="lacks test_32x32.mat"):
        load_svhn(tmp_path)


# ----------------------------------------------------------------------------- npz

def test_load_npz_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    arrays = dict(x_train=rng.integers(0, 256, (6, 5, 5), dtype=np.uint8),
                  y_train=np.array([0, 1, 2, 0, 1, 2]),
                  x_test=rng.integers(0, 256, (2, 5, 5), dtype=np.uint8),
                  y_test=np.array([[2], [1]]))
    np.savez(tmp_path / "toy.npz", **arrays)
    ds = load_npz(tmp_path / "toy.npz")
    assert ds.name == "toy" and ds.num_classes == 3 and ds.x_train.shape == (6, 5, 5, 1)
    np.testing.assert_array_equal(ds.x_train[..., 0], arrays["x_train"])
    np.testing.assert_array_equal(ds.x_test[..., 0], arrays["x_test"])
    np.testing.assert_array_equal(ds.y_train, arrays["y_train"])
    np.testing.assert_array_equal(ds.y_test, [2, 1])


def test_load_npz_optional_keys_and_errors(tmp_path):
    x = np.zeros((2, 3, 3, 2))
    np.savez(tmp_path / "a.npz", x_train=x, y_train=[0, 1], x_test=x, y_test=[1, 0],
             num_classes=5, class_names=np.array(list("abcde")))
    ds = load_npz(tmp_path / "a.npz")
    assert ds.num_classes == 5 and ds.class_names == tuple("abcde")
    np.savez(tmp_path / "b.npz", x_train=x, y_train=[0, 1])
    with pytest.raises(ValueError, match="x_test"):
        load_npz(tmp_path / "b.npz")
    with pytest.raises(FileNotFoundError, match="x_train, y_train, x_test, y_test"):
        load_npz(tmp_path / "absent.npz")


# ----------------------------------------------------------------------------- digits

def test_digits_shapes_and_counts():
    ds = load_digits()
    assert ds.name == "digits" and ds.num_classes == 10
    assert ds.x_train.shape == (1198, 8, 8, 1) and ds.x_test.shape == (599, 8, 8, 1)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    for x in (ds.x_train, ds.x_test):
        assert x.min() == 0 and x.max() == 16 and np.all(x == np.round(x))
    train_counts = np.bincount(ds.y_train, minlength=10)
    test_counts = np.bincount(ds.y_test, minlength=10)
    np.testing.assert_array_equal(train_counts + test_counts, DIGITS_CLASS_COUNTS)
    # stratified: each class contributes round(n_c / 3) test images
    np.testing.assert_array_equal(test_counts, np.round(np.array(DIGITS_CLASS_COUNTS) / 3))


def test_digits_is_deterministic_and_splits_are_disjoint():
    a, b = load_digits(), load_digits()
    for field in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    with np.load(Path(loaders.__file__).with_name("digits.npz")) as z:
        images = z["images"]
    assert images.shape == (1797, 8, 8)
    # every image lands in exactly one split: the multiset of rows is preserved
    both = np.concatenate([a.x_train, a.x_test])[..., 0].reshape(1797, -1)
    np.testing.assert_array_equal(np.unique(both, axis=0),
                                  np.unique(images.reshape(1797, -1), axis=0))
    c = load_digits(seed=1)
    assert not np.array_equal(a.y_test, c.y_test) or not np.array_equal(a.x_test, c.x_test)


def test_digits_split_options():
    half = load_digits(test_fraction=0.5)
    assert half.x_test.shape[0] == sum(round(0.5 * n) for n in DIGITS_CLASS_COUNTS)
    assert half.x_train.shape[0] + half.x_test.shape[0] == 1797
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=1.0)

# ----------------------------------------------------------------------------- Dataset


def test_dataset_validates():
    x = np.zeros((2, 2, 2, 1))
    with pytest.raises(ValueError, match=r"expected \(n, H, W, C\)"):
        Dataset(np.zeros((2, 4)), [0, 1], x, [0, 1], num_classes=2, name="t")
    with pytest.raises(ValueError, match=r"label 2; expected labels in \[0, 2\)"):
        Dataset(x, [0, 2], x, [0, 1], num_classes=2, name="t")
    with pytest.raises(ValueError, match="class_names has 1 entries"):
        Dataset(x, [0, 1], x, [0, 1], num_classes=2, name="t", class_names=["a"])
    with pytest.raises(ValueError, match="image shapes must match"):
        Dataset(x, [0, 1], np.zeros((2, 3, 3, 1)), [0, 1], num_classes=2, name="t")
    ds = Dataset(x, [0, 1], x, [0, 1], num_classes=2, name="t")
    with pytest.raises(AttributeError):
        ds.name = "u"


# ----------------------------------------------------------------------------- load_dataset

def test_load_dataset_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*fashion-mnist"):
        load_dataset("imagenet")


def test_load_dataset_digits_and_aliases(tmp_path):
    assert load_dataset("Digits").x_train.shape == (1198, 8, 8, 1)
    make_idx_dir(tmp_path, np.random.default_rng(0), gz=(True,) * 4)
    ds = load_dataset("Fashion_MNIST", data_dir=tmp_path)
    assert ds.name == "fashion-mnist" and ds.class_names[-1] == "Ankle boot"
    assert load_dataset("mnist", data_dir=str(tmp_path)).class_names[3] == "3"
    with pytest.raises(ValueError, match="needs data_dir"):
        load_dataset("npz")
    assert set(DATASET_NAMES) == {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100",
                                  "svhn", "npz"}


def test_load_dataset_searches_env_directory(tmp_path, monkeypatch):
    arrays = make_idx_dir(tmp_path / "mnist", np.random.default_rng(0))
    monkeypatch.setenv("KERNELKIP_DATA", str(tmp_path))
    ds = load_dataset("mnist")
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])


def test_load_dataset_fashion_missing_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNELKIP_DATA", str(tmp_path))
    monkeypatch.setitem(loaders.DEFAULT_SEARCH_DIRS, "fashion-mnist",
                        (str(tmp_path / "not-installed"),))
    with pytest.raises(FileNotFoundError,
                       match=r"(?s)not-installed.*t10k-labels.*apt-get install "
                             r"dataset-fashion-mnist.*--data-dir"):
        load_dataset("fashion-mnist")
    with pytest.raises(FileNotFoundError, match="KERNELKIP_DATA"):
        load_dataset("cifar10")


def test_load_dataset_explicit_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.*train_32x32.mat"):
        load_dataset("svhn", data_dir=tmp_path / "absent")


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian_package(monkeypatch):
    monkeypatch.delenv("KERNELKIP_DATA", raising=False)
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.x_train.dtype == np.float32 and 0 <= ds.x_train.min() and ds.x_train.max() == 255
    np.testing.assert_array_equal(np.bincount(ds.y_train), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(ds.y_test), [1000] * 10)


# ----------------------------------------------------------------------------- sampling

@st.composite
def labelled(draw):
    counts = draw(st.lists(st.integers(1, 15), min_size=1, max_size=6))
    y = np.repeat(np.arange(len(counts)), counts)
    perm = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).permutation(y.size)
    per_class = draw(st.integers(1, min(counts)))
    return y[perm], per_class, counts


@settings(max_examples=50, deadline=None)
@given(labelled(), st.integers(0, 2**32 - 1))
def test_class_balanced_sample_properties(data, seed):
    y, per_class, counts = data
    idx = class_balanced_sample(y, per_class, np.random.default_rng(seed))
    assert idx.dtype == np.int64 and idx.shape == (len(counts) * per_class,)
    np.testing.assert_array_equal(y[idx], np.repeat(np.arange(len(counts)), per_class))
    assert np.unique(idx).size == idx.size
    for c in range(len(counts)):
        block = idx[c * per_class:(c + 1) * per_class]
        assert np.all(np.diff(block) > 0)
    again = class_balanced_sample(y, per_class, np.random.default_rng(seed))
    np.testing.assert_array_equal(idx, again)


@settings(max_examples=30, deadline=None)
@given(labelled(), st.integers(1, 5))
def test_class_balanced_sample_too_large(data, excess):
    y, _, counts = data
    smallest = int(np.argmin(counts))
    ipc = min(counts) + excess
    with pytest.raises(ValueError, match=f"ipc {ipc} is larger than class {smallest}, "
                                         f"which has {min(counts)} examples"):
        class_balanced_sample(y, ipc, np.random.default_rng(0))


def test_class_balanced_sample_message_and_errors():
    y = np.repeat(np.arange(5), [60, 55, 50, 41, 70])
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="ipc 50 is larger than class 3, which has 41 examples"):
        class_balanced_sample(y, 50, rng)
    with pytest.raises(ValueError, match="per_class must be >= 1"):
        class_balanced_sample(y, 0, rng)
    with pytest.raises(ValueError, match="class 5, which has 0 examples"):
        class_balanced_sample(y, 1, rng, num_classes=6)
    with pytest.raises(ValueError, match=r"label 4; expected labels in \[0, 3\)"):
        class_balanced_sample(y, 1, rng, num_classes=3)
    with pytest.raises(TypeError, match="Generator"):
        class_balanced_sample(y, 1, 0)
    with pytest.raises(ValueError, match="integer class labels"):
        class_balanced_sample(y.astype(float), 1, rng)


def test_class_balanced_sample_varies_with_rng_state():
    y = np.repeat(np.arange(3), 100)
    rng = np.random.default_rng(0)
    first, second = class_balanced_sample(y, 10, rng), class_balanced_sample(y, 10, rng)
    assert not np.array_equal(first, second)
