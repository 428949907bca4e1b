"""The KIP loss and its gradients, and Label Solve."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import kernelkip as kk
from kernelkip.objectives import kip_value_and_grad


def _problem(rng, n_s, n_t, d, k):
    return (rng.normal(size=(n_s, d)), rng.normal(size=(n_s, k)), rng.normal(size=(n_t, d)),
            rng.normal(size=(n_t, k)))


@settings(deadline=None)
@given(n_s=st.integers(1, 6), n_t=st.integers(1, 8), d=st.integers(1, 6), k=st.integers(1, 3),
       depth=st.integers(0, 3), activation=st.sampled_from(["relu", "erf", "leaky_relu:0.2"]),
       kernel=st.sampled_from(["ntk", "nngp"]), reduction=st.sampled_from(["mean", "sum"]),
       ridge_scale=st.sampled_from(["trace", "absolute"]), seed=st.integers(0, 2**31))
def test_kip_gradients_equal_finite_differences(n_s, n_t, d, k, depth, activation, kernel,
                                                reduction, ridge_scale, seed):
    rng = np.random.default_rng(seed)
    xs, ys, xt, yt = _problem(rng, n_s, n_t, d, k)
    arch = kk.FC(depth, W_std=rng.uniform(0.5, 2), b_std=rng.uniform(0.05, 0.5),
                 activation=activation)
    opts = dict(kernel=kernel, reg=1e-2, ridge_scale=ridge_scale, reduction=reduction)
    loss, g_xs, g_ys = kk.kip_loss(xs, ys, xt, yt, arch, **opts)
    v_x, v_y, eps = rng.normal(size=xs.shape), rng.normal(size=ys.shape), 1e-6

    def f(t):
        return kk.kip_loss(xs + t * v_x, ys + t * v_y, xt, yt, arch, **opts)[0]

    fd = (f(eps) - f(-eps)) / (2 * eps)
    assert np.sum(g_xs * v_x) + np.sum(g_ys * v_y) == pytest.approx(fd, rel=1e-6, abs=1e-10)


def test_kip_loss_value_equals_direct_krr():
    rng = np.random.default_rng(1)
    xs, ys, xt, yt = _problem(rng, 5, 7, 4, 2)
    arch = kk.FC(2)
    k_ss, k_ts = kk.ntk(xs, None, arch), kk.ntk(xt, xs, arch)
    a = k_ss + 1e-3 * np.trace(k_ss) / 5 * np.eye(5)
    pred = k_ts @ np.linalg.solve(a, ys)
    loss = kk.kip_loss(xs, ys, xt, yt, arch, reg=1e-3)[0]
    assert loss == pytest.approx(0.5 * np.mean((pred - yt) ** 2), rel=1e-12)
    out = kip_value_and_grad(xs, ys, xt, yt, arch, reg=1e-3)
    np.testing.assert_allclose(out["pred"], pred, rtol=1e-10)


def test_engines_agree_on_kip_gradients():
    rng = np.random.default_rng(2)
    xs, ys, xt, yt = _problem(rng, 6, 9, 5, 3)
    a = kk.kip_loss(xs, ys, xt, yt, kk.FC(3), engine="numpy")
    b = kk.kip_loss(xs, ys, xt, yt, kk.FC(3), engine="numba")
    assert a[0] == pytest.approx(b[0], rel=1e-12)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(a[2], b[2], rtol=1e-10, atol=1e-14)


def test_float32_inputs_give_float32_gradients():
    rng = np.random.default_rng(3)
    xs, ys, xt, yt = (a.astype(np.float32) for a in _problem(rng, 4, 6, 5, 2))
    loss, g_xs, g_ys = kk.kip_loss(xs, ys, xt, yt, kk.FC(1))
    assert g_xs.dtype == np.float32 and g_ys.dtype == np.float32
    ref = kk.kip_loss(*(a.astype(np.float64) for a in (xs, ys, xt, yt)), kk.FC(1))
    assert loss == pytest.approx(ref[0], rel=1e-4)


def test_support_point_duplicated_in_targets_has_finite_gradient():
    """KIP starts from real images that also appear in the target batch."""
    rng = np.random.default_rng(4)
    xs, ys, xt, yt = _problem(rng, 4, 6, 5, 2)
    xt[2] = xs[1]
    for dtype in (np.float32, np.float64):
        _, g_xs, _ = kk.kip_loss(*(a.astype(dtype) for a in (xs, ys, xt, yt)), kk.FC(2))
        assert np.all(np.isfinite(g_xs))


def test_label_solve_is_the_least_squares_optimum():
    rng = np.random.default_rng(5)
    xs, _, xt, yt = _problem(rng, 5, 30, 4, 3)
    arch = kk.FC(1)
    y_star = kk.label_solve(xs, xt, yt, arch, reg=1e-3)
    _, _, g_ys = kk.kip_loss(xs, y_star, xt, yt, arch, reg=1e-3, reduction="sum")
    np.testing.assert_allclose(g_ys, 0, atol=1e-8)
    worse = kk.kip_loss(xs, y_star + 0.01 * rng.normal(size=y_star.shape), xt, yt, arch,
                        reg=1e-3)[0]
    assert kk.kip_loss(xs, y_star, xt, yt, arch, reg=1e-3)[0] < worse


@pytest.mark.parametrize("change, match", [
    (lambda p: dict(p, x_target=p["x_target"][:, :3]), "trailing"),
    (lambda p: dict(p, y_support=p["y_support"][:3]), "rows"),
    (lambda p: dict(p, y_target=p["y_target"][:, :1]), "num_classes"),
    (lambda p: dict(p, x_support=np.where(np.eye(4, 5, dtype=bool), np.nan, p["x_support"])),
     "NaN"),
    (lambda p: dict(p, kernel="rbf"), "kernel"),
    (lambda p: dict(p, reduction="max"), "reduction"),
])
def test_bad_input_raises(change, match):
    rng = np.random.default_rng(6)
    xs, ys, xt, yt = _problem(rng, 4, 6, 5, 2)
    p = change(dict(x_support=xs, y_support=ys, x_target=xt, y_target=yt))
    with pytest.raises(ValueError, match=match):
        kk.kip_loss(arch=kk.FC(1), **p)
