"""Input and label preprocessing for kernel distillation: standardisation, layer norm, ZCA.

Statistics (means, variances, the ZCA covariance and its eigendecomposition) are accumulated in
float64. Outputs are float64 when the corresponding input is float64 and float32 otherwise.
Every fitted transform is fitted on the *first* array (the training set) and applied unchanged
to the others, so test data never leak into the statistics.
"""
import numpy as np

__all__ = ["standardize", "layer_norm", "zca", "one_hot_centered"]

_CHUNK = 4096  # rows per block when accumulating float64 statistics of float32 data


def _out_dtype(a):
    return np.float64 if a.dtype == np.float64 else np.float32


def _as_batch(a, name, min_ndim=2):
    a = np.asarray(a)
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{name} has dtype {a.dtype}; expected a real numeric array")
    if a.ndim < min_ndim:
        raise ValueError(f"{name} has shape {a.shape}; expected at least {min_ndim} "
                         f"dimensions with the batch first")
    if a.shape[0] == 0:
        raise ValueError(f"{name} has shape {a.shape}; the batch is empty")
    return a


def _row_blocks(n):
    for start in range(0, n, _CHUNK):
        yield slice(start, min(start + _CHUNK, n))


def standardize(x_train, *others, per_channel=True):
    """Centre and scale arrays with the mean and standard deviation of the training set.

    Parameters
    ----------
    x_train : ndarray of shape (n, ..., C)
        Training inputs (NHWC images, or (n, d) features); the statistics come from here.
    *others : ndarray of shape (m, ..., C)
        Further arrays (test set, support set) transformed with the same statistics.
    per_channel : bool, default True
        One mean and std per channel (the last axis), taken over all other axes (N, H, W).
        ``False`` uses one scalar mean and std over all entries.

    Returns
    -------
    *arrays : ndarray
        ``x_train`` and each of ``others``, standardised, in the order given; float64 where the
        input was float64, float32 otherwise.
    stats : tuple of (mean, std)
        The statistics used: ndarrays of shape (C,) in float64, or floats when
        ``per_channel=False``. A zero std (a constant channel) is replaced by 1.

    Raises
    ------
    ValueError
        If an array has fewer than 2 dimensions, is empty, or (per channel) has a different
        number of channels from ``x_train``.

    See Also
    --------
    layer_norm : per-image normalisation, usually applied next.
    zca : whitening fitted on the standardised training set.

    Notes
    -----
    :math:`\\tilde x_{nhwc} = (x_{nhwc} - \\mu_c) / \\sigma_c` with
    :math:`\\mu_c, \\sigma_c` the mean and population std (``ddof=0``) of channel ``c`` over
    the training set, so the training set has mean 0 and std 1 in every channel.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(12.0).reshape(3, 2, 2, 1)
    >>> x_std, (mean, std) = standardize(x)
    >>> float(abs(x_std.mean())) < 1e-12, round(float(x_std.std()), 12), mean
    (True, 1.0, array([5.5]))
    """
    x_train = _as_batch(x_train, "x_train")
    arrays = [x_train] + [_as_batch(a, f"others[{i}]") for i, a in enumerate(others)]
    if per_channel:
        channels = x_train.shape[-1]
        for i, a in enumerate(arrays[1:]):
            if a.shape[-1] != channels:
                raise ValueError(f"others[{i}] has shape {a.shape}; expected {channels} "
                                 f"channels in the last axis, as x_train {x_train.shape}")
        flat = x_train.reshape(-1, channels)
    else:
        flat = x_train.reshape(-1, 1)
    # two passes in float64 over row blocks: no float64 copy of the whole training set
    mean = flat.sum(axis=0, dtype=np.float64) / flat.shape[0]
    sq = np.zeros_like(mean)
    for rows in _row_blocks(flat.shape[0]):
        sq += ((flat[rows].astype(np.float64) - mean) ** 2).sum(axis=0)
    std = np.sqrt(sq / flat.shape[0])
    std[std == 0] = 1.0
    out = []
    for a in arrays:
        dtype = _out_dtype(a)
        m, s = mean.astype(dtype), std.astype(dtype)
        if not per_channel:
            m, s = m[0], s[0]
        out.append((a.astype(dtype) - m) / s)
    stats = (mean, std) if per_channel else (float(mean[0]), float(std[0]))
    return (*out, stats)


