"""Random-feature ConvNets (RFAD): the layer loops against NumPy and brute force, the kernel
against the exact ConvNet NNGP (unbiased for one hidden layer, Monte-Carlo rate as width * M
grows), the hand-written backward pass and the RFAD losses against finite differences
(``docs/math/rfad.md``)."""
import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

import kernelkip as kk
from kernelkip import _deps, features as F, losses

from .gradcheck import check_vjp, directional_derivative
from .problems import check_resume_is_exact, digits_problem

needs_numba = pytest.mark.skipif(not _deps.numba_available(),
                                 reason="the exact ConvNet kernels need Numba")


# ============================================================================ layer loops

@given(n=st.integers(1, 3), h=st.integers(1, 6), w=st.integers(1, 6), c=st.integers(1, 4),
       f=st.sampled_from([1, 3, 5]), same=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_im2col_and_col2im_equal_numpy_and_are_adjoint(n, h, w, c, f, same, seed):
    pad = (f - 1) // 2 if same else 0
    assume(h + 2 * pad >= f and w + 2 * pad >= f)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, h, w, c))
    cols = F.im2col(x, f, pad)
    np.testing.assert_array_equal(cols, F.im2col_numpy(x, f, pad))
    g = rng.normal(size=cols.shape)
    back = F.col2im(g, x.shape, f, pad)
    np.testing.assert_allclose(back, F.col2im_numpy(g, x.shape, f, pad), rtol=1e-13, atol=1e-13)
    assert np.isclose(np.sum(cols * g), np.sum(x * back), rtol=1e-12)   # <Ax, g> = <x, A^T g>


@given(n=st.integers(1, 2), h=st.integers(1, 7), w=st.integers(1, 7),
       c=st.sampled_from([1, 3, 16, 19]), c_out=st.sampled_from([1, 5, 16]),
       seed=st.integers(0, 2**32 - 1))
def test_conv_methods_agree(n, h, w, c, c_out, seed):
    """Winograd F(2x2, 3x3) (odd sizes included), the direct loop and im2col + GEMM give the
    same 3x3 SAME convolution; the SAME adjoint by a turned filter equals col2im."""
    if not F._loops.available:
        pytest.skip("no Numba: im2col only")
    rng = np.random.default_rng(seed)
    x, wm, b = rng.normal(size=(n, h, w, c)), rng.normal(size=(9 * c, c_out)), rng.normal(
        size=c_out)
    want = F.conv(x, wm, b, 3, 1, method="im2col")
    for method in ("winograd", "direct"):
        np.testing.assert_allclose(F.conv(x, wm, b, 3, 1, method=method), want, rtol=1e-10,
                                   atol=1e-10)
    g = rng.normal(size=want.shape)
    layer = kk.Conv(3, "SAME")
    np.testing.assert_allclose(F.conv_vjp(g, wm, x.shape, layer),
                               F.col2im_numpy(g.reshape(-1, c_out) @ wm.T, x.shape, 3, 1),
                               rtol=1e-10, atol=1e-10)


@given(n=st.integers(1, 2), h=st.integers(2, 7), w=st.integers(2, 7), c=st.integers(1, 5),
       a=st.sampled_from([0.0, 0.2]), seed=st.integers(0, 2**32 - 1))
