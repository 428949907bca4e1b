"""Validation at the public boundary: one check per concern, messages that quote the bad value."""
import numpy as np

from .backend import array_namespace

__all__ = ["check_array", "check_pair", "check_finite", "check_labels", "check_choice",
           "check_positive", "check_float_dtype"]

_FLOATS = (np.float32, np.float64)


def check_finite(a, name):
    """Raise ``ValueError`` if ``a`` holds NaN or inf."""
    xp = array_namespace(a)
    if not bool(xp.all(xp.isfinite(a))):
        bad = int(xp.sum(~xp.isfinite(a)))
        raise ValueError(f"{name} contains {bad} NaN or infinite value(s); "
                         f"pass check_finite=False to skip this check")


def check_array(a, name, *, min_ndim=2, dtype=None, finite=True):
    """Return ``a`` as a float32/float64 array of rank >= ``min_ndim`` (ints become float64).

    Parameters
    ----------
    a : array_like
    name : str
        Used in messages.
    min_ndim : int
        Least rank; the leading axis is the batch.
    dtype : dtype, optional
        Cast to this dtype.
    finite : bool
        Check for NaN/inf.
    """
    if a is None:
        raise ValueError(f"{name} is None")
    xp = array_namespace(a)
    a = xp.asarray(a)
    if a.ndim < min_ndim:
        raise ValueError(f"{name} has shape {a.shape}; expected at least {min_ndim} dimensions "
                         f"(a batch axis first)")
    if a.shape[0] == 0:
        raise ValueError(f"{name} has shape {a.shape}; the batch is empty")
    if dtype is not None:
        a = a.astype(dtype, copy=False)
    elif a.dtype not in _FLOATS:
        if a.dtype.kind in "biu":
            a = a.astype(np.float64)
        else:
            raise ValueError(f"{name} has dtype {a.dtype}; expected float32 or float64")
    if finite:
        check_finite(a, name)
    return a


def check_pair(x1, x2, *, min_ndim=2, finite=True):
    """Validate two input batches that must share their trailing shape and dtype.

    ``x2=None`` is passed through. Mixed float32/float64 pairs are promoted to float64.
    """
    x1 = check_array(x1, "x1", min_ndim=min_ndim, finite=finite)
    if x2 is None:
        return x1, None
    x2 = check_array(x2, "x2", min_ndim=min_ndim, finite=finite)
    if x1.shape[1:] != x2.shape[1:]:
        raise ValueError(f"x1 has shape {x1.shape} and x2 has shape {x2.shape}; "
                         f"their trailing (feature) shapes must match")
    if x1.dtype != x2.dtype:
        x1, x2 = x1.astype(np.float64), x2.astype(np.float64)
    return x1, x2


def check_labels(y, n, name="y", *, num_classes=None, finite=True):
    """Return labels as a float 2-D array of shape (n, k).

    1-D labels are taken as targets of a single output; pass integer class labels through
    ``kernelkip.data.one_hot_centered`` first. ``num_classes`` checks the width.
    """
    xp = array_namespace(y)
    y = xp.asarray(y)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ValueError(f"{name} has shape {y.shape}; expected (n,) or (n, num_classes)")
    if y.shape[0] != n:
        raise ValueError(f"{name} has {y.shape[0]} rows but there are {n} inputs")
    if num_classes is not None and y.shape[1] != num_classes:
        raise ValueError(f"{name} has {y.shape[1]} columns; expected num_classes={num_classes}")
    if y.dtype not in _FLOATS:
        y = y.astype(np.float64)
    if finite:
        check_finite(y, name)
    return y


def check_choice(value, name, choices):
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; expected one of {tuple(choices)}")
    return value


def check_float_dtype(dtype, name):
    """Return ``np.dtype(dtype)``; raise ``ValueError`` unless it is float32 or float64.

    For arrays that reach compiled loops, which are typed for these two only (float16 fails
    there with a typing error, and integers truncate random draws to 0).
    """
    try:
        d = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"{name} must be float32 or float64, got {dtype!r}") from None
    if d not in _FLOATS:
        raise ValueError(f"{name} must be float32 or float64, got {d}")
    return d


def check_positive(value, name, *, strict=False):
    """Raise ``ValueError`` unless ``value`` is a finite number >= 0 (> 0 when strict)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or v < 0 or (strict and v == 0):
        raise ValueError(f"{name} must be {'> 0' if strict else '>= 0'}, got {value!r}")
    return v
