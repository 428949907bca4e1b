"""Thread-pool defaults that keep OpenBLAS and Numba's OpenMP from fighting over cores.

A kernel computation alternates BLAS products with Numba's parallel loops. By default both
thread pools spin-wait after each call, so each steals the cores the other needs (measured in
``bench/bench_fc_kip_step.py``: up to 8x slower steps on a 2-core machine). Unless the user has
set them, ask OpenBLAS to park its threads quickly and OpenMP to wait passively. These
variables are read when the libraries load, so they only take effect when ``kernelkip`` is
imported before NumPy (as the ``kernelkip`` command and the benchmarks do); see
``docs/backends.md``.
"""
import os

DEFAULTS = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}

for _name, _value in DEFAULTS.items():
    os.environ.setdefault(_name, _value)
