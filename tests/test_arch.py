"""Architecture values: frozen, hashable, printable as Python, serialisable, validated."""
import json

import numpy as np
import pytest
from hypothesis import given, strategies as st

import kernelkip as kk
from kernelkip.arch import from_dict

from .strategies import activations, fc_archs

NAMESPACE = {"serial": kk.serial, "Dense": kk.Dense, "ABRelu": kk.ABRelu, "Erf": kk.Erf}
if hasattr(kk, "Gelu"):
    NAMESPACE["Gelu"] = kk.Gelu


@given(arch=fc_archs(depth=st.integers(0, 4)))
def test_repr_is_python_that_rebuilds_an_equal_value(arch):
    assert eval(repr(arch), NAMESPACE) == arch


@given(arch=fc_archs(depth=st.integers(0, 4)))
def test_to_dict_round_trips_through_json(arch):
    assert from_dict(json.loads(json.dumps(arch.to_dict()))) == arch


@given(arch=fc_archs(depth=st.integers(0, 4)))
def test_equal_values_hash_equal_and_work_as_cache_keys(arch):
    twin = from_dict(arch.to_dict())
    assert twin is not arch and hash(twin) == hash(arch)
    assert {arch: "cached"}[twin] == "cached"


@given(depth=st.integers(0, 4), layer=activations())
def test_fc_alternates_dense_and_activation_and_ends_with_a_readout(depth, layer):
    arch = kk.FC(depth, 1.3, 0.2, layer)
    assert len(arch) == 2 * depth + 1
    assert list(arch)[1::2] == [layer] * depth
    assert list(arch)[0::2] == [kk.Dense(1.3, 0.2)] * (depth + 1)


def test_to_dict_names_each_layer_type_and_field():
    assert kk.FC(1, 2.0, 0.5, "erf").to_dict() == {"layers": [
        {"type": "Dense", "W_std": 2.0, "b_std": 0.5, "parameterization": "ntk"},
        {"type": "Erf", "a": 1.0, "b": 1.0, "c": 0.0},
        {"type": "Dense", "W_std": 2.0, "b_std": 0.5, "parameterization": "ntk"}]}


def test_layers_are_frozen():
    with pytest.raises(AttributeError):
        kk.Dense().W_std = 2.0
    with pytest.raises(AttributeError):
        kk.FC(1).layers = ()


def test_numbers_are_stored_as_floats():
    """Dense(1, 0) and Dense(1.0, 0.0) are one value (same hash, same repr)."""
    assert kk.Dense(1, 0) == kk.Dense(1.0, 0.0)
    assert repr(kk.Dense(1, 0)) == repr(kk.Dense(1.0, 0.0))
    assert isinstance(kk.ABRelu(0, 1).a, float)


def test_relu_and_leaky_relu_are_abrelu_values():
    assert kk.Relu() == kk.ABRelu(0, 1)
    assert kk.LeakyRelu(0.2) == kk.ABRelu(0.2, 1)
    assert kk.LeakyRelu() == kk.ABRelu(0.01, 1)


@pytest.mark.parametrize("name, layer", [
    ("relu", kk.ABRelu(0, 1)), ("leaky_relu", kk.ABRelu(0.01, 1)),
    ("leaky_relu:0.3", kk.ABRelu(0.3, 1)), ("erf", kk.Erf(1, 1, 0)),
] + ([("gelu", kk.Gelu())] if hasattr(kk, "Gelu") else []))
def test_activation_names_resolve_to_layer_values(name, layer):
    assert kk.FC(1, activation=name).layers[1] == layer


def test_activation_layer_values_pass_through_fc():
    assert kk.FC(2, activation=kk.Erf(2, 0.5, 0.1)).layers[3] == kk.Erf(2, 0.5, 0.1)


def test_serial_flattens_nested_serials():
    inner = kk.serial(kk.Dense(), kk.Relu())
    assert kk.serial(inner, kk.Dense()).layers == (kk.Dense(), kk.Relu(), kk.Dense())
    assert kk.serial(inner, inner).layers == kk.FC(2, 1.0, 0.0).layers[:4]


def test_depth_may_be_a_numpy_integer():
    assert kk.FC(np.int64(2)) == kk.FC(2)


@pytest.mark.parametrize("make, match", [
    (lambda: kk.Dense(W_std=-1.0), "W_std must be a finite non-negative number"),
    (lambda: kk.Dense(W_std=float("inf")), "W_std"),
    (lambda: kk.Dense(W_std="wide"), "W_std must be a number, got 'wide'"),
    (lambda: kk.Dense(b_std=float("nan")), "b_std"),
    (lambda: kk.Dense(parameterization="standard"), "unknown parameterization 'standard'"),
    (lambda: kk.ABRelu(a=float("nan")), "a must be a finite number"),
    (lambda: kk.Erf(b=None), "b must be a number"),
    (lambda: kk.FC(1, activation="swish"), "unknown activation 'swish'"),
    (lambda: kk.FC(1, activation="relu:0.2"), "takes no argument"),
    (lambda: kk.FC(1, activation="leaky_relu:steep"), "steep"),
    (lambda: kk.FC(1, activation=3), "activation must be a name or a layer value"),
    (lambda: kk.FC(-1), "depth must be a non-negative integer, got -1"),
    (lambda: kk.FC(1.5), "depth must be a non-negative integer, got 1.5"),
    (lambda: from_dict({"layers": [{"type": "Dropout"}]}), "unknown layer type 'Dropout'"),
])
def test_bad_values_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_serial_of_something_that_is_not_a_layer_raises_type_error():
    with pytest.raises(TypeError, match="not a kernelkip layer"):
        kk.serial(kk.Dense(), "relu")
