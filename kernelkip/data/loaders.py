"""Image classification datasets as NHWC float32 arrays, read from their standard file formats.

Every loader returns a :class:`Dataset`. Images stay on their raw pixel scale (0..255, or 0..16
for digits); centring, whitening and label encoding live in :mod:`kernelkip.data.preprocess`.
Nothing is downloaded: the files are read from a directory the caller names, except for the
small ``digits`` set, which ships inside the package.
"""
import gzip
import importlib
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..io import read_npz

__all__ = ["Dataset", "load_digits", "read_idx", "load_idx", "load_cifar10", "load_cifar100",
           "load_svhn", "load_npz", "load_dataset", "class_balanced_sample", "DATASET_NAMES",
           "DEFAULT_SEARCH_DIRS"]

DATASET_NAMES = ("digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "npz")

# Directories searched, after $KERNELKIP_DATA/<name>, when ``load_dataset`` gets no data_dir.
# Debian's ``dataset-fashion-mnist`` package installs the four IDX files here.
DEFAULT_SEARCH_DIRS = {
    "fashion-mnist": ("/usr/share/datasets/fashion-mnist",),
}

_ALIASES = {"fashion_mnist": "fashion-mnist", "fashionmnist": "fashion-mnist",
            "cifar-10": "cifar10", "cifar-100": "cifar100"}

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
_DIGIT_CLASSES = tuple(str(d) for d in range(10))

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

# IDX type codes (third magic byte) -> element type; the payload is big-endian.
_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test split of an image classification dataset.

    Arrays are converted on construction: images to float32 NHWC, labels to int64.

    Parameters
    ----------
    x_train : ndarray of shape (n_train, H, W, C)
        Training images, float32, raw pixel scale.
    y_train : ndarray of shape (n_train,)
        Integer class labels in ``[0, num_classes)``.
    x_test : ndarray of shape (n_test, H, W, C)
        Test images, same trailing shape as ``x_train``.
    y_test : ndarray of shape (n_test,)
        Integer class labels in ``[0, num_classes)``.
    num_classes : int
        Number of classes.
    name : str
        Short name, e.g. ``"mnist"``.
    class_names : tuple of str, optional
        Human-readable name of each class, ``num_classes`` of them.

    Raises
    ------
    ValueError
        If shapes do not match, images are not rank 4, or labels fall outside
        ``[0, num_classes)``.

    Examples
    --------
    >>> import numpy as np
    >>> ds = Dataset(np.zeros((4, 2, 2, 1)), np.array([0, 1, 0, 1]),
    ...              np.zeros((2, 2, 2, 1)), np.array([1, 0]), num_classes=2, name="toy")
    >>> ds.x_train.dtype, ds.image_shape
    (dtype('float32'), (2, 2, 1))
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    name: str
    class_names: tuple = None

    def __post_init__(self):
        num_classes = int(self.num_classes)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes!r}")
        object.__setattr__(self, "num_classes", num_classes)
        for split in ("train", "test"):
            x = np.asarray(getattr(self, f"x_{split}"), dtype=np.float32)
            y = np.asarray(getattr(self, f"y_{split}"))
            if x.ndim != 4:
                raise ValueError(f"x_{split} has shape {x.shape}; expected (n, H, W, C)")
            if y.ndim != 1 or y.shape[0] != x.shape[0]:
                raise ValueError(f"y_{split} has shape {y.shape}; expected ({x.shape[0]},) "
                                 f"to match x_{split} of shape {x.shape}")
            y = _as_int_labels(y, f"y_{split}", num_classes)
            object.__setattr__(self, f"x_{split}", x)
            object.__setattr__(self, f"y_{split}", y)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"x_train has shape {self.x_train.shape} and x_test has shape "
                             f"{self.x_test.shape}; their image shapes must match")
        if self.class_names is not None:
            names = tuple(str(c) for c in self.class_names)
            if len(names) != num_classes:
                raise ValueError(f"class_names has {len(names)} entries; expected "
                                 f"num_classes={num_classes}")
            object.__setattr__(self, "class_names", names)

    @property
    def image_shape(self):
        """Shape ``(H, W, C)`` of one image."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self):
        return (f"Dataset(name={self.name!r}, x_train={self.x_train.shape}, "
                f"x_test={self.x_test.shape}, num_classes={self.num_classes})")


def _as_int_labels(y, name, num_classes=None):
    """Return 1-D integer labels as int64, checking the range ``[0, num_classes)``."""
    y = np.asarray(y)
    if y.dtype.kind not in "iu":
        raise ValueError(f"{name} has dtype {y.dtype}; expected integer class labels")
    y = y.astype(np.int64, copy=False)
    if y.size and y.min() < 0:
        raise ValueError(f"{name} contains the label {int(y.min())}; labels must be >= 0")
    if num_classes is not None and y.size and y.max() >= num_classes:
        raise ValueError(f"{name} contains the label {int(y.max())}; expected labels in "
                         f"[0, {num_classes})")
    return y


# ----------------------------------------------------------------------------- digits

def load_digits(*, test_fraction=1 / 3, seed=0):
    """Scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), shipped with the package.

    The data has no official split, so a stratified one is drawn once per call from a fixed
    seed: with the defaults, 1198 training and 599 test images.

    Parameters
    ----------
    test_fraction : float, default 1/3
        Fraction of each class put in the test split (rounded to the nearest integer per class).
    seed : int, default 0
        Seed of the ``np.random.default_rng`` that draws the split. The defaults give the
        documented split used by the examples and tests.

    Returns
    -------
    Dataset
        ``x_train`` of shape (1198, 8, 8, 1) and ``x_test`` of shape (599, 8, 8, 1) with the
        defaults; float32 pixel values 0..16; labels 0..9. Within each split the images keep
        their original order.

    Raises
    ------
    ValueError
        If ``test_fraction`` is not in (0, 1).

    Notes
    -----
    For each class ``c`` with ``n_c`` images, a permutation of that class's indices is drawn
    from ``np.random.default_rng(seed)`` (classes in increasing order) and its first
    ``round(test_fraction * n_c)`` entries go to the test split. The data are the UCI
    "Optical Recognition of Handwritten Digits" test set as distributed by scikit-learn
    (BSD-3-Clause); see ``docs/data.md``.

    Examples
    --------
    >>> ds = load_digits()
    >>> ds.x_train.shape, ds.x_test.shape, ds.num_classes
    ((1198, 8, 8, 1), (599, 8, 8, 1), 10)
    """
    test_fraction = float(test_fraction)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    with np.load(Path(__file__).with_name("digits.npz"), allow_pickle=False) as z:
        images, labels = z["images"], z["labels"].astype(np.int64)
    rng = np.random.default_rng(seed)
    is_test = np.zeros(labels.shape[0], dtype=bool)
    for c in range(10):
        members = np.flatnonzero(labels == c)
        n_test = int(round(test_fraction * members.size))
        is_test[rng.permutation(members)[:n_test]] = True
    x = images[..., None].astype(np.float32)
    return Dataset(x[~is_test], labels[~is_test], x[is_test], labels[is_test],
                   num_classes=10, name="digits", class_names=_DIGIT_CLASSES)


# ----------------------------------------------------------------------------- IDX (MNIST)

def read_idx(path):
    """Read one IDX file (the MNIST format), gzip-compressed or not.

    Parameters
    ----------
    path : str or path-like
        File to read; a name ending in ``.gz`` is decompressed.

    Returns
    -------
    ndarray
        Array of the shape stored in the header, in native byte order.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the magic number is not an IDX one, or the payload size does not match the header.

    Notes
    -----
    Header: two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each dimension as a big-endian
    uint32; the data follow in big-endian C order.

    Examples
    --------
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "labels-idx1-ubyte")
    >>> _ = open(path, "wb").write(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 2, 1]))
    >>> read_idx(path)
    array([7, 2, 1], dtype=uint8)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} does not exist")
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                raw = f.read()
        except (OSError, EOFError) as err:
            raise ValueError(f"{str(path)!r} is not a readable gzip file: {err}") from err
    else:
        raw = path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{str(path)!r} is not an IDX file: magic bytes {raw[:4].hex()!r}; "
                         f"expected 0000 followed by a type code in "
                         f"{sorted(f'{k:02x}' for k in _IDX_DTYPES)} and the rank")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{str(path)!r} is truncated: the header declares {ndim} dimensions")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{str(path)!r} holds {len(raw) - header} data bytes; the header "
                         f"declares shape {dims}, i.e. {expected} bytes")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def _find_idx_files(directory):
    """Map each IDX base name to an existing file (raw preferred over ``.gz``), or None."""
    directory = Path(directory)
    found = {}
    for base in _IDX_FILES:
        for candidate in (directory / base, directory / f"{base}.gz"):
            if candidate.is_file():
                found[base] = candidate
                break
        else:
            found[base] = None
    return found


