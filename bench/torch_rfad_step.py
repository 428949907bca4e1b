"""One RFAD step in PyTorch (autograd, CPU, float32): the peer for kernelkip's ``rfad_loss``.

What one step is (the same semantics as ``kernelkip.rfad_value_and_grad`` with ``loss="platt"``,
``reg=5e-3``, ``ridge_scale="trace"``; ``docs/math/rfad.md``):

1. Draw ``--models`` (M) fresh random ConvNets from a seeded ``torch.Generator``. Each has 3
   blocks of [Conv2d 3x3 SAME with ``--width`` output channels, ReLU, AvgPool2d(2)]; weights
   ``N(0, 2 / fan_in)`` with ``fan_in = 9 * C_in``, biases ``N(0, 0.1**2)``.
2. Features ``phi_m(x)`` = flattened block-3 output (``F = (size/8)**2 * width`` numbers, 2048
   for 32x32 images and width 128). Kernel
   ``K(x, x') = 2 / (M F) * sum_m phi_m(x) . phi_m(x') + 0.01``.
   The targets' features are computed under ``torch.no_grad()``; the support's carry autograd.
3. Kernel ridge regression: ``ridge = 5e-3 * trace(K_ss) / n_s`` (differentiated through, as in
   kernelkip), ``alpha = (K_ss + ridge I)^{-1} y_s`` by Cholesky, ``pred = K_ts alpha``.
   Features stay float32; the Gram matrices, the solve, ``pred`` and the loss are float64
   (kernelkip's precision split).
4. Loss: cross-entropy of ``softmax(exp(log_temp) * pred)`` against the integer target labels
   (mean over targets), then ``loss.backward()`` for the gradients w.r.t. the support images,
   the support labels and ``log_temp``.

Inputs are NHWC ``(n, size, size, channels)`` like kernelkip's; the step converts them to the
layout PyTorch convolves in. Arrangements timed (one row each):

- ``batch-nchw``: all targets in one batch, default NCHW memory format;
- ``chunked-nchw``: targets in chunks of ``--chunk``, NCHW;
- ``chunked-channels-last``: targets in chunks, images and conv weights in
  ``torch.channels_last`` (NHWC inputs permuted to NCHW are already channels-last in memory,
  so no copy is made).

The weight draw is inside the timed step. Each row also gives the time of the target forward
pass alone (measured inside the same steps). The arrangements are timed round-robin (one step of
each per repeat, after one untimed warm-up step of each), so a slow spell on a busy machine is
spread across them rather than landing on one row.

Needs only ``torch`` and ``numpy`` (CPU wheel); it does not import kernelkip, so it runs in its
own environment:

    /path/to/torchenv/bin/python bench/torch_rfad_step.py --json bench/results/rfad_step_torch.json

``--check`` instead runs one step of each arrangement from the same draw and checks that the
loss is finite, the gradients have the inputs' shapes and are finite, and the arrangements agree.
"""
import argparse
import datetime
import functools
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

W_VAR = 2.0        # W_std**2 of every conv layer and of the readout
B_STD = 0.1        # b_std of every conv layer and of the readout
REG = 5e-3         # ridge relative to trace(K_ss) / n_s
DEPTH = 3          # conv blocks per network
NUM_CLASSES = 10
KRR_DTYPE = torch.float64

ARRANGEMENTS = {
    # name: (targets chunked?, memory format)
    "batch-nchw": (False, torch.contiguous_format),
    "chunked-nchw": (True, torch.contiguous_format),
    "chunked-channels-last": (True, torch.channels_last),
}


# ----------------------------------------------------------------------------- the networks

def draw_networks(gen, models, width, channels, memory_format):
    """``models`` lists of ``DEPTH`` (weight, bias) pairs drawn from ``gen``.

    Weights are ``(width, C_in, 3, 3)`` with variance ``W_VAR / (9 C_in)``, biases
    ``N(0, B_STD**2)``.
    """
    nets = []
    for _ in range(models):
        layers, c_in = [], channels
        for _ in range(DEPTH):
            std = math.sqrt(W_VAR / (9 * c_in))
            w = torch.randn(width, c_in, 3, 3, generator=gen) * std
            b = torch.randn(width, generator=gen) * B_STD
            layers.append((w.contiguous(memory_format=memory_format), b))
            c_in = width
        nets.append(layers)
    return nets


def to_conv_layout(x_nhwc, memory_format):
    """NHWC images -> an NCHW-shaped tensor in ``memory_format`` (a copy only for NCHW memory)."""
    return x_nhwc.permute(0, 3, 1, 2).contiguous(memory_format=memory_format)


