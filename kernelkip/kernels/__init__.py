"""Infinite-width kernels and their hand-derived vector-Jacobian products."""
from .recursion import (RULES, kernel, kernel_pullback, nngp, nngp_pullback, nngp_vjp, ntk,
                        ntk_pullback, ntk_vjp)
from .state import KernelState

__all__ = ["RULES", "KernelState", "kernel", "kernel_pullback", "nngp", "nngp_pullback",
           "nngp_vjp", "ntk", "ntk_pullback", "ntk_vjp"]
