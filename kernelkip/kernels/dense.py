"""Dense layer rules (NTK parameterization): forward and VJP side by side."""
from .state import KernelState

__all__ = ["dense_fwd", "dense_vjp"]


def dense_fwd(layer, state, *, engine, save=True):
    """``nngp' = W² nngp + b²`` (same for cov1, cov2) and ``ntk' = W² ntk + nngp'``.

    Returns ``(new_state, saved)`` with ``saved = ()``: the rule is linear.
    """
    w2, b2 = layer.W_std ** 2, layer.b_std ** 2

    def affine(a):
        if a is None:
            return None
        out = a * w2  # in place from here on: these matrices are the large ones
        out += b2
        return out

    nngp = affine(state.nngp)
    ntk = None
    if state.ntk is not None:
        ntk = state.ntk * w2
        ntk += nngp
    new = KernelState(affine(state.cov1), nngp, affine(state.cov2), ntk, state.is_self)
    return new, ()


def dense_vjp(layer, saved, cot, *, engine):
    """Adjoint of :func:`dense_fwd`: ``nngp̄ = W² (nngp̄' + ntk̄')``, ``ntk̄ = W² ntk̄'``, ``c̄ = W² c̄'``."""
    w2 = layer.W_std ** 2

    def scale(a):
        return None if a is None else w2 * a

    c_nngp = cot.nngp
    if cot.ntk is not None:
        c_nngp = cot.ntk if c_nngp is None else c_nngp + cot.ntk
    return KernelState(scale(cot.cov1), scale(c_nngp), scale(cot.cov2), scale(cot.ntk),
                       cot.is_self)
