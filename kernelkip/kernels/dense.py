"""Dense layer rules (NTK parameterization): forward and VJP side by side."""
from .state import KernelState

__all__ = ["dense_fwd", "dense_vjp"]


def dense_fwd(layer, state, *, engine, save=True):
    """``nngp' = W² nngp + b²`` (same for cov1, cov2) and ``ntk' = W² ntk + nngp'``.

    Returns ``(new_state, saved)`` with ``saved = ()``: the rule is linear. The matrices of
    ``state`` are overwritten (the rules' contract in ``recursion.py`` allows it), which spares
    two fresh (n1, n2) arrays per layer.
    """
    w2, b2 = layer.W_std ** 2, layer.b_std ** 2

    def affine(a):
        if a is None:
            return None
        a *= w2
        a += b2
        return a

    nngp = affine(state.nngp)
    ntk = None
    if state.ntk is not None:
        ntk = state.ntk
        ntk *= w2
        ntk += nngp
    new = KernelState(affine(state.cov1), nngp, affine(state.cov2), ntk, state.is_self)
    return new, ()


def dense_vjp(layer, saved, cot, *, engine):
    """Adjoint of :func:`dense_fwd`.

    ``nngp̄ = W² (nngp̄' + ntk̄')``, ``ntk̄ = W² ntk̄'``, ``c̄ = W² c̄'``.

    Works in place on the cotangent's matrices (the rules' contract in ``recursion.py``).
    """
    w2 = layer.W_std ** 2

    def scale(a):
        if a is None:
            return None
        a *= w2
        return a

    c_nngp = cot.nngp
    if cot.ntk is not None:
        if c_nngp is None:
            c_nngp = cot.ntk.copy()
        else:
            c_nngp += cot.ntk
    return KernelState(scale(cot.cov1), scale(c_nngp), scale(cot.cov2), scale(cot.ntk),
                       cot.is_self)
