"""Exact ConvNet NTK blocks and KIP-ConvNet steps: median time and peak memory (README table).

The net is the 3-block ConvNet (3 x [Conv3x3 SAME, ReLU, AvgPool2], Flatten or GlobalAvgPool,
Dense; W_std sqrt(2), b_std 0.1), float32, random images. Rows:

* ``kernel``: one ``n1 x n2`` NTK block, ``kk.ntk(x1, x2, arch)``;
* ``kip step``: ``kk.kip_loss`` (loss and exact gradients w.r.t. the support images and
  labels) with ``n_s`` support and ``n_t`` target images, and the time of the two kernels the
  step needs (``K_ts`` and ``K_ss`` values only) measured beside it: their ratio is the cost of
  the gradient relative to the kernel.

Peak memory is the growth of the resident set during one call, in a fresh process
(``_harness.peak_memory_mb``). With ``--against nt`` neural-tangents computes the same block in
the same process (``bench/requirements-peers.txt``; minutes per block on a CPU).

    python bench/bench_conv_kernel.py [--quick] [--repeats 5] [--against nt]
"""
import argparse
import functools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kernelkip as kk  # noqa: E402 -- first, so its thread-pool defaults apply
import numpy as np  # noqa: E402

import _harness  # noqa: E402

KERNEL_CASES = [((32, 32, 3), "flatten", 10, 100), ((32, 32, 3), "gap", 10, 100),
                ((28, 28, 1), "flatten", 10, 100), ((28, 28, 1), "gap", 10, 100)]
STEP_CASES = [((32, 32, 3), "flatten", 10, 100), ((28, 28, 1), "flatten", 10, 100),
              ((28, 28, 1), "flatten", 100, 50)]


def images(n, shape, seed, dtype="float32"):
    return np.random.default_rng(seed).standard_normal((n,) + shape).astype(dtype)


def setup_kernel(shape, readout, n1, n2, get="ntk"):
    """A zero-argument callable computing one block (called once here: compilation or cache
    load is not measured)."""
    arch = kk.ConvNet(3, W_std=2 ** 0.5, b_std=0.1, readout=readout)
    x1, x2 = images(n1, shape, 0), images(n2, shape, 1)

    def block():
        return kk.kernel(x1, x2, arch, get=get)

    block()
    return block


def setup_kip_step(shape, readout, n_s, n_t):
    arch = kk.ConvNet(3, W_std=2 ** 0.5, b_std=0.1, readout=readout)
    x_s, x_t = images(n_s, shape, 2), images(n_t, shape, 3)
    k = 10
    y_s = (np.eye(k)[np.arange(n_s) % k] - 1 / k).astype("float32")
    y_t = (np.eye(k)[np.arange(n_t) % k] - 1 / k).astype("float32")

    def step():
        return kk.kip_loss(x_s, y_s, x_t, y_t, arch, kernel="ntk", reg=1e-6)

    def kernels_only():
        return kk.ntk(x_t, x_s, arch), kk.ntk(x_s, None, arch)

    step()
    kernels_only()
    return step, kernels_only


def _step_only(shape, readout, n_s, n_t):
    return setup_kip_step(shape, readout, n_s, n_t)[0]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="first case of each kind, 3 repeats")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    ap.add_argument("--against", choices=("nt",), default=None)
    ap.add_argument("--no-steps", action="store_true", help="kernel blocks only")
    args = ap.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    kcases = KERNEL_CASES[:1] if args.quick else KERNEL_CASES
    scases = [] if args.no_steps else STEP_CASES[:1] if args.quick else STEP_CASES
    nt = None
    if args.against == "nt":
        import nt_reference as nt  # needs jax + neural-tangents
    rows = []
    for shape, readout, n1, n2 in kcases:
        res = _harness.measure(setup_kernel(shape, readout, n1, n2), repeats=repeats, warmup=0)
        row = {"what": "kernel", "image": "x".join(map(str, shape)), "readout": readout,
               "n": f"{n1}x{n2}", "median_s": res["median_s"], "iqr_s": res["iqr_s"]}
        if not args.no_memory:
            row["peak_mb"] = _harness.peak_memory_mb(
                functools.partial(setup_kernel, shape, readout, n1, n2))
        if nt is not None:
            x1, x2 = images(n1, shape, 0), images(n2, shape, 1)
            want, row["nt_s"] = nt.conv_kernel_block(x1, x2, readout)
            row["speedup"] = row["nt_s"] / row["median_s"]
            got = setup_kernel(shape, readout, n1, n2)()
            row["rel_diff"] = float(np.abs(got - want).max() / np.abs(want).max())
        rows.append(row)
        print(row, flush=True)
    for shape, readout, n_s, n_t in scases:
        step, kernels_only = setup_kip_step(shape, readout, n_s, n_t)
        res = _harness.measure(step, repeats=repeats, warmup=0)
        ker = _harness.measure(kernels_only, repeats=repeats, warmup=0)
        row = {"what": "kip step", "image": "x".join(map(str, shape)), "readout": readout,
               "n": f"n_s={n_s}, n_t={n_t}", "median_s": res["median_s"], "iqr_s": res["iqr_s"],
               "kernels_s": ker["median_s"], "step_over_kernels": res["median_s"]
               / ker["median_s"]}
        if not args.no_memory:
            row["peak_mb"] = _harness.peak_memory_mb(
                functools.partial(_step_only, shape, readout, n_s, n_t))
        rows.append(row)
        print(row, flush=True)
    cols = ["what", "image", "readout", "n", "median_s", "iqr_s", "kernels_s",
            "step_over_kernels", "peak_mb"]
    if nt is not None:
        cols += ["nt_s", "speedup", "rel_diff"]
    _harness.print_table(rows, cols)
    print("wrote", _harness.write_json("conv_kernel", rows, vars(args)))
    _harness.write_figure("conv_kernel", lambda: _harness.timing_figure(
        rows, lambda r: f"{r['what']} {r['n']}, {r['image']}, {r['readout']}",
        [("median_s", "iqr_s", "kernelkip"), ("kernels_s", None, "its two kernels alone"),
         ("nt_s", None, "neural-tangents")], log=True, title="ConvNet3 NTK, float32"))


if __name__ == "__main__":
    main()
