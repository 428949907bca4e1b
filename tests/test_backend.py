"""Engine policy and import hygiene."""
import subprocess
import sys

import numpy as np
import pytest

from kernelkip import backend
from kernelkip._deps import numba_available


def test_auto_engine_for_numpy_arrays():
    expected = "numba" if numba_available() else "numpy"
    assert backend.resolve_engine("auto", np.zeros(2)) == expected
    assert backend.array_namespace(np.zeros(2), None) is np


def test_unknown_engine_lists_the_valid_ones():
    with pytest.raises(ValueError, match="'auto', 'numpy', 'numba', 'cupy'"):
        backend.resolve_engine("fortran", np.zeros(2))


def test_cupy_engine_without_a_device_or_cupy_arrays_is_refused():
    with pytest.raises((RuntimeError, ValueError), match="cupy|CuPy"):
        backend.resolve_engine("cupy", np.zeros(2))


def _python(code, **env):
    import os
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, check=True).stdout.strip()


def test_switch_turns_numba_off():
    code = "import numpy as np; from kernelkip import backend; " \
           "print(backend.resolve_engine('auto', np.zeros(1)))"
    assert _python(code, KERNELKIP_NO_NUMBA="1") == "numpy"


def test_import_compiles_nothing_and_leaves_cupy_alone():
    code = ("import sys, kernelkip; from kernelkip.kernels import _activations_numba as a; "
            "print('cupy' in sys.modules, bool(a._compiled))")
    assert _python(code) == "False False"
