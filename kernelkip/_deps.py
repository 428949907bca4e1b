"""Guarded imports of optional packages and the environment switches that turn them off.

Only this module imports optional packages. ``import kernelkip`` never imports CuPy and never
compiles a Numba kernel: both happen on first use.

Environment switches
--------------------
KERNELKIP_NO_NUMBA=1 : behave as if Numba were not installed (engine "auto" picks "numpy").
KERNELKIP_NO_CUPY=1  : behave as if CuPy were not installed.
KERNELKIP_NO_MATPLOTLIB=1 : behave as if matplotlib were not installed (``kernelkip plot``).
"""
import importlib
import os
import sys

__all__ = ["numba_available", "get_numba", "cupy_available", "get_cupy", "matplotlib_available",
           "get_pyplot"]


def _switched_off(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


_cache = {}


def _try_import(module, switch):
    if module not in _cache:
        if _switched_off(switch):
            _cache[module] = None
        else:
            try:
                _cache[module] = importlib.import_module(module)
            except Exception:  # noqa: BLE001 -- a broken install counts as absent
                _cache[module] = None
    return _cache[module]


def get_numba():
    """The ``numba`` module, or ``None`` when it is absent or switched off."""
    return _try_import("numba", "KERNELKIP_NO_NUMBA")


def numba_available():
    """Whether Numba can be used."""
    return get_numba() is not None


def get_cupy():
    """The ``cupy`` module when it imports and sees a CUDA device, else ``None``."""
    if "cupy_device" not in _cache:
        cp = _try_import("cupy", "KERNELKIP_NO_CUPY")
        ok = False
        if cp is not None:
            try:
                ok = cp.cuda.runtime.getDeviceCount() > 0
            except Exception:  # noqa: BLE001 -- no driver, no device
                ok = False
        _cache["cupy_device"] = cp if ok else None
    return _cache["cupy_device"]


def cupy_available():
    """Whether CuPy is installed and a CUDA device is visible."""
    return get_cupy() is not None


_NO_MATPLOTLIB = "kernelkip plot needs matplotlib: pip install kernelkip[plot]"


def matplotlib_available():
    """Whether matplotlib imports (and ``KERNELKIP_NO_MATPLOTLIB`` is unset)."""
    return _try_import("matplotlib", "KERNELKIP_NO_MATPLOTLIB") is not None


def get_pyplot():
    """``matplotlib.pyplot``, on the Agg backend when there is no display.

    The backend is chosen only if pyplot is not imported yet and ``MPLBACKEND`` is unset, so
    a notebook's or the user's choice stands.

    Raises
    ------
    ImportError
        If matplotlib is absent or switched off, with the line to install it.
    """
    mpl = _try_import("matplotlib", "KERNELKIP_NO_MATPLOTLIB")
    if mpl is None:
        raise ImportError(_NO_MATPLOTLIB)
    headless = sys.platform.startswith("linux") and not (os.environ.get("DISPLAY")
                                                         or os.environ.get("WAYLAND_DISPLAY"))
    if headless and "matplotlib.pyplot" not in sys.modules and not os.environ.get("MPLBACKEND"):
        mpl.use("Agg")
    return importlib.import_module("matplotlib.pyplot")