def test_fused_pool_and_activation_adjoint(n, h, w, c, a, seed):
    if not F._loops.available:
        pytest.skip("no Numba: the fused loop is not used")
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, h, w, c))
    act = kk.ABRelu(a, 1.3)
    _, mask = F.act_pool_fwd(z, act, 2)
    gp = rng.normal(size=(n, h // 2, w // 2, c))
    gz = np.empty_like(z)
    F._loops.pool_act_vjp(gp, mask, a, 1.3, 2, gz)
    np.testing.assert_allclose(gz, F.act_vjp(F.pool_vjp(gp, z.shape, 2), mask, act),
                               rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("a, b", [(0.0, 1.0), (0.2, 1.5)])
def test_fused_activation_and_pool_equal_the_separate_ops(a, b):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    act = kk.ABRelu(a, b)
    want, mask = F.act_fwd(z.copy(), act)
    want = F.pool_fwd(want, 2)
    if not F._loops.available:
        pytest.skip("no Numba: the fused loop is not used")
    got, got_mask = F.act_pool_fwd(z, act, 2)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got_mask, mask)


def _brute_force_features(x, weights, rf):
    """Per-network readout inputs by explicit loops over output positions (independent of
    im2col and of the fused loops)."""
    out = []
    for convs in weights.convs:
        h, it = x, iter(convs)
        for layer in rf.body:
            if isinstance(layer, kk.Conv):
                wm, b = next(it)
                f = layer.filter
                pad = (f - 1) // 2 if layer.padding == "SAME" else 0
                kern = wm.reshape(f, f, h.shape[-1], -1)
                hp = np.pad(h, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
                ho, wo = hp.shape[1] - f + 1, hp.shape[2] - f + 1
                z = np.empty((len(h), ho, wo, kern.shape[-1]))
                for i in range(ho):
                    for j in range(wo):
                        z[:, i, j] = np.einsum("nabc,abcd->nd", hp[:, i:i + f, j:j + f], kern) + b
                h = z
            elif isinstance(layer, kk.ABRelu):
                h = np.where(h > 0, layer.b * h, layer.a * h)
            else:
                k = layer.window
                n, hh, ww, c = h.shape
                h = np.array([[[h[:, i * k:(i + 1) * k, j * k:(j + 1) * k].mean(axis=(1, 2))
                                for j in range(ww // k)] for i in range(hh // k)]])
                h = np.moveaxis(h[0], 2, 0)
        out.append(h.mean(axis=(1, 2)) if isinstance(rf.readout, kk.GlobalAvgPool)
                   else h.reshape(len(h), -1))
    return out


@st.composite
def rf_problems(draw, max_blocks=2):
    """A random-feature net (Conv SAME/VALID, ReLU or leaky ReLU, maybe AvgPool; Flatten or
    GAP; Dense) with a drawn width and model count, and images it fits."""
    h, w = draw(st.integers(4, 8)), draw(st.integers(4, 8))
    c = draw(st.integers(1, 3))
    layers = []
    hh, ww = h, w
    for pool in draw(st.lists(st.booleans(), min_size=1, max_size=max_blocks)):
        f = draw(st.sampled_from([1, 3]))
        pad = draw(st.sampled_from(["SAME", "VALID"])) if min(hh, ww) >= f + 2 else "SAME"
        layers.append(kk.Conv(f, pad, draw(st.floats(0.8, 1.6)), draw(st.floats(0.0, 0.4))))
        if pad == "VALID":
            hh, ww = hh - f + 1, ww - f + 1
        layers.append(draw(st.sampled_from([kk.Relu(), kk.LeakyRelu(0.2)])))
        if pool and min(hh, ww) >= 2:
            layers.append(kk.AvgPool(2))
            hh, ww = hh // 2, ww // 2
    layers += [draw(st.sampled_from([kk.Flatten(), kk.GlobalAvgPool()])),
               kk.Dense(draw(st.floats(0.8, 1.6)), draw(st.floats(0.0, 0.4)))]
    # widths of 16 and more send 3x3 SAME convs through Winograd
    rf = kk.RandomFeatures(kk.serial(*layers), width=draw(st.sampled_from([1, 2, 3, 5, 16, 17])),
                           models=draw(st.integers(1, 3)))
    return rf, (h, w, c), draw(st.integers(0, 2**32 - 1))


def _instance(problem, n):
    """``(rf, shape, rng, x, weights)``: ``n`` images and one float64 draw of the networks."""
    rf, shape, seed = problem
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n,) + shape)
    return rf, shape, rng, x, kk.sample_weights(rf, shape, rng, np.float64)


@given(problem=rf_problems())
def test_features_equal_a_brute_force_forward(problem):
    rf, shape, rng, x, weights = _instance(problem, 3)
    phi = F.features(x, weights, rf)
    f_count = rf.feature_count(shape)
    scale = rf.head.W_std / np.sqrt(rf.models * f_count)
    want = np.concatenate(_brute_force_features(x, weights, rf), axis=1) * scale
    np.testing.assert_allclose(phi, want, rtol=1e-11, atol=1e-12)
    # chunking the images changes nothing
    np.testing.assert_allclose(F.features(x, weights, rf, chunk_bytes=1), phi, rtol=1e-13,
                               atol=1e-14)
    # rf_kernel is Phi Phi^T + b_d^2
    np.testing.assert_allclose(kk.rf_kernel(x, None, rf, None, weights=weights),
                               phi @ phi.T + rf.head.b_std ** 2, rtol=1e-12)


def test_weights_have_the_stated_scales():
    rf = kk.RandomFeatures(kk.ConvNet(2, W_std=1.5, b_std=0.3), width=64, models=50)
    weights = kk.sample_weights(rf, (8, 8, 3), np.random.default_rng(0), np.float64)
    first = np.concatenate([m[0][0].ravel() for m in weights.convs])
    second = np.concatenate([m[1][0].ravel() for m in weights.convs])
    biases = np.concatenate([m[1][1] for m in weights.convs])
    assert np.isclose(first.std(), 1.5 / np.sqrt(9 * 3), rtol=0.02)
    assert np.isclose(second.std(), 1.5 / np.sqrt(9 * 64), rtol=0.02)
    assert np.isclose(biases.std(), 0.3, rtol=0.05)


# ============================================================================ the kernel

@needs_numba
@pytest.mark.parametrize("readout", ["flatten", "gap"])
def test_one_hidden_layer_kernel_is_unbiased(readout):
    """One conv layer: its pre-activations are exactly Gaussian at any width, so the mean of the
    random-feature kernel over draws is the exact NNGP (within Monte-Carlo error)."""
    rng = np.random.default_rng(0)
    arch = kk.ConvNet(1, W_std=1.4, b_std=0.3, readout=readout)
    x = rng.normal(size=(3, 4, 4, 2))
    exact = kk.nngp(x, None, arch)
    rf = kk.RandomFeatures(arch, width=2, models=1)
    draws = np.array([kk.rf_kernel(x, None, rf, rng) for _ in range(4000)])
    mean, se = draws.mean(0), draws.std(0) / np.sqrt(len(draws))
    assert np.all(np.abs(mean - exact) <= 4.5 * se), (mean, exact, se)


@needs_numba
def test_kernel_converges_to_the_exact_nngp_at_the_monte_carlo_rate():
    """ConvNet3 on tiny images: the mean squared error of the estimate falls like
    1 / (width * M) (each 4x more networks: about 4x less); 512 channels in all give about
    10% RMS error on these 8x8 images.
    Width fixed, models grow: the finite-width bias (O(1/width)) stays below the noise."""
    rng = np.random.default_rng(1)
    arch = kk.ConvNet(3)
    x = rng.normal(size=(3, 8, 8, 1))
    exact = kk.nngp(x, None, arch)
    mse = []
    for models in (2, 8, 32):
        rf = kk.RandomFeatures(arch, width=16, models=models)
        errs = [kk.rf_kernel(x, None, rf, rng) - exact for _ in range(200)]
        mse.append(np.mean(np.square(errs)))
    ratios = np.array(mse[:-1]) / np.array(mse[1:])
    assert np.all((ratios > 2.8) & (ratios < 5.5)), (mse, ratios)
    assert np.sqrt(mse[-1]) < 0.15 * np.abs(exact).mean(), (mse, exact)


@needs_numba
def test_wide_network_kernel_matches_the_exact_nngp():
    """Width 256, 16 networks on 8x8 images: the ConvNet3 estimate is within 2% of
    ``kk.nngp(.., kk.ConvNet(3))``, so evaluating with the exact kernel is consistent."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 8, 8, 1))
    rf = kk.RandomFeatures(kk.ConvNet(3), width=256, models=16)
    exact = kk.nngp(x, None, kk.ConvNet(3))
    est = kk.rf_kernel(x, None, rf, rng)
    np.testing.assert_allclose(est, exact, rtol=0.02)


# ============================================================================ gradients

def _masks(x, weights, rf):
    _, tape = F.features(x, weights, rf, save=True)
    return np.concatenate([m.ravel() for ms in tape.masks for m in ms] or [np.zeros(0)])


def _fixed_masks(x, v, weights, rf, eps):
    """ReLU nets are piecewise linear: the difference quotient is only meaningful when no unit
    changes sign between x - eps v and x + eps v."""
    return np.array_equal(_masks(x + eps * v, weights, rf), _masks(x - eps * v, weights, rf))


@given(problem=rf_problems())
def test_features_vjp_passes_the_dot_test(problem):
    rf, shape, rng, x, weights = _instance(problem, 2)
    _, tape = F.features(x, weights, rf, save=True)
    v = rng.normal(size=x.shape)
    assume(_fixed_masks(x, v, weights, rf, 1e-4))
    c = rng.normal(size=(2, rf.models * rf.feature_count(shape)))
    g = F.features_vjp(tape, c)
    numeric = np.sum(c * (F.features(x + 1e-4 * v, weights, rf)
                          - F.features(x - 1e-4 * v, weights, rf))) / 2e-4
    assert np.isclose(np.sum(g * v), numeric, rtol=1e-8, atol=1e-10)


@given(problem=rf_problems(), loss=st.sampled_from(["mse", "platt"]),
       log_temp=st.floats(-1.0, 2.0), learn=st.sampled_from(["x", "y", "t", "all"]))
def test_rfad_loss_gradients_equal_finite_differences(problem, loss, log_temp, learn):
    """The whole RFAD loss (features, K_ss and K_ts, the KRR solve with its trace-scaled ridge,
    MSE or Platt) against central differences, w.r.t. images, labels and the temperature."""
    rf, shape, seed = problem
    rng = np.random.default_rng(seed)
    n_s, n_t, k = 4, 6, 3
    x_s, x_t = rng.normal(size=(n_s,) + shape), rng.normal(size=(n_t,) + shape)
    y_s = np.eye(k)[np.arange(n_s) % k] - 1 / k + 0.1 * rng.normal(size=(n_s, k))
    y_t = np.eye(k)[rng.integers(0, k, n_t)] - 1 / k
    weights = kk.sample_weights(rf, shape, rng, np.float64)
    opts = dict(loss=loss, reg=rng.uniform(1e-3, 1e-1))
    try:
        out = kk.objectives.rfad_value_and_grad(x_s, y_s, x_t, y_t, rf, weights,
                                                log_temp=log_temp, **opts)
    except np.linalg.LinAlgError:  # every unit dead and no bias: K_ss = 0 is refused
        assume(False)
    point = (x_s, y_s, np.array([log_temp]))
    dirs = (rng.normal(size=x_s.shape) if learn in ("x", "all") else None,
            rng.normal(size=y_s.shape) if learn in ("y", "all") else None,
            rng.normal(size=1) if learn in ("t", "all") else None)
    eps = 1e-4
    if dirs[0] is not None:
        assume(_fixed_masks(x_s, dirs[0], weights, rf, eps))

    def f(xs, ys, lt):
        return kk.objectives.rfad_value_and_grad(xs, ys, x_t, y_t, rf, weights,
                                                 log_temp=float(lt[0]), **opts)["loss"]

    numeric = float(directional_derivative(lambda *a: np.array([f(*a)]), point, dirs, eps)[0][0])
    grads = (out["grad_x_support"], out["grad_y_support"], np.array([out["grad_log_temp"]]))
    analytic = sum(float(np.sum(g * d)) for g, d in zip(grads, dirs) if d is not None)
    if loss == "mse" and learn == "t":
        assert analytic == 0.0 and abs(numeric) < 1e-12
        return
    assert np.isclose(analytic, numeric, rtol=2e-6, atol=1e-9), (analytic, numeric)


def test_platt_loss_value_and_gradients():
    rng = np.random.default_rng(3)
    pred, labels, log_temp = rng.normal(size=(5, 4)), rng.integers(0, 4, 5), 0.7
    loss, g_pred, g_t = losses.platt_xent_grad(pred, labels, log_temp)
    logits = np.exp(log_temp) * pred
    want = np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(5), labels])
    assert np.isclose(loss, want, rtol=1e-13)
    # one-hot (or centred) rows name the same classes
    assert losses.platt_xent(pred, np.eye(4)[labels] - 0.25, log_temp) == loss
    check_vjp(lambda p, t: np.array([losses.platt_xent(p, labels, float(t[0]))]),
              lambda c: (c[0] * g_pred, np.array([c[0] * g_t])),
              (pred, np.array([log_temp])), rng)
    with pytest.raises(ValueError, match="class labels must lie"):
        losses.platt_xent_grad(pred, np.array([0, 1, 2, 3, 4]), 0.0)
    with pytest.raises(ValueError, match="do not fit"):
        losses.platt_xent_grad(pred, np.array([0, 1]), 0.0)


def test_float32_step_agrees_with_float64():
    rng = np.random.default_rng(4)
    rf = kk.RandomFeatures(kk.ConvNet(2), width=8, models=2)
    x_s, x_t = rng.normal(size=(6, 8, 8, 1)), rng.normal(size=(20, 8, 8, 1))
    y_s, y_t = np.eye(3)[np.arange(6) % 3] - 1 / 3, np.eye(3)[rng.integers(0, 3, 20)] - 1 / 3
    outs = []
    for dtype in (np.float64, np.float32):
        w = kk.sample_weights(rf, (8, 8, 1), np.random.default_rng(5), dtype)
        outs.append(kk.objectives.rfad_value_and_grad(x_s.astype(dtype), y_s.astype(dtype),
                                                      x_t.astype(dtype), y_t, rf, w))
    assert np.isclose(outs[0]["loss"], outs[1]["loss"], rtol=1e-4)
    g64, g32 = outs[0]["grad_x_support"], outs[1]["grad_x_support"]
    assert np.linalg.norm(g64 - g32) < 1e-3 * np.linalg.norm(g64)
    assert g32.dtype == np.float32


# ============================================================================ the objective

@pytest.fixture(scope="module")
def digits():
    ds, x_train, y_train, x_test, params = digits_problem(np.float32, per_class=2)
    return ds, x_train, y_train, x_test, dict(params, log_temp=np.zeros(1))


def _rfad_run(digits, steps, **kwargs):
    ds, x_train, y_train, _, params0 = digits
    objective = kk.objectives.rfad(kk.ConvNet(2), width=16, models=4)
    return kk.distill(objective, params0, kk.TargetSampler(x_train, y_train, ds.y_train, 300),
                      steps=steps, rng=np.random.default_rng(1), progress=False,
                      optimizer=kk.optim.adam({"x_support": 0.03, "y_support": 0.03,
                                               "log_temp": 0.1}), **kwargs)


@needs_numba
def test_rfad_on_digits_improves_over_its_initial_support(digits):
    ds, _, _, x_test, params0 = digits

    def acc(p):
        return kk.krr_accuracy(p["x_support"], p["y_support"], x_test, ds.y_test,
                               kk.ConvNet(2), kernel="nngp", reg=5e-3)
    res = _rfad_run(digits, 40)
    before, after = acc(params0), acc(res.params)
    assert after > before + 0.03, (before, after)
    assert res.history[-1]["temperature"] > 1.0       # the temperature was learned
    assert np.mean([r["loss"] for r in res.history[-10:]]) < res.history[0]["loss"]


def test_rfad_run_resumes_with_the_same_random_networks(digits, tmp_path):
    check_resume_is_exact(lambda steps, **kw: _rfad_run(digits, steps, **kw), 7, 3,
                          tmp_path / "rfad.npz")


def test_rf_evaluation_uses_one_fixed_draw():
    rng = np.random.default_rng(6)
    rf = kk.RandomFeatures(kk.ConvNet(2), width=8, models=4)
    x_s, x_t = rng.normal(size=(6, 8, 8, 1)), rng.normal(size=(9, 8, 8, 1))
    y_s = np.eye(3)[np.arange(6) % 3]
    pred = kk.krr_predict(x_s, y_s, x_t, rf, reg=1e-3, block_size=4, seed=7)
    w = kk.sample_weights(rf, (8, 8, 1), np.random.default_rng(7), np.float64)
    k_ss = kk.rf_kernel(x_s, None, rf, None, weights=w)
    k_ts = F.features(x_t, w, rf) @ F.features(x_s, w, rf).T + rf.head.b_std ** 2
    alpha = np.linalg.solve(k_ss + 1e-3 * np.trace(k_ss) / 6 * np.eye(6), y_s)
    np.testing.assert_allclose(pred, k_ts @ alpha, rtol=1e-8, atol=1e-10)


# ============================================================================ errors

@pytest.mark.parametrize("arch, match", [
    (kk.serial(kk.Conv(), kk.Relu(), kk.Flatten()), "ends in a Dense"),
    (kk.serial(kk.Conv(), kk.Relu(), kk.Dense()), "exactly one Flatten"),
    (kk.serial(kk.Conv(), kk.Erf(), kk.Flatten(), kk.Dense()), "support Conv, ABRelu"),
])
def test_unsupported_architectures_are_refused(arch, match):
    with pytest.raises(ValueError, match=match):
        kk.RandomFeatures(arch)


def test_bad_input_gets_a_clear_error():
    rng = np.random.default_rng(7)
    rf = kk.RandomFeatures(kk.ConvNet(2), width=4, models=1)
    w = kk.sample_weights(rf, (8, 8, 1), rng, np.float64)
    with pytest.raises(ValueError, match="images of shape"):
        F.features(np.ones((2, 8, 8, 3)), w, rf)
    bad = np.ones((2, 8, 8, 1))
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        F.features(bad, w, rf)
    with pytest.raises(ValueError, match="width must be a positive integer"):
        kk.RandomFeatures(kk.ConvNet(2), width=0)
    with pytest.raises(ValueError, match="too small"):
        rf.shapes((2, 2, 1))
    x = rng.normal(size=(4, 8, 8, 1))
    with pytest.raises(ValueError, match="unknown loss"):
        kk.objectives.rfad_value_and_grad(x, np.eye(4), x, np.eye(4), rf, w, loss="hinge")
    with pytest.raises(ValueError, match="rows"):
        kk.objectives.rfad_value_and_grad(x, np.eye(3), x, np.eye(4), rf, w)
    _, tape = F.features(x, w, rf, save=True)
    with pytest.raises(ValueError, match="cotangent has shape"):
        F.features_vjp(tape, np.ones((3, 5)))


def test_backward_of_many_networks_is_the_sum_over_single_networks():
    """Each network's pullback uses its own (Winograd-transformed) filters: pulling back through
    M networks at once equals the sum of M one-network pullbacks."""
    rng = np.random.default_rng(8)
    rf = kk.RandomFeatures(kk.ConvNet(2), width=16, models=4)
    x = rng.normal(size=(3, 8, 8, 2))
    w = kk.sample_weights(rf, (8, 8, 2), rng, np.float64)
    phi, tape = F.features(x, w, rf, save=True)
    c = rng.normal(size=phi.shape)
    got = F.features_vjp(tape, c)
    one = kk.RandomFeatures(rf.arch, width=16, models=1)
    f_count = rf.feature_count((8, 8, 2))
    want = 0
    for m in range(4):
        wm = F.Weights((w.convs[m],), w.image_shape, w.dtype)
        _, tape_m = F.features(x, wm, one, save=True)
        # one network's features are scaled by sqrt(M) more than in the M-network Phi
        want = want + F.features_vjp(tape_m, c[:, m * f_count:(m + 1) * f_count]) / 2.0
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