def _missing_message(directory, expected, hint=""):
    listing = ", ".join(expected)
    text = f"no dataset files in {str(directory)!r}; expected {listing}"
    return text + (f". {hint}" if hint else "")


def load_idx(directory, *, name="mnist", class_names=None):
    """Load MNIST-style IDX files (MNIST, Fashion-MNIST, KMNIST) from a directory.

    Parameters
    ----------
    directory : str or path-like
        Directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each optionally with a
        ``.gz`` suffix (an uncompressed file is preferred when both exist).
    name : str, default "mnist"
        Stored as ``Dataset.name``.
    class_names : sequence of str, optional
        Stored as ``Dataset.class_names``.

    Returns
    -------
    Dataset
        Images of shape (n, 28, 28, 1), float32 values 0..255; ``num_classes`` is
        ``max(label) + 1`` over both splits.

    Raises
    ------
    FileNotFoundError
        If the directory or any of the four files is missing; the message names the directory
        and the expected files.
    ValueError
        If a file is not IDX (bad magic), is truncated, or images and labels disagree in count.

    See Also
    --------
    read_idx : read a single IDX file.

    Examples
    --------
    >>> ds = load_idx("/usr/share/datasets/fashion-mnist",
    ...               name="fashion-mnist")  # doctest: +SKIP
    >>> ds.x_train.shape  # doctest: +SKIP
    (60000, 28, 28, 1)
    """
    directory = Path(directory).expanduser()
    expected = [f"{base}[.gz]" for base in _IDX_FILES]
    if not directory.is_dir():
        raise FileNotFoundError(f"directory {str(directory)!r} does not exist; expected it to "
                                f"hold {', '.join(expected)}")
    found = _find_idx_files(directory)
    missing = [f"{b}[.gz]" for b, p in found.items() if p is None]
    if missing:
        raise FileNotFoundError(f"directory {str(directory)!r} lacks {', '.join(missing)}; "
                                f"expected {', '.join(expected)}")
    arrays = {base: read_idx(p) for base, p in found.items()}
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = arrays[f"{prefix}-images-idx3-ubyte"]
        labels = arrays[f"{prefix}-labels-idx1-ubyte"]
        if images.ndim != 3 or labels.ndim != 1:
            raise ValueError(f"{prefix} images have shape {images.shape} and labels "
                             f"{labels.shape}; expected (n, H, W) and (n,)")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{prefix} split has {images.shape[0]} images but "
                             f"{labels.shape[0]} labels")
        splits[split] = (images[..., None].astype(np.float32), labels.astype(np.int64))
    num_classes = int(max(splits["train"][1].max(initial=0), splits["test"][1].max(initial=0))) + 1
    return Dataset(*splits["train"], *splits["test"], num_classes=num_classes, name=name,
                   class_names=class_names)


