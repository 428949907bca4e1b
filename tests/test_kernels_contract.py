"""The driver's ownership contract: rules work in place, callers' arrays stay untouched."""
import numpy as np
import pytest

import kernelkip as kk


@pytest.mark.parametrize("engine", ["numpy", "numba"])
@pytest.mark.parametrize("x2_none", [False, True])
def test_pullback_leaves_inputs_and_cotangent_untouched_and_is_repeatable(engine, x2_none):
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(size=(5, 4)), rng.normal(size=(3, 4))
    x2 = None if x2_none else x2
    arch = kk.serial(kk.Dense(1.3, 0.2), kk.Dense(0.7, 0.1), kk.Relu(), kk.Dense(1.1, 0.3))
    copies = [a.copy() for a in (x1, x2) if a is not None]
    (nngp, ntk), pullback = kk.kernel_pullback(x1, x2, arch, engine=engine)
    values = (nngp.copy(), ntk.copy())
    c1, c2 = rng.normal(size=nngp.shape), rng.normal(size=ntk.shape)
    c1_copy, c2_copy = c1.copy(), c2.copy()
    first = pullback(c1, c2)
    second = pullback(c1, c2)
    for a, b in zip(first, second):
        if a is not None:
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(c1, c1_copy)
    np.testing.assert_array_equal(c2, c2_copy)
    for a, b in zip((x1, x2), copies):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(nngp, values[0])
    np.testing.assert_array_equal(ntk, values[1])
