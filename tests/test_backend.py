"""Engine policy (``resolve_engine``), array namespaces, and import hygiene.

CuPy arrays are imitated where no GPU is needed: ``is_cupy_array`` looks only at the type's
module, and ``array_namespace`` returns ``sys.modules["cupy"]``, which a test may stand in for.
"""
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from kernelkip import _deps, backend


class FakeCupyArray:
    """Quacks like a CuPy array for the policy code: its type lives in module ``cupy``."""

    __module__ = "cupy._core.core"

    def __init__(self, data):
        self.data = np.asarray(data)

    def get(self):
        return self.data


@pytest.fixture
def fake_cupy(monkeypatch):
    """A stand-in ``cupy`` module in ``sys.modules`` and CuPy reported available."""
    module = types.ModuleType("cupy")
    module.asarray = FakeCupyArray
    monkeypatch.setitem(sys.modules, "cupy", module)
    monkeypatch.setattr(_deps, "cupy_available", lambda: True)
    return module


# ----------------------------------------------------------------------------- resolve_engine

def test_auto_picks_numba_when_available_else_numpy():
    expected = "numba" if _deps.numba_available() else "numpy"
    assert backend.resolve_engine("auto", np.zeros(2)) == expected


def test_auto_picks_numpy_when_numba_is_missing(monkeypatch):
    monkeypatch.setattr(_deps, "numba_available", lambda: False)
    assert backend.resolve_engine("auto", np.zeros(2)) == "numpy"


def test_auto_picks_cupy_for_cupy_arrays(fake_cupy):
    assert backend.resolve_engine("auto", FakeCupyArray([1.0])) == "cupy"


@pytest.mark.parametrize("engine", ["numpy", "numba"])
def test_an_explicit_cpu_engine_is_kept(engine):
    if engine == "numba" and not _deps.numba_available():
        pytest.skip("Numba is not available")
    assert backend.resolve_engine(engine, np.zeros(2), None) == engine


def test_unknown_engine_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown engine 'fortran'; expected one of "
                                         r"\('auto', 'numpy', 'numba', 'cupy'\)"):
        backend.resolve_engine("fortran", np.zeros(2))


def test_numba_requested_but_missing_raises_runtime_error(monkeypatch):
    monkeypatch.setattr(_deps, "numba_available", lambda: False)
    with pytest.raises(RuntimeError, match="Numba is not available"):
        backend.resolve_engine("numba", np.zeros(2))


def test_numba_on_cupy_arrays_raises_value_error(fake_cupy):
    with pytest.raises(ValueError, match="runs on the CPU"):
        backend.resolve_engine("numba", FakeCupyArray([1.0]))


def test_cupy_requested_without_cupy_raises_runtime_error(monkeypatch):
    monkeypatch.setattr(_deps, "cupy_available", lambda: False)
    with pytest.raises(RuntimeError, match="CuPy with a CUDA device is not available"):
        backend.resolve_engine("cupy", np.zeros(2))


def test_cupy_on_numpy_arrays_raises_value_error(fake_cupy):
    with pytest.raises(ValueError, match="needs CuPy arrays"):
        backend.resolve_engine("cupy", np.zeros(2))


# ----------------------------------------------------------------------------- namespaces

def test_numpy_arrays_none_and_scalars_give_numpy():
    assert backend.array_namespace(np.zeros(2), None, 3.0) is np
    assert backend.array_namespace() is np


def test_cupy_arrays_give_the_cupy_module(fake_cupy):
    assert backend.array_namespace(FakeCupyArray([1.0]), None) is fake_cupy


def test_mixed_numpy_and_cupy_arrays_raise_type_error():
    with pytest.raises(TypeError, match="mixed NumPy and CuPy"):
        backend.array_namespace(np.zeros(2), FakeCupyArray([1.0]))


def test_is_cupy_array_looks_at_the_type_only():
    assert backend.is_cupy_array(FakeCupyArray([1.0]))
    assert not backend.is_cupy_array(np.zeros(2))
    assert not backend.is_cupy_array([1.0])


def test_to_numpy_does_not_copy_numpy_arrays_and_fetches_cupy_ones():
    a = np.arange(3.0)
    assert backend.to_numpy(a) is a
    np.testing.assert_array_equal(backend.to_numpy(FakeCupyArray([1.0, 2.0])), [1.0, 2.0])
    np.testing.assert_array_equal(backend.to_numpy([1, 2]), np.array([1, 2]))


def test_to_device_moves_to_the_namespace_given(fake_cupy):
    a = np.arange(3.0)
    assert backend.to_device(a, np) is a
    moved = backend.to_device(a, fake_cupy)
    assert backend.is_cupy_array(moved)
    np.testing.assert_array_equal(backend.to_device(moved, np), a)


# ----------------------------------------------------------------------------- import hygiene

def _python(code, **env):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **env}, check=True)
    return out.stdout.strip()


def test_environment_switch_turns_numba_off():
    code = ("import numpy as np; from kernelkip import backend; "
            "print(backend.resolve_engine('auto', np.zeros(1)))")
    assert _python(code, KERNELKIP_NO_NUMBA="1") == "numpy"


def test_import_compiles_nothing_and_leaves_cupy_alone():
    code = ("import sys, kernelkip; from kernelkip.kernels import _activations_numba as a; "
            "loops = (a.fwd, a.vjp, a.atan2_array); "
            "print('cupy' in sys.modules, any(f.signatures for f in loops))")
    assert _python(code) == "False False"
