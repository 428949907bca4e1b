"""Random-feature weights, images and labels at the public boundary: weights drawn for another
``RandomFeatures`` (or image shape), float16/integer weights, integer images and one-column
Platt labels are refused (or cast) before any compiled loop runs, with one clear message."""
import numpy as np
import pytest

import kernelkip as kk
from kernelkip import features as F, losses

SHAPE = (8, 8, 1)
RF = kk.RandomFeatures(kk.ConvNet(2), width=8, models=2)


@pytest.fixture(scope="module")
def drawn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 8, 8, 1))
    return x, kk.sample_weights(RF, SHAPE, np.random.default_rng(1), np.float64)


def _rfad(x, y, rf, weights, **kwargs):
    return kk.rfad_loss(x, y, x, y, rf, weights, reg=1e-2, **kwargs)


# every field a draw depends on; each of these once returned values from uninitialised memory
# or a kernel of the wrong scale
OTHER_RFS = {
    "models": kk.RandomFeatures(kk.ConvNet(2), width=8, models=4),
    "width": kk.RandomFeatures(kk.ConvNet(2), width=16, models=2),
    "depth": kk.RandomFeatures(kk.ConvNet(3), width=8, models=2),
    "W_std": kk.RandomFeatures(kk.ConvNet(2, W_std=3.0), width=8, models=2),
    "b_std": kk.RandomFeatures(kk.ConvNet(2, b_std=0.7), width=8, models=2),
    "activation": kk.RandomFeatures(kk.serial(*[kk.LeakyRelu(0.2) if isinstance(layer, kk.ABRelu)
                                                else layer for layer in kk.ConvNet(2)]),
                                    width=8, models=2),
    "readout": kk.RandomFeatures(kk.ConvNet(2, readout="gap"), width=8, models=2),
}


@pytest.mark.parametrize("field", sorted(OTHER_RFS))
def test_weights_drawn_for_another_rf_are_refused(drawn, field):
    x, weights = drawn
    other = OTHER_RFS[field]
    match = "weights were drawn for RandomFeatures"
    with pytest.raises(ValueError, match=match):
        F.features(x, weights, other)
    with pytest.raises(ValueError, match=match):
        kk.rf_kernel(x, None, other, None, weights=weights)
    with pytest.raises(ValueError, match=match):
        _rfad(x, np.eye(4), other, weights)


def test_the_message_names_the_mismatch(drawn):
    x, weights = drawn
    with pytest.raises(ValueError, match=r"RandomFeatures\(models=2, width=8\) but called with "
                                         r"RandomFeatures\(models=4, width=16\); draw them with "
                                         r"kk.sample_weights"):
        F.features(x, weights, kk.RandomFeatures(kk.ConvNet(2), width=16, models=4))
    with pytest.raises(ValueError, match=r"Conv\(W_std=1.41.*\) but called with .*"
                                         r"Conv\(W_std=3.0\)"):
        F.features(x, weights, OTHER_RFS["W_std"])


def test_an_equal_rf_built_again_is_accepted(drawn):
    x, weights = drawn
    same = kk.RandomFeatures(kk.ConvNet(2), width=8, models=2)
    assert same is not RF
    np.testing.assert_array_equal(F.features(x, weights, same), F.features(x, weights, RF))


def test_weights_for_other_images_are_refused(drawn):
    x, weights = drawn
    x3 = np.ones((4, 8, 8, 3))
    with pytest.raises(ValueError, match="images of shape"):
        F.features(x3, weights, RF)
    with pytest.raises(ValueError, match="images of shape"):
        kk.rf_kernel(x3, None, RF, None, weights=weights)
    with pytest.raises(ValueError, match=r"drawn for images of shape \(8, 8, 1\)"):
        _rfad(np.ones((4, 12, 12, 1)), np.eye(4), RF, weights)


def test_hand_built_weights_are_checked_by_shape(drawn):
    """Without a recorded spec, the arrays must still have the shapes ``rf`` implies."""
    x, weights = drawn
    bare = F.Weights(weights.convs, weights.image_shape, weights.dtype)
    np.testing.assert_array_equal(F.features(x, bare, RF), F.features(x, weights, RF))
    with pytest.raises(ValueError, match="hold 2 networks but rf has models=4"):
        F.features(x, bare, OTHER_RFS["models"])
    with pytest.raises(ValueError, match=r"W of conv layer 0 of network 0 has shape \(9, 8\)"):
        F.features(x, bare, OTHER_RFS["width"])
    with pytest.raises(ValueError, match="hold 2 conv layers but rf has 3"):
        F.features(x, bare, OTHER_RFS["depth"])
    # arrays for one input channel, declared for three
    lying = F.Weights(weights.convs, (8, 8, 3), weights.dtype)
    with pytest.raises(ValueError, match=r"has shape \(9, 8\).*expected \(27, 8\)"):
        F.features(np.ones((2, 8, 8, 3)), lying, RF)
    # arrays of another dtype than the one declared
    mixed = F.Weights(weights.convs, weights.image_shape, np.dtype(np.float32))
    with pytest.raises(ValueError, match="dtype float64; expected"):
        F.features(x, mixed, RF)
    with pytest.raises(TypeError, match="kk.sample_weights"):
        F.features(x, weights.convs, RF)


