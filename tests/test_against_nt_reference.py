"""kernelkip against values and gradients computed by neural-tangents (float64, x64 enabled).

The reference file is written by ``bench/nt_dump_reference.py`` in an environment that has
neural-tangents (``bench/requirements-peers.txt``); these tests need only the stored arrays.
Cases with activations kernelkip does not implement are skipped, not silently passed.
"""
import json
from pathlib import Path

import numpy as np
import pytest

import kernelkip as kk

REF = np.load(Path(__file__).parent / "data" / "nt_fc_reference.npz")
INDEX = json.loads(str(REF["index"]))["cases"]
ENGINES = ["numpy", "numba"]


def _arch(case):
    name, args = case["activation"], case.get("activation_args") or []
    if case["depth"] == 0:  # a single Dense layer: the activation plays no part
        return kk.FC(0, case["W_std"], case["b_std"])
    layers = {"relu": kk.Relu, "leaky_relu": kk.LeakyRelu, "abrelu": kk.ABRelu, "erf": kk.Erf,
              "gelu": kk.Gelu}
    if name not in layers:
        pytest.skip(f"activation {name!r} has no kernelkip rule yet")
    return kk.FC(case["depth"], case["W_std"], case["b_std"], layers[name](*args))


def _close(actual, expected, rtol=1e-12):
    scale = np.abs(expected).max()
    assert actual.shape == expected.shape
    assert np.abs(actual - expected).max() <= rtol * max(scale, 1e-300)


FC_CASES = sorted(k for k, c in INDEX.items() if c["kind"] == "fc")
KIP_CASES = sorted(k for k, c in INDEX.items() if c["kind"] == "kip")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", FC_CASES)
def test_kernels_equal_neural_tangents(name, engine):
    case, arr = INDEX[name], lambda key: REF[f"{name}/{key}"]
    arch = _arch(case)
    for get in ("nngp", "ntk"):
        _close(kk.kernel(arr("x1"), arr("x2"), arch, get=get, engine=engine), arr(get))
        _close(kk.kernel(arr("x1"), None, arch, get=get, engine=engine), arr(get + "_11"))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", FC_CASES)
def test_vjps_equal_neural_tangents_gradients(name, engine):
    case, arr = INDEX[name], lambda key: REF[f"{name}/{key}"]
    arch = _arch(case)
    # cases flagged grads_well_defined=False have x1/x2 rows that coincide exactly: the ReLU NTK
    # has a kink there, and both libraries take the symmetric derivative (angle terms frozen
    # at theta = 0), so their numbers still agree
    for get, vjp in (("nngp", kk.nngp_vjp), ("ntk", kk.ntk_vjp)):
        g1, g2 = vjp(arr("x1"), arr("x2"), arch, arr("cot"), engine=engine)
        _close(g1, arr(f"{get}_grad_x1"), 1e-10)
        _close(g2, arr(f"{get}_grad_x2"), 1e-10)
    g11, none = kk.ntk_vjp(arr("x1"), None, arch, arr("cot_11"), engine=engine)
    assert none is None
    _close(g11, arr("ntk_11_grad_x1"), 1e-10)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", KIP_CASES)
def test_kip_loss_equals_neural_tangents(name, engine):
    case, arr = INDEX[name], lambda key: REF[f"{name}/{key}"]
    arch = _arch(case)
    loss, g_xs, g_ys = kk.kip_loss(arr("x_support"), arr("y_support"), arr("x_target"),
                                   arr("y_target"), arch, kernel=case["kernel"], reg=case["reg"],
                                   ridge_scale=case["ridge_scale"], reduction=case["reduction"],
                                   engine=engine)
    assert loss == pytest.approx(float(arr("loss")), rel=1e-10)
    _close(g_xs, arr("grad_x_support"), 1e-8)
    _close(g_ys, arr("grad_y_support"), 1e-8)