# ----------------------------------------------------------------------------- CIFAR

# The CIFAR python batches were written by cPickle from Python 2: dicts of bytes keys, lists
# and numpy arrays. Only the globals numpy needs to rebuild arrays are allowed, so a file from
# an untrusted source cannot run arbitrary code through pickle.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 writes bytes at pickle protocol 2
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals of ``_PICKLE_ALLOWED``."""

    def find_class(self, module, name):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from a "
                                         f"dataset pickle")
        candidates = [module]
        if module.startswith("numpy.core."):
            # numpy>=2 moved numpy.core to numpy._core and warns on the old name
            candidates.insert(0, module.replace("numpy.core.", "numpy._core.", 1))
        for candidate in candidates:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    return getattr(importlib.import_module(candidate), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"cannot resolve {module}.{name} with numpy "
                                     f"{np.__version__}")


def _unpickle(path):
    """Read one CIFAR python batch as a dict with str keys."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except pickle.UnpicklingError as err:
        raise ValueError(f"{str(path)!r} is not a CIFAR python batch as published ({err}); "
                         f"replace it with the file from the original archive") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise ValueError(f"{str(path)!r} is truncated or not a CIFAR python batch "
                         f"({type(err).__name__}: {err}); replace it with the file from the "
                         f"original archive") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{str(path)!r} holds a {type(obj).__name__}; expected a dict batch")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _decode_names(names):
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def _field(batch, key, path):
    if key not in batch:
        raise ValueError(f"{str(path)!r} lacks {key!r} (it has {sorted(batch)}); it is not a "
                         f"CIFAR python batch as published")
    return batch[key]


