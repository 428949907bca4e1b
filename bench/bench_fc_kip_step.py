"""KIP step (loss + exact gradients w.r.t. support images and labels), depth-3 FC NTK.

README row "FC depth-3 NTK KIP step". With ``--against nt`` neural-tangents' ``jax.jit(
value_and_grad(loss))`` runs on the same inputs in the same process (it must be importable:
``bench/requirements-peers.txt``), and the table gives the ratio of the two medians.

    python bench/bench_fc_kip_step.py [--quick] [--against nt] [--dtype float32]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kernelkip as kk  # noqa: E402 -- first, so its thread-pool defaults apply
import numpy as np  # noqa: E402

import _harness  # noqa: E402

CASES = [(100, 1000), (500, 5000)]


def problem(n_s, n_t, d=784, k=10, dtype="float32", seed=0):
    """The same inputs as ``nt_reference._kip_problem``."""
    rng = np.random.default_rng(seed)
    x_s = rng.standard_normal((n_s, d)).astype(dtype)
    x_t = rng.standard_normal((n_t, d)).astype(dtype)
    y_s = (np.eye(k)[np.arange(n_s) % k] - 1.0 / k).astype(dtype)
    y_t = (np.eye(k)[rng.integers(0, k, n_t)] - 1.0 / k).astype(dtype)
    return x_s, y_s, x_t, y_t


def setup_kip_step(n_s, n_t, d=784, depth=3, dtype="float32"):
    """A zero-argument callable doing one step (used for time and peak memory).

    It is called once here, so that Numba's compilation (or cache load) is not measured.
    """
    arch = kk.FC(depth, W_std=2 ** 0.5, b_std=0.1)
    args = problem(n_s, n_t, d, dtype=dtype)

    def step():
        return kk.kip_loss(*args, arch, kernel="ntk", reg=1e-6)

    step()
    return step


def time_kip_step(n_s, n_t, d=784, depth=3, dtype="float32", repeats=7):
    return _harness.measure(setup_kip_step(n_s, n_t, d, depth, dtype), repeats=repeats, warmup=2)


def peakmem_kip_step(n_s, n_t, d=784, depth=3, dtype="float32"):
    """Peak MB of NumPy array memory allocated during one step (``tracemalloc``: NumPy reports
    its buffers to it; the inputs, made before, are not counted). RSS growth is no measure
    here: after warm-up the allocator reuses freed pages."""
    import tracemalloc

    step = setup_kip_step(n_s, n_t, d, depth, dtype)
    tracemalloc.start()
    try:
        step()
        return tracemalloc.get_traced_memory()[1] / 2 ** 20
    finally:
        tracemalloc.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="only the small case, 3 repeats")
    ap.add_argument("--against", choices=("nt",), default=None)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--depth", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    cases = CASES[:1] if args.quick else CASES
    repeats = 3 if args.quick else args.repeats
    nt = None
    if args.against == "nt":
        import nt_reference as nt  # needs jax + neural-tangents
        if args.dtype == "float64":
            nt.jax.config.update("jax_enable_x64", True)
    rows = []
    for n_s, n_t in cases:
        res = time_kip_step(n_s, n_t, depth=args.depth, dtype=args.dtype, repeats=repeats)
        row = {"case": f"n_s={n_s}, n_t={n_t}, d=784", "dtype": args.dtype,
               "kernelkip_ms": 1e3 * res["median_s"], "kernelkip_iqr_ms": 1e3 * res["iqr_s"],
               "kernelkip_peak_mb": peakmem_kip_step(n_s, n_t, depth=args.depth,
                                                     dtype=args.dtype)}
        if nt is not None:
            r = nt.time_nt_kip_step(n_s, n_t, depth=args.depth, repeats=repeats, dtype=args.dtype)
            loss_kk = setup_kip_step(n_s, n_t, depth=args.depth, dtype=args.dtype)()[0]
            row.update(nt_ms=r["median_ms"], nt_iqr_ms=r["iqr_ms"],
                       speedup=r["median_ms"] / row["kernelkip_ms"],
                       loss_rel_diff=abs(loss_kk - r["loss"]) / abs(r["loss"]))
        rows.append(row)
    cols = ["case", "dtype", "kernelkip_ms", "kernelkip_iqr_ms", "kernelkip_peak_mb"]
    if nt is not None:
        cols += ["nt_ms", "nt_iqr_ms", "speedup", "loss_rel_diff"]
    _harness.print_table(rows, cols)
    _harness.write_json("fc_kip_step", rows, vars(args))
    _harness.write_figure("fc_kip_step", lambda: _harness.timing_figure(
        rows, lambda r: f"{r['case']}, {r['dtype']}",
        [("kernelkip_ms", "kernelkip_iqr_ms", "kernelkip"),
         ("nt_ms", "nt_iqr_ms", "neural-tangents")],
        unit="ms", title=f"KIP step, depth-{args.depth} FC NTK"))


if __name__ == "__main__":
    main()
