"""One RFAD step (random-feature NNGP, KRR, Platt loss, gradients): median time (README table).

A step is ``kk.objectives.rfad_value_and_grad`` after a fresh draw of the networks
(``kk.sample_weights``): ``M`` random ConvNets (3 x [Conv3x3 SAME ``width`` channels, ReLU,
AvgPool2], Flatten, Dense; W_std^2 = 2, b_std = 0.1), ``n_s`` support and ``n_t`` target images,
float32, ridge 5e-3 * trace / n, Platt loss. Rows per image shape:

* ``step``: the whole step (draw, target features, support features and backward, KRR);
* ``target features``: the forward pass over the targets alone;
* ``support fwd+bwd``: the support's features with the tape, and the backward pass.

With ``--against torch`` the same step runs in PyTorch with autograd in the same process
(``bench/torch_rfad_step.py``, targets in chunks of 100, channels-last and NCHW), round-robin
with kernelkip's step; needs ``torch`` beside kernelkip (``bench/requirements-torch.txt``).

    python bench/bench_rfad_step.py [--quick] [--repeats 5] [--against torch]
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kernelkip as kk  # noqa: E402 -- first, so its thread-pool defaults apply
import numpy as np  # noqa: E402

import _harness  # noqa: E402
from kernelkip import features as F  # noqa: E402

CASES = [((32, 32, 3), 100, 1000), ((28, 28, 1), 100, 1000)]


def problem(shape, n_s, n_t, seed=0):
    rng = np.random.default_rng(seed)
    x_s = rng.standard_normal((n_s,) + shape).astype("float32")
    x_t = rng.standard_normal((n_t,) + shape).astype("float32")
    y_s = (np.eye(10)[np.arange(n_s) % 10] - 0.1).astype("float32")
    y_t = (np.eye(10)[rng.integers(0, 10, n_t)] - 0.1).astype("float32")
    return x_s, y_s, x_t, y_t


def setup(shape, n_s, n_t, width, models):
    """``{name: zero-argument callable}`` for the three rows (each run once here)."""
    rf = kk.RandomFeatures(kk.ConvNet(3), width, models)
    x_s, y_s, x_t, y_t = problem(shape, n_s, n_t)
    rng = np.random.default_rng(1)
    fixed = kk.sample_weights(rf, shape, np.random.default_rng(2))

    def step():
        w = kk.sample_weights(rf, shape, rng)
        return kk.objectives.rfad_value_and_grad(x_s, y_s, x_t, y_t, rf, w, loss="platt",
                                                 log_temp=0.0, reg=5e-3)

    def target():
        return F.features(x_t, fixed, rf)

    def support():
        phi, tape = F.features(x_s, fixed, rf, save=True)
        return F.features_vjp(tape, phi)

    fns = {"step": step, "target features": target, "support fwd+bwd": support}
    for fn in fns.values():
        fn()
    return fns


def setup_torch(shape, n_s, n_t, width, models, memory_format):
    import torch
    import torch_rfad_step as tr
    x_s, y_s, x_t, y_t = problem(shape, n_s, n_t)
    args = (torch.from_numpy(x_s).requires_grad_(True), torch.from_numpy(y_s).requires_grad_(True),
            torch.zeros((), dtype=tr.KRR_DTYPE, requires_grad=True), torch.from_numpy(x_t),
            torch.from_numpy(np.argmax(y_t, 1)))
    gen = torch.Generator().manual_seed(1)
    fmt = torch.channels_last if memory_format == "channels_last" else torch.contiguous_format
    last = {}

    def step():
        last["loss"], last["target_s"] = tr.rfad_step(*args, gen, width=width, models=models,
                                                      chunk=100, memory_format=fmt)

    step()
    return step, last


def round_robin(fns, repeats):
    """Time each callable once per round, ``repeats`` rounds: a slow spell hits all rows."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: {"median_s": float(np.median(t)),
                   "iqr_s": float(np.subtract(*np.percentile(t, [75, 25]))), "times": t}
            for name, t in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="first case, 3 repeats")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--models", type=int, default=8)
    ap.add_argument("--against", choices=("torch",), default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: cores)")
    args = ap.parse_args(argv)
    repeats = 3 if args.quick else args.repeats
    cases = CASES[:1] if args.quick else CASES
    rows = []
    for shape, n_s, n_t in cases:
        fns = setup(shape, n_s, n_t, args.width, args.models)
        torch_last = {}
        if args.against == "torch":
            import os
            import torch
            torch.set_num_threads(args.threads or os.cpu_count())
            for fmt in ("channels_last", "nchw"):
                fns[f"torch step ({fmt})"], torch_last[fmt] = setup_torch(
                    shape, n_s, n_t, args.width, args.models, fmt)
        res = round_robin(fns, repeats)
        base = res["step"]["median_s"]
        for name, r in res.items():
            row = {"what": name, "image": "x".join(map(str, shape)), "n_s": n_s, "n_t": n_t,
                   "models": args.models, "width": args.width, "median_s": r["median_s"],
                   "iqr_s": r["iqr_s"], "times": r["times"]}
            if name.startswith("torch"):
                row["over_kernelkip_step"] = r["median_s"] / base
                fmt = name[len("torch step ("):-1]
                row["torch_target_forward_s"] = torch_last[fmt]["target_s"]
            rows.append(row)
            print({k: v for k, v in row.items() if k != "times"}, flush=True)
    _harness.print_table(rows, ["what", "image", "n_s", "n_t", "median_s", "iqr_s",
                                "over_kernelkip_step"])
    print("wrote", _harness.write_json("rfad_step", rows, vars(args)))
    _harness.write_figure("rfad_step", lambda: _harness.timing_figure(
        rows, lambda r: f"{r['what']}, {r['image']}", [("median_s", "iqr_s", "median")],
        title=f"RFAD step, {args.models} ConvNet3s of width {args.width}"))


if __name__ == "__main__":
    main()