def _cifar_images(batch, path):
    data = np.asarray(_field(batch, "data", path), dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{str(path)!r}: 'data' has shape {data.shape}; expected (n, 3072)")
    # rows are channel-major (1024 red, 1024 green, 1024 blue), each 32x32 row-major
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32)


def _cifar_batch(path, label_key):
    """Images (NHWC float32) and integer labels of one CIFAR python batch file."""
    batch = _unpickle(path)
    x = _cifar_images(batch, path)
    y = np.asarray(_field(batch, label_key, path), dtype=np.int64)
    if y.shape != (x.shape[0],):
        raise ValueError(f"{str(path)!r}: {x.shape[0]} images but {label_key} of shape {y.shape}")
    return x, y


def _resolve_cifar_dir(directory, subdir, marker, expected):
    directory = Path(directory)
    for candidate in (directory, directory / subdir):
        if (candidate / marker).is_file():
            return candidate
    state = "does not exist" if not directory.is_dir() else "lacks the batch files"
    raise FileNotFoundError(f"directory {str(directory)!r} {state}; expected "
                            f"{', '.join(expected)} in it or in its {subdir}/ subdirectory")


def load_cifar10(directory):
    """Load CIFAR-10 from the python pickle batches.

    Parameters
    ----------
    directory : str or path-like
        Directory holding ``data_batch_1`` .. ``data_batch_5`` and ``test_batch`` (and
        optionally ``batches.meta``), or its parent holding ``cifar-10-batches-py/``.

    Returns
    -------
    Dataset
        ``x_train`` (50000, 32, 32, 3) and ``x_test`` (10000, 32, 32, 3), float32 0..255;
        class names from ``batches.meta`` when present.

    Raises
    ------
    FileNotFoundError
        If the directory or a batch file is missing.
    ValueError
        If a batch does not hold (n, 3072) ``data`` with matching ``labels``.
        Also if a batch references anything but numpy arrays (refused, not run), or is
        truncated.

    Notes
    -----
    The batches are pickles. They are read with an unpickler that only resolves the numpy
    names needed to rebuild arrays, so a tampered file fails instead of running code.

    Examples
    --------
    >>> ds = load_cifar10("~/data/cifar-10-batches-py")  # doctest: +SKIP
    >>> ds.x_train.shape  # doctest: +SKIP
    (50000, 32, 32, 3)
    """
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    expected = train_files + ["test_batch"]
    root = _resolve_cifar_dir(Path(directory).expanduser(), "cifar-10-batches-py",
                              "data_batch_1", expected)
    missing = [f for f in expected if not (root / f).is_file()]
    if missing:
        raise FileNotFoundError(f"directory {str(root)!r} lacks {', '.join(missing)}; expected "
                                f"{', '.join(expected)}")

    def read(files):
        xs, ys = [], []
        for fname in files:
            x, y = _cifar_batch(root / fname, "labels")
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    class_names = None
    if (root / "batches.meta").is_file():
        class_names = _decode_names(_field(_unpickle(root / "batches.meta"), "label_names",
                                           root / "batches.meta"))
    return Dataset(*read(train_files), *read(["test_batch"]), num_classes=10, name="cifar10",
                   class_names=class_names)


