"""The input layer: normalised dot products of the (flattened) inputs, and their VJP."""
from ..backend import array_namespace
from .state import KernelState

__all__ = ["input_fwd", "input_vjp"]


def input_fwd(x1, x2, *, track_ntk):
    """First :class:`KernelState`: ``nngp = x1 @ x2.T / d`` and ``cov = sum(x**2) / d``.

    ``x2=None`` gives a self-kernel whose diagonal is set to ``cov1`` exactly. The NTK starts
    at zero (neural-tangents' convention: the first Dense layer makes it equal the NNGP).

    Returns
    -------
    state : KernelState
    saved : tuple ``(x1, x2)``, the flattened inputs.
    """
    xp = array_namespace(x1, x2)
    x1 = x1.reshape(x1.shape[0], -1)
    d = x1.shape[1]
    cov1 = xp.einsum("ij,ij->i", x1, x1) / d
    if x2 is None:
        nngp = (x1 @ x1.T) / d
        idx = xp.arange(x1.shape[0])
        nngp[idx, idx] = cov1
        cov2 = None
    else:
        x2 = x2.reshape(x2.shape[0], -1)
        nngp = (x1 @ x2.T) / d
        cov2 = xp.einsum("ij,ij->i", x2, x2) / d
    ntk = xp.zeros_like(nngp) if track_ntk else None
    return KernelState(cov1, nngp, cov2, ntk, is_self=x2 is None), (x1, x2)


def input_vjp(saved, cot, *, wrt=(True, True)):
    """Gradients of the loss with respect to the flattened ``x1`` and ``x2``.

    .. math:: \\bar x_1 = (\\bar K x_2 + 2\\,\\mathrm{diag}(\\bar c_1) x_1) / d

    For a self-kernel the single input receives ``(K̄ + K̄ᵀ) x / d + 2 c̄₁ x / d`` and the
    second gradient is ``None``. ``wrt`` skips the products that are not wanted.
    """
    x1, x2 = saved
    d = x1.shape[1]
    c_nngp = cot.nngp
    c_cov1, c_cov2 = cot.cov1, cot.cov2
    if cot.is_self:
        g = 2 * c_cov1[:, None] * x1 if c_cov1 is not None else 0 * x1
        if c_nngp is not None:
            g = g + (c_nngp + c_nngp.T) @ x1
        return g / d, None
    g1 = g2 = None
    if wrt[0]:
        g1 = 2 * c_cov1[:, None] * x1 if c_cov1 is not None else 0 * x1
        if c_nngp is not None:
            g1 = g1 + c_nngp @ x2
        g1 = g1 / d
    if wrt[1]:
        g2 = 2 * c_cov2[:, None] * x2 if c_cov2 is not None else 0 * x2
        if c_nngp is not None:
            g2 = g2 + c_nngp.T @ x1
        g2 = g2 / d
    return g1, g2
