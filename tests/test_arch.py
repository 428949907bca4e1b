"""Architecture values: frozen, hashable, printable, serialisable, validated."""
import json

import pytest
from hypothesis import given, strategies as st

import kernelkip as kk
from kernelkip.arch import from_dict

NAMESPACE = {"serial": kk.serial, "Dense": kk.Dense, "ABRelu": kk.ABRelu, "Erf": kk.Erf,
             "Gelu": kk.Gelu}


@given(depth=st.integers(0, 4), w=st.floats(0.1, 3), b=st.floats(0, 1),
       act=st.sampled_from(["relu", "erf", "gelu", "leaky_relu:0.3"]))
def test_fc_round_trips_through_repr_and_json(depth, w, b, act):
    arch = kk.FC(depth, w, b, act)
    assert eval(repr(arch), NAMESPACE) == arch
    assert from_dict(json.loads(json.dumps(arch.to_dict()))) == arch
    assert hash(arch) == hash(from_dict(arch.to_dict()))
    assert len(arch) == 2 * depth + 1
    assert all(isinstance(layer, kk.Dense) == (i % 2 == 0) for i, layer in enumerate(arch))


def test_layers_are_frozen_and_specialisations_are_plain_values():
    with pytest.raises(AttributeError):
        kk.Dense().W_std = 2.0
    assert kk.Relu() == kk.ABRelu(0, 1)
    assert kk.LeakyRelu(0.2) == kk.ABRelu(0.2, 1)
    inner = kk.serial(kk.Dense(), kk.Relu())
    assert kk.serial(inner, kk.Dense()).layers == (kk.Dense(), kk.Relu(), kk.Dense())


@pytest.mark.parametrize("make, error, match", [
    (lambda: kk.Dense(W_std=-1.0), ValueError, "W_std"),
    (lambda: kk.Dense(b_std=float("nan")), ValueError, "b_std"),
    (lambda: kk.Dense(parameterization="standard"), ValueError, "parameterization"),
    (lambda: kk.FC(1, activation="swish"), ValueError, "unknown activation"),
    (lambda: kk.FC(1, activation="relu:0.2"), ValueError, "takes no argument"),
    (lambda: kk.FC(-1), ValueError, "depth"),
    (lambda: kk.serial(kk.Dense(), "relu"), TypeError, "not a kernelkip layer"),
])
def test_bad_values_raise(make, error, match):
    with pytest.raises(error, match=match):
        make()