def load_cifar100(directory):
    """Load CIFAR-100 (fine labels) from the python pickle files.

    Parameters
    ----------
    directory : str or path-like
        Directory holding ``train`` and ``test`` (and optionally ``meta``), or its parent
        holding ``cifar-100-python/``.

    Returns
    -------
    Dataset
        ``x_train`` (50000, 32, 32, 3) and ``x_test`` (10000, 32, 32, 3), float32 0..255,
        100 fine classes; class names from ``meta`` when present.

    Raises
    ------
    FileNotFoundError
        If the directory or a file is missing.
    ValueError
        If a file does not hold (n, 3072) ``data`` with matching ``fine_labels``, references
        anything but numpy arrays (refused, not run), or is truncated.

    See Also
    --------
    load_cifar10 : the same format with 10 classes; notes on reading the pickles safely.

    Examples
    --------
    >>> ds = load_cifar100("~/data/cifar-100-python")  # doctest: +SKIP
    >>> ds.num_classes  # doctest: +SKIP
    100
    """
    expected = ["train", "test"]
    root = _resolve_cifar_dir(Path(directory).expanduser(), "cifar-100-python", "train",
                              expected)
    if not (root / "test").is_file():
        raise FileNotFoundError(f"directory {str(root)!r} lacks test; expected train, test")
    splits = []
    for fname in expected:
        splits += list(_cifar_batch(root / fname, "fine_labels"))
    class_names = None
    if (root / "meta").is_file():
        class_names = _decode_names(_field(_unpickle(root / "meta"), "fine_label_names",
                                           root / "meta"))
    return Dataset(*splits, num_classes=100, name="cifar100", class_names=class_names)


# ----------------------------------------------------------------------------- SVHN

def load_svhn(directory):
    """Load SVHN (cropped digits) from ``train_32x32.mat`` and ``test_32x32.mat``.

    Parameters
    ----------
    directory : str or path-like
        Directory holding the two MATLAB files of the "Format 2" release.

    Returns
    -------
    Dataset
        ``x_train`` (73257, 32, 32, 3) and ``x_test`` (26032, 32, 32, 3), float32 0..255;
        the digit 0, stored as label 10 in the files, becomes label 0.

    Raises
    ------
    FileNotFoundError
        If the directory or a file is missing.
    ValueError
        If a file lacks ``X`` of shape (32, 32, 3, n) or ``y`` with n entries.

    Notes
    -----
    The files store images as ``X[h, w, c, n]`` (HWCN); they are transposed to NHWC.
    ``extra_32x32.mat`` is not read.

    Examples
    --------
    >>> ds = load_svhn("~/data/svhn")  # doctest: +SKIP
    >>> ds.y_train.max()  # doctest: +SKIP
    9
    """
    from scipy.io import loadmat

    directory = Path(directory).expanduser()
    expected = ["train_32x32.mat", "test_32x32.mat"]
    if not directory.is_dir():
        raise FileNotFoundError(f"directory {str(directory)!r} does not exist; expected "
                                f"{', '.join(expected)}")
    missing = [f for f in expected if not (directory / f).is_file()]
    if missing:
        raise FileNotFoundError(f"directory {str(directory)!r} lacks {', '.join(missing)}; "
                                f"expected {', '.join(expected)}")
    splits = []
    for fname in expected:
        mat = loadmat(directory / fname, variable_names=["X", "y"])
        if "X" not in mat or "y" not in mat:
            raise ValueError(f"{str(directory / fname)!r} lacks the variables 'X' and 'y'")
        X, y = mat["X"], np.asarray(mat["y"]).reshape(-1)
        if X.ndim != 4 or X.shape[-1] != y.shape[0]:
            raise ValueError(f"{str(directory / fname)!r}: X has shape {X.shape} and y "
                             f"{y.shape}; expected (H, W, C, n) and n labels")
        y = y.astype(np.int64)
        y[y == 10] = 0
        splits += [np.transpose(X, (3, 0, 1, 2)).astype(np.float32), y]
    return Dataset(*splits, num_classes=10, name="svhn", class_names=_DIGIT_CLASSES)


# ----------------------------------------------------------------------------- npz

