"""The value that flows through the kernel recursion."""
from dataclasses import dataclass, replace as _replace

__all__ = ["KernelState"]


@dataclass(frozen=True)
class KernelState:
    """Second moments of the pre-activations of an infinitely wide network at two input batches.

    Attributes
    ----------
    cov1 : ndarray of shape (n1,)
        ``E[f(x1_i)^2]``, the variances of the first batch.
    nngp : ndarray of shape (n1, n2)
        ``E[f(x1_i) f(x2_j)]``.
    cov2 : ndarray of shape (n2,) or None
        Variances of the second batch; ``None`` for a self-kernel (``x2 is x1``).
    ntk : ndarray of shape (n1, n2) or None
        The neural tangent kernel; ``None`` when it is not tracked.
    is_self : bool
        ``x2`` is ``x1``. Then ``nngp[i, i] == cov1[i]`` exactly at every layer, and the
        diagonal follows the coincident-point (``c = 1``) formulas.

    In a cotangent (a ``KernelState`` flowing backwards) each field holds the gradient of the
    scalar loss with respect to that field; ``None`` means zero.
    """

    cov1: object
    nngp: object
    cov2: object = None
    ntk: object = None
    is_self: bool = False

    def replace(self, **changes):
        """A copy with some fields changed."""
        return _replace(self, **changes)
