"""Shared test configuration: hypothesis profiles and the ``engine`` fixture.

Hypothesis profiles (``HYPOTHESIS_PROFILE=dev|ci|thorough``; the default is ``ci`` when the
``CI`` environment variable is set, else ``dev``):

* ``dev``       10 examples per property, for the edit-test loop;
* ``ci``        50 examples, derandomized (the same examples on every run), no deadline;
* ``thorough``  500 examples, for an occasional long run.

Engines: the ``engine`` fixture runs a test once per available engine: ``"numpy"`` always,
``"numba"`` when Numba imports (and ``KERNELKIP_NO_NUMBA`` is unset), ``"cupy"`` only with CuPy
and a CUDA device (otherwise that case is reported as skipped). ``KERNELKIP_TEST_ENGINE=cupy``
(or any comma-separated list of engine names) restricts the runs to those engines, as on a GPU
machine: ``KERNELKIP_TEST_ENGINE=cupy pytest -m gpu``.
"""
import os

import pytest
from hypothesis import HealthCheck, settings

from kernelkip import _deps

settings.register_profile("dev", max_examples=10, deadline=None)
settings.register_profile("ci", max_examples=50, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE",
                                     "ci" if os.environ.get("CI") else "dev"))

ALL_ENGINES = ("numpy", "numba", "cupy")


def _engine_params():
    wanted = os.environ.get("KERNELKIP_TEST_ENGINE", "").strip()
    names = [n.strip() for n in wanted.split(",") if n.strip()] if wanted else list(ALL_ENGINES)
    unknown = sorted(set(names) - set(ALL_ENGINES))
    if unknown:
        raise pytest.UsageError(f"KERNELKIP_TEST_ENGINE names unknown engine(s) {unknown}; "
                                f"expected some of {ALL_ENGINES}")
    params = []
    for name in names:
        if name == "numpy":
            params.append("numpy")
        elif name == "numba":
            # an explicitly requested engine that is missing is reported, not silently dropped
            if _deps.numba_available():
                params.append("numba")
            elif wanted:
                params.append(pytest.param("numba", marks=pytest.mark.skip(
                    reason="Numba is not available")))
        elif name == "cupy":
            params.append(pytest.param("cupy", marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not _deps.cupy_available(),
                                   reason="needs CuPy and a CUDA device")]))
    return params


# session scope: hypothesis refuses function-scoped fixtures in @given tests, and the value is
# a plain string that no test mutates
@pytest.fixture(scope="session", params=_engine_params())
def engine(request):
    """Name of an engine to pass as ``engine=``; see ``tests/gradcheck.py`` for moving arrays."""
    return request.param


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run only when asked for: ``-m slow`` (or any ``-m`` expression
    that names the marker) or ``KERNELKIP_SLOW=1``. The default run keeps their cheap versions."""
    if os.environ.get("KERNELKIP_SLOW", "").strip() in ("1", "true", "yes", "on"):
        return
    if "slow" in (config.getoption("markexpr", "") or ""):
        return
    skip = pytest.mark.skip(reason="slow: select with -m slow or KERNELKIP_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