def layer_norm(x):
    """Normalise each example to zero mean and unit mean square over all its entries.

    Parameters
    ----------
    x : ndarray of shape (n, ...)
        Batch of examples (e.g. NHWC images).

    Returns
    -------
    ndarray of the shape of ``x``
        Each example minus its mean, divided by its root mean square; float64 where ``x`` is
        float64, float32 otherwise. An example that is constant maps to zeros.

    Raises
    ------
    ValueError
        If ``x`` has fewer than 2 dimensions or is empty.

    See Also
    --------
    zca : usually applied after this; its relative regulariser makes the overall scale
        irrelevant.

    Notes
    -----
    With :math:`d` entries per example, :math:`\\bar x = x - \\operatorname{mean}(x)` and
    :math:`\\tilde x = \\sqrt d\\, \\bar x / \\lVert \\bar x \\rVert_2`, so
    :math:`\\lVert \\tilde x \\rVert_2^2 / d = 1`. This is the layer norm of the KIP code
    (Nguyen et al., 2021) up to the factor :math:`\\sqrt d`, which keeps entries O(1).

    Examples
    --------
    >>> import numpy as np
    >>> z = layer_norm(np.array([[1.0, 2.0, 3.0, 6.0]]))
    >>> round(float(z.mean()), 12), round(float((z ** 2).mean()), 12)
    (0.0, 1.0)
    """
    x = _as_batch(x, "x")
    dtype = _out_dtype(x)
    flat = x.reshape(x.shape[0], -1)
    d = flat.shape[1]
    mean = flat.mean(axis=1, dtype=np.float64)
    centred = flat.astype(dtype) - mean.astype(dtype)[:, None]
    rms = np.sqrt(np.einsum("ij,ij->i", centred, centred, dtype=np.float64) / d)
    rms[rms == 0] = 1.0
    return (centred / rms.astype(dtype)[:, None]).reshape(x.shape)


