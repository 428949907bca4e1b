"""Thread-pool defaults that keep OpenBLAS and Numba's OpenMP from fighting over cores.

A kernel computation alternates BLAS products with Numba's parallel loops. By default both
thread pools spin-wait after each call, so each steals the cores the other needs: on a 2-core
machine a depth-3 KIP step at (100, 1000, 784) took 32 ms instead of 4.3 ms, median, with a large
spread. Reproduce with ``OMP_WAIT_POLICY=ACTIVE OPENBLAS_THREAD_TIMEOUT=28 python
bench/bench_fc_kip_step.py --quick``: values set by the user are kept. Unless the user has
set them, ask OpenBLAS to park its threads quickly and OpenMP to wait passively. These
variables are read when the libraries load, so they only take effect when ``kernelkip`` is
imported before NumPy (as the ``kernelkip`` command and the benchmarks do); see
``docs/backends.md``.
"""
import os

DEFAULTS = {"OPENBLAS_THREAD_TIMEOUT": "4", "OMP_WAIT_POLICY": "PASSIVE"}

for _name, _value in DEFAULTS.items():
    os.environ.setdefault(_name, _value)
