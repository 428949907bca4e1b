"""The Numba loops' own arithmetic: the vectorizable arctangent."""
import numpy as np
import pytest

pytest.importorskip("numba")
from kernelkip.kernels import _activations_numba as an  # noqa: E402


@pytest.mark.parametrize("dtype, ulps", [(np.float64, 2), (np.float32, 2)])
def test_atan2_matches_numpy_to_a_few_ulps(dtype, ulps):
    rng = np.random.default_rng(0)
    # signed zeros are not told apart (atan2(-0.0, -1) gives +pi): the loops only call it with
    # y = sin_s >= 0, or with w > 0 where the sign of a zero angle is immaterial
    y = np.concatenate([rng.normal(size=20000), rng.normal(size=2000) * 1e-8, [0, 0, 0, 1, -1]])
    x = np.concatenate([rng.normal(size=20000), rng.normal(size=2000), [0, 1, -1, 0, 0]])
    y, x = y.astype(dtype), x.astype(dtype)
    got = an.atan2(y, x)
    ref = np.arctan2(y.astype(np.float64), x.astype(np.float64))
    assert got.dtype == dtype
    tol = ulps * np.finfo(dtype).eps * np.maximum(np.abs(ref), np.finfo(dtype).tiny)
    assert np.all(np.abs(got - ref) <= np.maximum(tol, ulps * np.finfo(dtype).eps * 1e-8))


def test_atan2_covers_every_octant():
    angles = np.linspace(-np.pi + 1e-3, np.pi - 1e-3, 4001)
    got = an.atan2(np.sin(angles), np.cos(angles))
    np.testing.assert_allclose(got, angles, rtol=0, atol=2 * np.finfo(float).eps * np.pi)