def features(x, nets):
    """Scaled, concatenated readout inputs ``Phi`` with ``K = Phi Phi^T + B_STD**2``.

    ``x`` is an NCHW-shaped batch; returns ``(n, M F)`` float32.
    """
    per_model = []
    for layers in nets:
        h = x
        for w, b in layers:
            h = F.avg_pool2d(F.relu(F.conv2d(h, w, b, padding=1)), 2)
        per_model.append(h.flatten(1))
    phi = torch.cat(per_model, dim=1)
    # W_d**2 / (M F) with F the per-model feature count
    return phi * math.sqrt(W_VAR / phi.shape[1])


def target_features(x_t, nets, chunk, memory_format):
    """Features of the targets, without autograd, in one batch (``chunk=None``) or in chunks."""
    with torch.no_grad():
        if chunk is None:
            return features(to_conv_layout(x_t, memory_format), nets)
        return torch.cat([features(to_conv_layout(part, memory_format), nets)
                          for part in x_t.split(chunk)])


# ----------------------------------------------------------------------------- one step

def rfad_step(x_s, y_s, log_temp, x_t, labels_t, gen, *, width, models, chunk, memory_format):
    """One RFAD step: fresh networks, loss, ``loss.backward()``.

    Leaves the gradients in ``x_s.grad``, ``y_s.grad`` and ``log_temp.grad`` and returns
    ``(loss, seconds spent on the target forward)``.
    """
    for p in (x_s, y_s, log_temp):
        p.grad = None
    nets = draw_networks(gen, models, width, x_s.shape[-1], memory_format)

    t0 = time.perf_counter()
    phi_t = target_features(x_t, nets, chunk, memory_format)
    t_target = time.perf_counter() - t0

    phi_s = features(to_conv_layout(x_s, memory_format), nets)
    b2 = B_STD ** 2
    p_s = phi_s.to(KRR_DTYPE)
    k_ss = p_s @ p_s.T + b2
    n_s = k_ss.shape[0]
    ridge = REG * torch.trace(k_ss) / n_s
    a = k_ss + ridge * torch.eye(n_s, dtype=KRR_DTYPE)
    chol = torch.linalg.cholesky(a)
    alpha = torch.cholesky_solve(y_s.to(KRR_DTYPE), chol)
    k_ts = (phi_t @ phi_s.T).to(KRR_DTYPE) + b2
    pred = k_ts @ alpha
    loss = F.cross_entropy(torch.exp(log_temp) * pred, labels_t)
    loss.backward()
    return loss.item(), t_target


def make_problem(n_s, n_t, size, channels, seed):
    """Random normal NHWC support/target images, centred one-hot support labels, integer target
    labels; the support images, support labels and ``log_temp`` require gradients."""
    gen = torch.Generator().manual_seed(seed)
    x_s = torch.randn(n_s, size, size, channels, generator=gen)
    x_t = torch.randn(n_t, size, size, channels, generator=gen)
    y_s = F.one_hot(torch.arange(n_s) % NUM_CLASSES, NUM_CLASSES).float() - 1.0 / NUM_CLASSES
    labels_t = torch.randint(0, NUM_CLASSES, (n_t,), generator=gen)
    log_temp = torch.zeros((), dtype=KRR_DTYPE)
    for p in (x_s, y_s, log_temp):
        p.requires_grad_(True)
    return x_s, y_s, log_temp, x_t, labels_t


# ----------------------------------------------------------------------------- reporting

def median_iqr(times):
    """Median and interquartile range (75th minus 25th percentile, inclusive method)."""
    if len(times) >= 2:
        q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive")
    else:
        q1 = q3 = times[0]
    return statistics.median(times), q3 - q1


def cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def env_params(args):
    return {
        "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "processor": platform.processor(), "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "machine": platform.machine(), "mkldnn": torch.backends.mkldnn.is_available(),
        "n_support": args.n_support, "n_target": args.n_target, "size": args.size,
        "channels": args.channels, "width": args.width, "models": args.models,
        "depth": DEPTH, "chunk": args.chunk, "repeats": args.repeats, "seed": args.seed,
        "dtype": "float32", "krr_dtype": str(KRR_DTYPE).replace("torch.", ""),
        "solve": "cholesky", "reg": REG, "ridge_scale": "trace", "loss": "platt",
    }


def print_table(rows):
    print(f"| {'arrangement':<22} | {'median s':>9} | {'IQR s':>7} | "
          f"{'target fwd s':>12} | {'target fwd %':>12} |")
    print(f"|{'-' * 24}|{'-' * 10}:|{'-' * 8}:|{'-' * 13}:|{'-' * 13}:|")
    for r in rows:
        share = 100.0 * r["target_forward_median_s"] / r["median_s"]
        print(f"| {r['arrangement']:<22} | {r['median_s']:9.3f} | {r['iqr_s']:7.3f} | "
              f"{r['target_forward_median_s']:12.3f} | {share:11.1f}% |")