def load_npz(path, *, name=None):
    """Load a dataset saved with ``np.savez`` under the keys x_train, y_train, x_test, y_test.

    Parameters
    ----------
    path : str or path-like
        The ``.npz`` file. Images may be (n, H, W, C) or (n, H, W), which gets C = 1; labels
        are 1-D integers. Optional keys: ``num_classes`` (scalar) and ``class_names``
        (array of str).
    name : str, optional
        ``Dataset.name``; defaults to the file's stem.

    Returns
    -------
    Dataset
        ``num_classes`` from the file, else ``max(label) + 1`` over both splits.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        If a required key is missing or an array has the wrong rank.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "toy.npz")
    >>> np.savez(path, x_train=np.zeros((4, 3, 3)), y_train=[0, 1, 2, 1],
    ...          x_test=np.zeros((2, 3, 3)), y_test=[2, 0])
    >>> ds = load_npz(path)
    >>> ds.x_train.shape, ds.num_classes
    ((4, 3, 3, 1), 3)
    """
    path = Path(path).expanduser()
    keys = ("x_train", "y_train", "x_test", "y_test")
    if not path.is_file():
        raise FileNotFoundError(f"npz file {str(path)!r} does not exist; expected an archive "
                                f"with keys {', '.join(keys)}")
    z = read_npz(path, "dataset")
    missing = [k for k in keys if k not in z]
    if missing:
        raise ValueError(f"{str(path)!r} lacks the keys {missing}; found {sorted(z)}")
    arrays = {k: z[k] for k in keys}
    num_classes = int(z["num_classes"]) if "num_classes" in z else None
    class_names = tuple(str(c) for c in z["class_names"]) if "class_names" in z else None
    for split in ("train", "test"):
        x = arrays[f"x_{split}"]
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise ValueError(f"x_{split} in {str(path)!r} has shape {x.shape}; expected "
                             f"(n, H, W, C) or (n, H, W)")
        y = arrays[f"y_{split}"]
        if y.ndim == 2 and y.shape[1] == 1:  # MATLAB-style column of labels
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"y_{split} in {str(path)!r} has shape {y.shape}; expected "
                             f"(n,) integer class labels")
        arrays[f"x_{split}"] = x
        arrays[f"y_{split}"] = _as_int_labels(y, f"y_{split}")
    if num_classes is None:
        num_classes = int(max(arrays["y_train"].max(initial=0),
                              arrays["y_test"].max(initial=0))) + 1
    return Dataset(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                   num_classes=num_classes, name=name or path.stem, class_names=class_names)


# ----------------------------------------------------------------------------- dispatch

_LOADERS = {
    "mnist": lambda d: load_idx(d, name="mnist", class_names=_DIGIT_CLASSES),
    "fashion-mnist": lambda d: load_idx(d, name="fashion-mnist",
                                        class_names=FASHION_MNIST_CLASSES),
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "svhn": load_svhn,
}

_MARKERS = {  # a file whose presence marks a candidate directory as holding the dataset
    "mnist": None, "fashion-mnist": None,
    "cifar10": ("data_batch_1", "cifar-10-batches-py/data_batch_1"),
    "cifar100": ("train", "cifar-100-python/train"),
    "svhn": ("train_32x32.mat",),
}

