"""Optimizers: formulas, per-parameter step sizes, exact continuation through checkpoints."""
import numpy as np
import pytest

from kernelkip import optim


def _reference_adam(p, grads, lr, b1=0.9, b2=0.999, eps=1e-8):
    m = v = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p


def _run(opt, params, grads_seq, state=None):
    state = opt.init(params) if state is None else state
    for g in grads_seq:
        params, state = opt.update(g, state, params)
    return params, state


def test_adam_matches_its_formulas():
    rng = np.random.default_rng(0)
    p0 = rng.normal(size=(3, 2))
    grads = [rng.normal(size=(3, 2)) for _ in range(5)]
    params, state = _run(optim.adam(0.05), {"w": p0}, [{"w": g} for g in grads])
    np.testing.assert_allclose(params["w"], _reference_adam(p0, grads, 0.05), rtol=1e-14)
    assert state.step == 5


def test_sgd_momentum_matches_its_formulas():
    rng = np.random.default_rng(1)
    p, vel = rng.normal(size=4), np.zeros(4)
    grads = [rng.normal(size=4) for _ in range(4)]
    params, _ = _run(optim.sgd(0.1, momentum=0.9), {"w": p.copy()}, [{"w": g} for g in grads])
    for g in grads:
        vel = 0.9 * vel + g
        p = p - 0.1 * vel
    np.testing.assert_allclose(params["w"], p, rtol=1e-14)


def test_per_parameter_learning_rates_and_freezing():
    params = {"a": np.ones(2), "b": np.ones(2)}
    new, _ = _run(optim.adam({"a": 0.1, "b": 0.0}), params, [{"a": np.ones(2), "b": np.ones(2)}])
    np.testing.assert_allclose(new["a"], 0.9)
    np.testing.assert_array_equal(new["b"], 1.0)
    with pytest.raises(KeyError, match="no learning rate for parameter 'b'"):
        _run(optim.adam({"a": 0.1}), params, [{"a": np.ones(2), "b": np.ones(2)}])


@pytest.mark.parametrize("make", [lambda: optim.adam(0.01), lambda: optim.sgd(0.01, 0.9, True)])
def test_state_round_trip_through_npz_continues_bit_identical(make, tmp_path):
    rng = np.random.default_rng(2)
    p0 = {"x": rng.normal(size=(4, 3)).astype(np.float32), "y": rng.normal(size=2)}
    grads = [{"x": rng.normal(size=(4, 3)).astype(np.float32), "y": rng.normal(size=2)}
             for _ in range(10)]
    opt = make()
    straight, _ = _run(opt, p0, grads)
    half, state = _run(opt, p0, grads[:5])
    np.savez(tmp_path / "s.npz", **optim.state_to_arrays(state))
    with np.load(tmp_path / "s.npz") as data:
        restored = optim.state_from_arrays(dict(data))
    resumed, _ = _run(opt, half, grads[5:], restored)
    for name in p0:
        np.testing.assert_array_equal(resumed[name], straight[name])
        assert resumed[name].dtype == p0[name].dtype


def test_bad_gradients_raise():
    opt = optim.adam(0.1)
    params = {"w": np.zeros(2)}
    with pytest.raises(FloatingPointError, match="'w'"):
        opt.update({"w": np.array([np.nan, 0.0])}, opt.init(params), params)
    with pytest.raises(ValueError, match="shape"):
        opt.update({"w": np.zeros(3)}, opt.init(params), params)
    with pytest.raises(ValueError, match="unknown optimizer"):
        optim.get_optimizer("adagrad", 0.1)
