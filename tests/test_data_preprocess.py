"""Tests for kernelkip.data.preprocess: standardize, layer_norm, zca, one_hot_centered."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernelkip.data import layer_norm, load_digits, one_hot_centered, standardize, zca
from kernelkip.data import preprocess


def correlated(rng, n, shape, dtype=np.float64):
    """Centred samples with a non-trivial covariance spectrum."""
    d = int(np.prod(shape))
    mix = rng.normal(size=(d, d)) * np.geomspace(1.0, 1e-2, d)
    x = rng.normal(size=(n, d)) @ mix.T
    return (x - x.mean(axis=0)).reshape((n, *shape)).astype(dtype)


# ----------------------------------------------------------------------------- standardize

def test_standardize_per_channel_train_statistics():
    rng = np.random.default_rng(0)
    x_train = rng.normal(loc=[1.0, -3.0, 10.0], scale=[0.5, 2.0, 7.0], size=(40, 4, 4, 3))
    x_test = rng.normal(size=(5, 4, 4, 3))
    z_train, z_test, (mean, std) = standardize(x_train, x_test)
    np.testing.assert_allclose(z_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-12)
    np.testing.assert_allclose(z_train.std(axis=(0, 1, 2)), 1.0, rtol=1e-12)
    np.testing.assert_allclose(mean, x_train.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, x_train.std(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(z_test, (x_test - mean) / std, rtol=1e-12)
    assert mean.shape == (3,) and z_train.dtype == np.float64


def test_standardize_scalar_and_dtypes():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(10, 3, 3, 2), dtype=np.uint8)
    z, (mean, std) = standardize(x, per_channel=False)
    assert isinstance(mean, float) and isinstance(std, float)
    assert z.dtype == np.float32
    assert abs(float(z.astype(np.float64).mean())) < 1e-6
    assert abs(float(z.astype(np.float64).std()) - 1.0) < 1e-6
    np.testing.assert_allclose(mean, x.mean(), rtol=1e-12)
    z32, z64, _ = standardize(x.astype(np.float32), x.astype(np.float64))
    assert z32.dtype == np.float32 and z64.dtype == np.float64
    np.testing.assert_allclose(z32, z64, rtol=1e-5, atol=1e-6)


def test_standardize_accumulates_over_many_blocks():
    rng = np.random.default_rng(2)
    n = 3 * preprocess._CHUNK + 17
    x = (rng.normal(size=(n, 2)) * [3.0, 0.1] + [1e3, -5.0]).astype(np.float32)
    z, (mean, std) = standardize(x)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(mean, x64.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, x64.std(axis=0), rtol=1e-10)


def test_standardize_constant_channel_and_errors():
    x = np.ones((4, 2, 2, 2))
    x[..., 1] = np.arange(16.0).reshape(4, 2, 2)
    z, (mean, std) = standardize(x)
    assert np.all(np.isfinite(z)) and np.all(z[..., 0] == 0) and std[0] == 1.0
    with pytest.raises(ValueError, match="channels"):
        standardize(x, np.zeros((2, 2, 2, 3)))
    with pytest.raises(ValueError, match="shape"):
        standardize(np.zeros(5))


# ----------------------------------------------------------------------------- layer_norm

@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(2, 20), st.integers(0, 2**32 - 1),
       st.floats(1e-3, 1e3))
def test_layer_norm_zero_mean_unit_mean_square(n, d, seed, scale):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d, 1)) * scale + rng.normal()
    z = layer_norm(x)
    assert z.shape == x.shape and z.dtype == np.float64
    flat = z.reshape(n, -1)
    np.testing.assert_allclose(flat.mean(axis=1), 0.0, atol=1e-9)
    np.testing.assert_allclose((flat ** 2).mean(axis=1), 1.0, rtol=1e-10)
    # per example: invariant to a positive scale and an offset
    np.testing.assert_allclose(layer_norm(3.0 * x + 7.0), z, atol=1e-8)


def test_layer_norm_constant_image_and_dtype():
    x = np.zeros((2, 3, 3, 1), dtype=np.float32)
    x[1] = np.arange(9.0).reshape(3, 3, 1)
    z = layer_norm(x)
    assert z.dtype == np.float32 and np.all(z[0] == 0)
    assert abs(float((z[1].astype(np.float64) ** 2).mean()) - 1.0) < 1e-6
    assert layer_norm(x.astype(np.uint8)).dtype == np.float32


# ----------------------------------------------------------------------------- zca

def zca_reference(x_train, strength):
    flat = x_train.reshape(x_train.shape[0], -1).astype(np.float64)
    cov = flat.T @ flat / flat.shape[0]
    lam, U = np.linalg.eigh(cov)
    lam = np.clip(lam, 0, None)
    reg = strength * np.trace(cov) / cov.shape[0]
    return cov, lam, U, reg


@pytest.mark.parametrize("strength", [0.0, 1e-3, 0.1, 1.0, 100.0])
def test_zca_whitened_covariance_matches_formula(strength):
    rng = np.random.default_rng(3)
    x = correlated(rng, 300, (3, 3, 2))
    z = zca(x, strength=strength)
    flat = z.reshape(300, -1)
    cov_white = flat.T @ flat / 300
    _, lam, U, reg = zca_reference(x, strength)
    # eq.: W C W = U diag(lam / (lam + reg)) U^T
    expected = (U * (lam / (lam + reg))) @ U.T
    np.testing.assert_allclose(cov_white, expected, atol=1e-10)
    np.testing.assert_allclose(np.linalg.eigvalsh(cov_white), np.sort(lam / (lam + reg)),
                               atol=1e-10)
    if strength == 0.0:
        np.testing.assert_allclose(cov_white, np.eye(18), atol=1e-10)


def test_zca_applies_train_matrix_to_others():
    rng = np.random.default_rng(4)
    x_train, x_test = correlated(rng, 200, (4, 2)), rng.normal(size=(7, 4, 2))
    z_train, z_test = zca(x_train, x_test, strength=0.1)
    _, lam, U, reg = zca_reference(x_train, 0.1)
    W = (U / np.sqrt(lam + reg)) @ U.T
    np.testing.assert_allclose(z_test.reshape(7, -1), x_test.reshape(7, -1) @ W, atol=1e-12)
    np.testing.assert_allclose(z_train.reshape(200, -1), x_train.reshape(200, -1) @ W,
                               atol=1e-12)
    assert z_test.shape == x_test.shape


def test_zca_is_scale_invariant_and_keeps_dtype():
    rng = np.random.default_rng(5)
    x = correlated(rng, 100, (2, 2, 3))
    np.testing.assert_allclose(zca(1e3 * x), zca(x), atol=1e-9)
    z32 = zca(x.astype(np.float32))
    assert isinstance(z32, np.ndarray) and z32.dtype == np.float32
    np.testing.assert_allclose(z32, zca(x), atol=1e-4)


def test_zca_on_digits_pipeline():
    ds = load_digits()
    x_train, x_test, _ = standardize(ds.x_train, ds.x_test)
    z_train, z_test = zca(layer_norm(x_train), layer_norm(x_test), strength=0.1)
    assert z_train.shape == (1198, 8, 8, 1) and z_test.dtype == np.float32
    assert np.all(np.isfinite(z_train)) and np.all(np.isfinite(z_test))


def test_zca_errors():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(5, 4, 4, 1))
    with pytest.raises(ValueError, match="singular"):
        zca(x, strength=0.0)  # 5 examples, 16 features
    with pytest.raises(ValueError, match="strength must be a finite number >= 0"):
        zca(x, strength=-0.1)
    with pytest.raises(ValueError, match="strength must be a number"):
        zca(x, strength="big")
    with pytest.raises(ValueError, match="16 entries per example"):
        zca(x, np.zeros((2, 3, 3, 1)))


# ----------------------------------------------------------------------------- one_hot_centered

@settings(max_examples=50, deadline=None)
@given(st.integers(2, 12).flatmap(
    lambda c: st.tuples(st.just(c), st.lists(st.integers(0, c - 1), min_size=1, max_size=30))))
def test_one_hot_centered_rows_sum_to_zero_and_argmax(case):
    num_classes, labels = case
    y = np.array(labels)
    t = one_hot_centered(y, num_classes)
    assert t.shape == (y.size, num_classes) and t.dtype == np.float32
    np.testing.assert_allclose(t.sum(axis=1), 0.0, atol=1e-6)
    np.testing.assert_array_equal(t.argmax(axis=1), y)
    np.testing.assert_allclose(t, np.eye(num_classes)[y] - 1.0 / num_classes, atol=1e-7)


def test_one_hot_centered_dtype_and_errors():
    assert one_hot_centered(np.array([1], dtype=np.uint8), 2, dtype=np.float64).dtype \
        == np.float64
    with pytest.raises(ValueError, match=r"label 3; expected labels in \[0, 3\)"):
        one_hot_centered([0, 3], 3)
    with pytest.raises(ValueError, match="label -1"):
        one_hot_centered([-1, 0], 3)
    with pytest.raises(ValueError, match="integer class labels"):
        one_hot_centered([0.0, 1.0], 2)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        one_hot_centered([0], 0)