_EXPECTED = {
    "mnist": [f"{b}[.gz]" for b in _IDX_FILES],
    "fashion-mnist": [f"{b}[.gz]" for b in _IDX_FILES],
    "cifar10": [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
    "cifar100": ["train", "test"],
    "svhn": ["train_32x32.mat", "test_32x32.mat"],
}


def _looks_complete(name, directory):
    if _MARKERS[name] is None:
        return all(p is not None for p in _find_idx_files(directory).values())
    return any((directory / m).is_file() for m in _MARKERS[name])


def _search_dirs(name):
    """Candidate directories for ``name``: $KERNELKIP_DATA/<name>, then DEFAULT_SEARCH_DIRS."""
    dirs = []
    root = os.environ.get("KERNELKIP_DATA")
    if root:
        dirs.append(Path(root).expanduser() / name)
    dirs += [Path(d) for d in DEFAULT_SEARCH_DIRS.get(name, ())]
    return dirs


def load_dataset(name, data_dir=None):
    """Load a dataset by name.

    Parameters
    ----------
    name : str
        One of ``"digits", "mnist", "fashion-mnist", "cifar10", "cifar100", "svhn", "npz"``
        (case-insensitive; ``_`` may replace ``-``, and ``cifar-10`` / ``cifar-100`` are
        accepted).
    data_dir : str or path-like, optional
        Directory holding the files (for ``"npz"``: the ``.npz`` file itself). Ignored for
        ``"digits"``, which ships with the package. When ``None``, the directories
        ``$KERNELKIP_DATA/<name>`` and then ``DEFAULT_SEARCH_DIRS[name]`` are searched; for
        ``"fashion-mnist"`` the latter is ``/usr/share/datasets/fashion-mnist``, where the
        Debian package ``dataset-fashion-mnist`` installs the IDX files.

    Returns
    -------
    Dataset

    Raises
    ------
    ValueError
        If ``name`` is unknown (the message lists the valid names), or ``"npz"`` is given
        without ``data_dir``.
    FileNotFoundError
        If no directory holds the files; the message lists the directories searched, the
        files expected and how to provide them.

    See Also
    --------
    load_digits, load_idx, load_cifar10, load_cifar100, load_svhn, load_npz

    Examples
    --------
    >>> load_dataset("digits").x_train.shape
    (1198, 8, 8, 1)
    >>> load_dataset("fashion-mnist").num_classes  # doctest: +SKIP
    10
    """
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a str, got {name!r}; expected one of "
                         f"{DATASET_NAMES}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key.replace("_", "-"))
    key = _ALIASES.get(key, key)
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {DATASET_NAMES}")
    if key == "digits":
        return load_digits()
    if key == "npz":
        if data_dir is None:
            raise ValueError("dataset 'npz' needs data_dir, the path of the .npz file")
        return load_npz(data_dir)
    if data_dir is not None:
        return _LOADERS[key](Path(data_dir).expanduser())
    searched = _search_dirs(key)
    for directory in searched:
        if directory.is_dir() and _looks_complete(key, directory):
            return _LOADERS[key](directory)
    where = ", ".join(repr(str(d)) for d in searched) or "nowhere"
    hint = (f"pass data_dir (--data-dir) or set KERNELKIP_DATA so that "
            f"$KERNELKIP_DATA/{key} holds them")
    if key == "fashion-mnist":
        hint = "install them with `apt-get install dataset-fashion-mnist`, or " + hint
    raise FileNotFoundError(f"{key} files not found (searched {where}); expected "
                            f"{', '.join(_EXPECTED[key])}; {hint}")


# ----------------------------------------------------------------------------- sampling

def class_balanced_sample(y, per_class, rng, num_classes=None):
    """Draw ``per_class`` distinct indices from every class.

    Parameters
    ----------
    y : array_like of int, shape (n,)
        Class labels in ``[0, num_classes)``.
    per_class : int
        Examples per class (the "images per class", ipc), at least 1.
    rng : numpy.random.Generator
        Source of randomness.
    num_classes : int, optional
        Number of classes; defaults to ``max(y) + 1``. Every class must have at least
        ``per_class`` examples.

    Returns
    -------
    indices : ndarray of int64, shape (num_classes * per_class,)
        Grouped by class (class 0 first); ascending within a class. ``y[indices]`` is
        ``np.repeat(np.arange(num_classes), per_class)``.

    Raises
    ------
    ValueError
        If ``per_class`` is < 1 or larger than the smallest class, or labels are invalid.
    TypeError
        If ``rng`` is not a ``numpy.random.Generator``.

    Notes
    -----
    Within a call, indices are drawn without replacement; the same ``rng`` state gives the
    same indices.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([0, 1, 0, 1, 2, 2, 0])
    >>> idx = class_balanced_sample(y, 2, np.random.default_rng(0))
    >>> y[idx]
    array([0, 0, 1, 1, 2, 2])
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}; "
                        f"use np.random.default_rng(seed)")
    if isinstance(per_class, (bool, np.bool_)) or not isinstance(per_class, (int, np.integer)):
        raise ValueError(f"per_class must be an int, got {per_class!r}")
    per_class = int(per_class)
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y has shape {y.shape}; expected 1-D integer class labels")
    y = _as_int_labels(y, "y", num_classes)
    if num_classes is None:
        if y.size == 0:
            raise ValueError("y is empty; cannot sample from no examples")
        num_classes = int(y.max()) + 1
    num_classes = int(num_classes)
    counts = np.bincount(y, minlength=num_classes)
    smallest = int(np.argmin(counts))
    if per_class > counts[smallest]:
        raise ValueError(f"ipc {per_class} is larger than class {smallest}, which has "
                         f"{counts[smallest]} examples")
    # a stable sort groups indices by class, each group ascending
    order = np.argsort(y, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    chosen = [np.sort(rng.choice(order[starts[c]:starts[c + 1]], per_class, replace=False))
              for c in range(num_classes)]
    return np.concatenate(chosen).astype(np.int64)