def zca(x_train, *others, strength=0.1):
    """Regularised ZCA whitening fitted on the training set, applied to every given array.

    Parameters
    ----------
    x_train : ndarray of shape (n, ...)
        Training inputs, already centred: per example by :func:`layer_norm`, or by the
        training mean through :func:`standardize`. ``zca`` does not centre them itself.
    *others : ndarray of shape (m, ...)
        Further arrays with the same number of entries per example, transformed with the
        matrix fitted on ``x_train``.
    strength : float, default 0.1
        Regulariser relative to the mean eigenvalue: ``reg = strength * trace(cov) / d``.
        ``0`` gives exact whitening, which needs a non-singular covariance.

    Returns
    -------
    ndarray or tuple of ndarray
        The whitened ``x_train`` (a single array when no ``others`` are given), else a tuple
        of every array in the order given, each in its input's shape; float64 where the input
        was float64, float32 otherwise.

    Raises
    ------
    ValueError
        If ``strength`` is negative or not finite, the per-example sizes differ, or the
        regularised covariance is singular (``strength=0`` with fewer examples than
        features).

    See Also
    --------
    standardize, layer_norm : the centring steps that come first.

    Notes
    -----
    This is the ZCA recipe of the KIP code and neural-tangents' examples. With :math:`X` the
    flattened training set (n, d),

    .. math::

        C = X^\\top X / n = U \\operatorname{diag}(\\lambda) U^\\top, \\quad
        r = s \\operatorname{tr}(C) / d, \\quad
        W = U \\operatorname{diag}\\big((\\lambda + r)^{-1/2}\\big) U^\\top,

    and every array is mapped to :math:`X W`. The whitened training covariance is
    :math:`U \\operatorname{diag}(\\lambda / (\\lambda + r)) U^\\top`: directions with
    eigenvalue well above :math:`r` are whitened, those well below are damped. :math:`C` is
    the uncentred second moment, so the input must be centred beforehand. Because :math:`r`
    scales with :math:`C`, the output does not change when the input is rescaled. The
    neural-tangents version also resets the scale of the ``d - n`` null directions to 1 when
    ``n < d``; here they keep :math:`r^{-1/2}`, as the formula above says. The eigenvectors
    come from ``numpy.linalg.eigh`` in float64 (cost O(d^3); d = 3072 for CIFAR).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = layer_norm(rng.normal(size=(200, 4, 4, 1)))
    >>> x_tr, x_te = zca(x, x[:10], strength=0.1)
    >>> x_tr.shape, x_te.dtype
    ((200, 4, 4, 1), dtype('float64'))
    """
    try:
        strength = float(strength)
    except (TypeError, ValueError):
        raise ValueError(f"strength must be a number, got {strength!r}") from None
    if not np.isfinite(strength) or strength < 0:
        raise ValueError(f"strength must be a finite number >= 0, got {strength!r}")
    x_train = _as_batch(x_train, "x_train")
    arrays = [x_train] + [_as_batch(a, f"others[{i}]") for i, a in enumerate(others)]
    n = x_train.shape[0]
    d = int(np.prod(x_train.shape[1:], dtype=np.int64))
    for i, a in enumerate(arrays[1:]):
        if int(np.prod(a.shape[1:], dtype=np.int64)) != d:
            raise ValueError(f"others[{i}] has shape {a.shape}; expected {d} entries per "
                             f"example, as x_train {x_train.shape}")
    flat = x_train.reshape(n, d)
    cov = np.zeros((d, d))
    for rows in _row_blocks(n):
        block = flat[rows].astype(np.float64)
        cov += block.T @ block
    cov /= n
    lam, U = np.linalg.eigh(cov)
    lam = np.clip(lam, 0.0, None)  # eigh can return tiny negative values for a PSD matrix
    reg = strength * np.trace(cov) / d
    shifted = lam + reg
    if shifted.min() <= 1e-12 * max(shifted.max(), np.finfo(float).tiny):
        raise ValueError(f"the regularised covariance of x_train is singular (strength="
                         f"{strength}, {n} examples, {d} features); use strength > 0 or "
                         f"more examples")
    W = (U / np.sqrt(shifted)) @ U.T
    out = []
    for a in arrays:
        dtype = _out_dtype(a)
        out.append((a.reshape(a.shape[0], d).astype(dtype) @ W.astype(dtype)).reshape(a.shape))
    return out[0] if len(out) == 1 else tuple(out)


def one_hot_centered(y, num_classes, *, dtype=np.float32):
    """Centred one-hot targets: one-hot encoding minus ``1 / num_classes``.

    Parameters
    ----------
    y : array_like of int, shape (n,)
        Class labels in ``[0, num_classes)``.
    num_classes : int
        Number of classes C, at least 1.
    dtype : dtype, default float32
        Output dtype.

    Returns
    -------
    ndarray of shape (n, num_classes)
        ``1 - 1/C`` in the label's column and ``-1/C`` elsewhere; each row sums to 0.

    Raises
    ------
    ValueError
        If ``y`` is not 1-D integer, has a label outside ``[0, num_classes)``, or
        ``num_classes`` < 1.

    Notes
    -----
    These are the regression targets of KIP (Nguyen et al., 2021): kernel ridge regression on
    zero-mean targets, predicted class = argmax of the output.

    Examples
    --------
    >>> one_hot_centered([0, 2], 4)
    array([[ 0.75, -0.25, -0.25, -0.25],
           [-0.25, -0.25,  0.75, -0.25]], dtype=float32)
    """
    is_int = isinstance(num_classes, (int, np.integer))
    if isinstance(num_classes, (bool, np.bool_)) or not is_int:
        raise ValueError(f"num_classes must be an int, got {num_classes!r}")
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    y = np.asarray(y)
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise ValueError(f"y has shape {y.shape} and dtype {y.dtype}; expected 1-D integer "
                         f"class labels")
    y = y.astype(np.int64)
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        raise ValueError(f"y contains the label {int(y[bad][0])}; expected labels in "
                         f"[0, {num_classes})")
    out = np.full((y.shape[0], num_classes), -1.0 / num_classes, dtype=np.float64)
    out[np.arange(y.shape[0]), y] += 1.0
    return out.astype(dtype)