@pytest.mark.parametrize("dtype", [np.float16, np.int64, np.int32, np.uint8])
def test_weights_must_be_float32_or_float64(drawn, dtype):
    x, weights = drawn
    name = np.dtype(dtype).name
    with pytest.raises(ValueError, match=f"weights must be float32 or float64, got {name}"):
        kk.sample_weights(RF, SHAPE, np.random.default_rng(0), dtype)
    # put together by hand, they are refused before the compiled loops (which have no float16;
    # integer weights were all 0)
    cast = F.Weights(tuple(tuple((w.astype(dtype), b.astype(dtype)) for w, b in net)
                           for net in weights.convs), weights.image_shape, np.dtype(dtype), RF)
    with pytest.raises(ValueError, match=f"weights must be float32 or float64, got {name}"):
        F.features(x, cast, RF)


def test_rf_kernel_refuses_a_float16_dtype_and_float16_images():
    x = np.random.default_rng(2).normal(size=(3, 8, 8, 1))
    with pytest.raises(ValueError, match="dtype must be float32 or float64, got float16"):
        kk.rf_kernel(x, None, RF, np.random.default_rng(0), dtype=np.float16)
    with pytest.raises(ValueError, match="x1 has dtype float16"):
        kk.rf_kernel(x.astype(np.float16), None, RF, np.random.default_rng(0))
    # an explicit float32 dtype casts them up
    assert kk.rf_kernel(x.astype(np.float16), None, RF, np.random.default_rng(0),
                        dtype=np.float32).shape == (3, 3)


def test_integer_and_float16_images_are_cast_to_the_weights_dtype(drawn):
    """Documented behaviour: ``features`` casts images to ``weights.dtype`` (uint8 pixels are a
    natural input); only non-real dtypes are refused."""
    _, weights = drawn
    pixels = np.random.default_rng(3).integers(0, 256, size=(3, 8, 8, 1)).astype(np.uint8)
    want = F.features(pixels.astype(np.float64), weights, RF)
    got = F.features(pixels, weights, RF)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(F.features(pixels.astype(np.int64), weights, RF), want)
    np.testing.assert_array_equal(F.features(pixels.astype(np.float16), weights, RF), want)
    np.testing.assert_array_equal(kk.rf_kernel(pixels, None, RF, None, weights=weights),
                                  want @ want.T + RF.head.b_std ** 2)
    with pytest.raises(ValueError, match="expected real numbers"):
        F.features(pixels.astype(np.complex128), weights, RF)


def test_rfad_objective_with_integer_images_draws_float_weights():
    """The objective draws its networks in ``x_support``'s dtype; integer images once gave
    integer weights, all 0 (a constant kernel, loss log(k))."""
    rng = np.random.default_rng(4)
    x_int = rng.integers(0, 5, size=(6, 8, 8, 1))
    y = np.eye(3)[np.arange(6) % 3] - 1 / 3
    objective = kk.objectives.rfad(kk.ConvNet(2), width=8, models=2)
    params = {"x_support": x_int, "y_support": y, "log_temp": np.zeros(1)}
    loss, grads, _ = objective(params, (x_int.astype(np.float64), y),
                               rng=np.random.default_rng(5))
    want, want_grads, _ = objective(dict(params, x_support=x_int.astype(np.float64)),
                                    (x_int.astype(np.float64), y), rng=np.random.default_rng(5))
    assert loss == want
    assert np.any(grads["x_support"] != 0)
    np.testing.assert_array_equal(grads["x_support"], want_grads["x_support"])
    with pytest.raises(ValueError, match="x_support has dtype float16"):
        objective(dict(params, x_support=x_int.astype(np.float16)), (x_int, y),
                  rng=np.random.default_rng(5))


# ============================================================================ one label column

@pytest.mark.parametrize("y", [np.ones((4, 1)), np.ones(4)], ids=["(n, 1)", "(n,)"])
def test_platt_needs_two_classes(drawn, y):
    x, weights = drawn
    with pytest.raises(ValueError, match="loss='platt' needs at least 2 classes"):
        _rfad(x, y, RF, weights)
    objective = kk.objectives.rfad(kk.ConvNet(2), width=8, models=2)
    with pytest.raises(ValueError, match="loss='platt' needs at least 2 classes"):
        objective({"x_support": x, "y_support": y, "log_temp": np.zeros(1)}, (x, y),
                  rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="Platt cross-entropy needs at least 2 classes"):
        losses.platt_xent_grad(np.zeros((4, 1)), np.zeros(4, dtype=int), 0.0)


def test_mse_with_one_column_is_regression(drawn):
    x, weights = drawn
    rng = np.random.default_rng(6)
    y_s, y_t = rng.normal(size=(4, 1)), rng.normal(size=(5, 1))
    x_t = rng.normal(size=(5, 8, 8, 1))
    loss, g_x, g_y, g_t = kk.rfad_loss(x, y_s, x_t, y_t, RF, weights, loss="mse", reg=1e-2)
    assert np.isfinite(loss) and loss > 0
    assert np.any(g_x != 0) and np.any(g_y != 0) and g_t == 0.0
    assert g_y.shape == (4, 1)
    # 1-D targets are the same single column
    flat = kk.rfad_loss(x, y_s[:, 0], x_t, y_t[:, 0], RF, weights, loss="mse", reg=1e-2)
    assert flat[0] == loss
    np.testing.assert_array_equal(flat[1], g_x)
