"""Evaluation of a distilled set: kernel ridge regression on a full test set, in blocks."""
import numpy as np

from . import _validation, krr
from ._progress import progress_bar
from .features import RandomFeatures, features, sample_weights
from .kernels import kernel as kernel_fn
from .kernels.recursion import GETS

__all__ = ["krr_predict", "krr_accuracy"]


def _rf_kernel_fn(x_s, rf, seed):
    """``k(x, x_s)`` with one fixed draw of ``rf``'s networks; the support's features kept."""
    weights = sample_weights(rf, x_s.shape[1:], np.random.default_rng(seed), x_s.dtype)
    phi_s = features(x_s, weights, rf).astype(np.float64)
    b2 = rf.head.b_std ** 2

    def k(x1, x2, **_):
        if x1 is x_s:
            return phi_s @ phi_s.T + b2
        return features(x1, weights, rf, check_finite=False).astype(np.float64) @ phi_s.T + b2
    return k


def krr_predict(x_support, y_support, x_test, arch, *, kernel="ntk", reg=1e-6,
                ridge_scale="trace", block_size=2000, engine="auto", progress=False, seed=0):
    """KRR predictions on ``x_test`` from the support set, computed ``block_size`` rows at a time.

    Memory stays at ``O(block_size * n_support)`` whatever the size of the test set.

    Parameters
    ----------
    x_support : ndarray of shape (n_s, ...)
    y_support : ndarray of shape (n_s, k)
    x_test : ndarray of shape (n_test, ...)
    arch : Serial or kernelkip.RandomFeatures
        A ``RandomFeatures`` value gives the random-feature kernel (eq. rf.1) of one draw of
        its networks from ``np.random.default_rng(seed)``; ``kernel`` and ``engine`` are then
        not used.
    kernel : {"ntk", "nngp"}
    reg, ridge_scale
        As in :func:`kernelkip.krr.factor`.
    block_size : int
        Test rows per kernel block.
    engine : {"auto", "numpy", "numba", "cupy"}
    progress : bool
        Show a progress bar over the blocks.
    seed : int
        Seeds the networks of a ``RandomFeatures`` kernel.

    Returns
    -------
    pred : ndarray of shape (n_test, k), float64

    Examples
    --------
    >>> import numpy as np, kernelkip as kk
    >>> from kernelkip.evaluate import krr_predict
    >>> rng = np.random.default_rng(0)
    >>> krr_predict(rng.normal(size=(4, 3)), np.eye(4), rng.normal(size=(7, 3)),
    ...             kk.FC(depth=1), block_size=3).shape
    (7, 4)
    """
    _validation.check_choice(kernel, "kernel", GETS)
    if int(block_size) < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size!r}")
    x_s = _validation.check_array(x_support, "x_support")
    x_t = _validation.check_array(x_test, "x_test", dtype=x_s.dtype)
    if x_s.shape[1:] != x_t.shape[1:]:
        raise ValueError(f"x_support has shape {x_s.shape} and x_test has shape {x_t.shape}; "
                         f"their trailing shapes must match")
    if isinstance(arch, RandomFeatures):
        rf_kernel = _rf_kernel_fn(x_s, arch, seed)
        k_ss = rf_kernel(x_s, x_s)
    else:
        k_ss = kernel_fn(x_s, None, arch, get=kernel, engine=engine)
    alpha, _ = krr.solve(k_ss, y_support, reg, ridge_scale)
    n = x_t.shape[0]
    pred = np.empty((n, alpha.shape[1]), dtype=np.float64)
    starts = range(0, n, int(block_size))
    with progress_bar(len(starts), "evaluate", disable=not progress) as bar:
        for start in starts:
            stop = min(n, start + int(block_size))
            if isinstance(arch, RandomFeatures):
                k_ts = rf_kernel(x_t[start:stop], x_s)
            else:
                k_ts = kernel_fn(x_t[start:stop], x_s, arch, get=kernel, engine=engine,
                                 check_finite=False)
            pred[start:stop] = krr.predict(k_ts, alpha)
            bar.update()
    return pred


def krr_accuracy(x_support, y_support, x_test, labels_test, arch, **kwargs):
    """Test accuracy of KRR on the support set: ``mean(argmax(pred) == labels_test)``.

    Parameters
    ----------
    labels_test : ndarray of int, shape (n_test,)
        Integer class labels.
    **kwargs
        Passed to :func:`krr_predict`.

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np, kernelkip as kk
    >>> from kernelkip.evaluate import krr_accuracy
    >>> x = np.eye(4)
    >>> krr_accuracy(x, np.eye(4), x, np.arange(4), kk.FC(depth=1))
    1.0
    """
    labels = np.asarray(labels_test)
    if labels.ndim != 1 or labels.shape[0] != np.shape(x_test)[0]:
        raise ValueError(f"labels_test has shape {labels.shape}; expected ({np.shape(x_test)[0]},) "
                         f"integer labels")
    pred = krr_predict(x_support, y_support, x_test, arch, **kwargs)
    if labels.size and (labels.min() < 0 or labels.max() >= pred.shape[1]):
        raise ValueError(f"labels_test range [{labels.min()}, {labels.max()}] does not fit the "
                         f"{pred.shape[1]} label columns of y_support")
    return float(np.mean(np.argmax(pred, axis=1) == labels))