# ----------------------------------------------------------------------------- entry points

def run_timing(args):
    problem = make_problem(args.n_support, args.n_target, args.size, args.channels, args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    steps = {name: functools.partial(rfad_step, *problem, gen, width=args.width,
                                     models=args.models, chunk=args.chunk if chunked else None,
                                     memory_format=fmt)
             for name, (chunked, fmt) in ARRANGEMENTS.items()}

    for step in steps.values():      # warm-up: one untimed step of each
        step()
    times = {name: [] for name in steps}
    target_times = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            t0 = time.perf_counter()
            _, t_target = step()
            times[name].append(time.perf_counter() - t0)
            target_times[name].append(t_target)

    rows = []
    for name in steps:
        med, iqr = median_iqr(times[name])
        rows.append({"arrangement": name, "median_s": med, "iqr_s": iqr, "times": times[name],
                     "target_forward_median_s": median_iqr(target_times[name])[0],
                     "target_forward_times": target_times[name]})
    print_table(rows)
    best = min(rows, key=lambda r: r["median_s"])
    print(f"\nfastest: {best['arrangement']}; its target forward alone is "
          f"{best['target_forward_median_s']:.3f} s of {best['median_s']:.3f} s "
          f"({100 * best['target_forward_median_s'] / best['median_s']:.0f}%)")
    params = env_params(args)
    print(f"torch {params['torch']}, {params['threads']} threads, {params['cpu_model']}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"benchmark": "rfad_step_torch", "params": params,
                                    "best": best["arrangement"], "rows": rows}, indent=2) + "\n")
        print(f"wrote {path}")


def run_check(args):
    """One step of each arrangement from the same network draw: finite loss and gradients with
    the inputs' shapes, and agreement between the arrangements (float32 features)."""
    results = {}
    for name, (chunked, fmt) in ARRANGEMENTS.items():
        x_s, y_s, log_temp, x_t, labels_t = make_problem(args.n_support, args.n_target,
                                                         args.size, args.channels, args.seed)
        gen = torch.Generator().manual_seed(args.seed + 1)
        loss, _ = rfad_step(x_s, y_s, log_temp, x_t, labels_t, gen, width=args.width,
                            models=args.models, chunk=args.chunk if chunked else None,
                            memory_format=fmt)
        grads = {"x_s": x_s.grad, "y_s": y_s.grad, "log_temp": log_temp.grad}
        assert math.isfinite(loss), f"{name}: loss {loss}"
        for key, p in (("x_s", x_s), ("y_s", y_s), ("log_temp", log_temp)):
            g = grads[key]
            assert g is not None and g.shape == p.shape, f"{name}: grad {key} shape"
            assert torch.isfinite(g).all(), f"{name}: grad {key} not finite"
        print(f"{name:<22} loss {loss:.6f}  |g_x| {grads['x_s'].norm():.4e}  "
              f"|g_y| {grads['y_s'].norm():.4e}  g_log_temp {grads['log_temp'].item():+.4e}  "
              f"shapes {tuple(grads['x_s'].shape)} {tuple(grads['y_s'].shape)} "
              f"{tuple(grads['log_temp'].shape)}")
        results[name] = (loss, grads)
    ref_loss, ref = results["batch-nchw"]
    for name, (loss, grads) in results.items():
        rel = {k: ((grads[k] - ref[k]).norm() / ref[k].norm()).item() for k in ref}
        print(f"{name:<22} vs batch-nchw: |d loss| {abs(loss - ref_loss):.2e}  relative grad "
              + "  ".join(f"{k} {v:.2e}" for k, v in rel.items()))
        assert abs(loss - ref_loss) <= 1e-4 * abs(ref_loss) and max(rel.values()) < 1e-3, name
    print("check passed (chance-level loss is log(10) = 2.3026)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per arrangement")
    ap.add_argument("--width", type=int, default=128, help="conv channels per layer")
    ap.add_argument("--models", type=int, default=8, help="random networks per step (M)")
    ap.add_argument("--n-support", type=int, default=100)
    ap.add_argument("--n-target", type=int, default=1000)
    ap.add_argument("--size", type=int, default=32, help="image height and width")
    ap.add_argument("--channels", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=100, help="targets per chunk when chunked")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="torch.set_num_threads (default: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the results here as JSON")
    ap.add_argument("--check", action="store_true",
                    help="check loss and gradients instead of timing")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    if args.size % (2 ** DEPTH):
        ap.error(f"--size must be a multiple of {2 ** DEPTH}")
    torch.set_num_threads(args.threads)
    if args.check:
        run_check(args)
    else:
        run_timing(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
