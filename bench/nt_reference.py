"""neural-tangents equivalents of kernelkip architectures: oracle values and timing anchors.

Importing this module needs ``jax`` and ``neural_tangents`` (pinned in
``bench/requirements-peers.txt``); kernelkip never imports it. Run as a script to time NT's KIP
step::

    /opt/ntenv/bin/python bench/nt_reference.py                 # (100, 1000, 784), (500, 5000, 784)
    /opt/ntenv/bin/python bench/nt_reference.py --quick --x64

Conventions, matching kernelkip:

- ``fc_kernel_fn(depth, ...)`` is ``[Dense, act] * depth + [Dense]`` in the NTK
  parameterization. The width given to ``stax.Dense`` (512) only affects NT's finite network;
  the kernels are infinite-width.
- The KIP loss is the KIP notebook's: ``0.5 * mean((K_ts @ solve(K_ss + reg * tr(K_ss) / n_s * I,
  y_s) - y_t) ** 2)``, solved with ``assume_a="pos"`` (the notebook's ``sym_pos=True``), with
  ``K_ss = kernel_fn(x_s, x_s)``. The ridge's trace is differentiated.
"""
import argparse
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import jax.scipy as jsp
import numpy as np
from neural_tangents import stax

__all__ = ["WIDTH", "ACTIVATIONS", "parse_activation", "activation_layer", "fc_kernel_fn",
           "kip_loss_fn", "nt_kip_loss_and_grad", "time_nt_kip_step"]

WIDTH = 512

# name -> (NT layer factory, default arguments)
ACTIVATIONS = {
    "relu": (lambda: stax.Relu(), ()),
    "leaky_relu": (lambda alpha: stax.LeakyRelu(alpha), (0.01,)),
    "abrelu": (lambda a, b: stax.ABRelu(a, b), (0.0, 1.0)),
    "erf": (lambda a=1.0, b=1.0, c=0.0: stax.Erf(a, b, c), (1.0, 1.0, 0.0)),
    "gelu": (lambda: stax.Gelu(), ()),
}


def parse_activation(activation):
    """``(name, args)`` from ``"relu"``, ``"leaky_relu:0.1"``, ``"abrelu:-0.5,1.5"``,
    ``("abrelu", -0.5, 1.5)`` or ``("erf", a, b, c)``; missing arguments take their defaults."""
    if isinstance(activation, str):
        name, _, arg = activation.partition(":")
        args = tuple(float(a) for a in arg.split(",")) if arg else ()
    else:
        name, *args = activation
        args = tuple(float(a) for a in args)
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; expected one of "
                         f"{sorted(ACTIVATIONS)}")
    defaults = ACTIVATIONS[name][1]
    if len(args) > len(defaults):
        raise ValueError(f"{name} takes at most {len(defaults)} arguments, got {args}")
    return name, args + tuple(defaults[len(args):])


def activation_layer(activation):
    """The NT ``stax`` layer for an activation spec (see :func:`parse_activation`)."""
    name, args = parse_activation(activation)
    return ACTIVATIONS[name][0](*args)


def fc_kernel_fn(depth, W_std=2**0.5, b_std=0.1, activation="relu"):
    """NT's ``kernel_fn`` for ``[Dense(W_std, b_std), act] * depth + [Dense(W_std, b_std)]``.

    ``kernel_fn(x1, x2=None, get=("nngp", "ntk"))``, not jitted.
    """
    dense = functools.partial(stax.Dense, WIDTH, W_std=W_std, b_std=b_std,
                              parameterization="ntk")
    layers = []
    for _ in range(depth):
        layers += [dense(), activation_layer(activation)]
    layers.append(stax.Dense(1, W_std=W_std, b_std=b_std, parameterization="ntk"))
    return stax.serial(*layers)[2]


def convnet_kernel_fn(depth=3, W_std=2**0.5, b_std=0.1, readout="flatten"):
    """NT's ``kernel_fn`` for ``[Conv3x3 SAME, Relu, AvgPool2] * depth``, Flatten (or
    GlobalAvgPool), Dense: kernelkip's ``kk.ConvNet(depth, W_std, b_std, readout)``."""
    layers = []
    for _ in range(depth):
        layers += [stax.Conv(WIDTH, (3, 3), padding="SAME", W_std=W_std, b_std=b_std,
                             parameterization="ntk"),
                   stax.Relu(), stax.AvgPool((2, 2), strides=(2, 2), padding="VALID")]
    layers += [stax.Flatten() if readout == "flatten" else stax.GlobalAvgPool(),
               stax.Dense(1, W_std=W_std, b_std=b_std, parameterization="ntk")]
    return stax.serial(*layers)[2]


def conv_kernel_block(x1, x2, readout="flatten", *, get="ntk", chunk=10):
    """One ConvNet3 kernel block by NT, ``x2`` hand-chunked under one jit (NT's best
    arrangement on a CPU here; ``nt.batch`` is slower). Returns ``(block, seconds)``; the
    jit compilation (a call on the first chunk) is not timed."""
    import time

    kfn = jax.jit(convnet_kernel_fn(readout=readout), static_argnames="get")
    x1 = jnp.asarray(x1)
    jax.block_until_ready(kfn(x1, jnp.asarray(x2[:chunk]), get=get))
    t0 = time.perf_counter()
    parts = [np.asarray(kfn(x1, jnp.asarray(x2[i:i + chunk]), get=get))
             for i in range(0, len(x2), chunk)]
    return np.concatenate(parts, axis=1), time.perf_counter() - t0


def kip_loss_fn(kernel_fn, *, kernel="ntk", reg=1e-6):
    """``loss(x_s, y_s, x_t, y_t)``: the KIP notebook's loss for an NT ``kernel_fn``."""
    def loss(x_s, y_s, x_t, y_t):
        k_ss = kernel_fn(x_s, x_s, kernel)
        k_ts = kernel_fn(x_t, x_s, kernel)
        n_s = k_ss.shape[0]
        k_ss_reg = k_ss + jnp.abs(reg) * jnp.trace(k_ss) / n_s * jnp.eye(n_s, dtype=k_ss.dtype)
        pred = k_ts @ jsp.linalg.solve(k_ss_reg, y_s, assume_a="pos")
        return 0.5 * jnp.mean((pred - y_t) ** 2)
    return loss


def nt_kip_loss_and_grad(depth, W_std=2**0.5, b_std=0.1, activation="relu", *, kernel="ntk",
                         reg=1e-6):
    """``jit(value_and_grad(loss, argnums=(0, 1)))``: ``f(x_s, y_s, x_t, y_t) -> (loss, (g_x,
    g_y))`` for the FC architecture of :func:`fc_kernel_fn`."""
    loss = kip_loss_fn(fc_kernel_fn(depth, W_std, b_std, activation), kernel=kernel, reg=reg)
    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def _kip_problem(n_s, n_t, d, k, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x_s = rng.standard_normal((n_s, d)).astype(dtype)
    x_t = rng.standard_normal((n_t, d)).astype(dtype)
    y_s = (np.eye(k)[np.arange(n_s) % k] - 1.0 / k).astype(dtype)
    y_t = (np.eye(k)[rng.integers(0, k, n_t)] - 1.0 / k).astype(dtype)
    return tuple(jnp.asarray(a) for a in (x_s, y_s, x_t, y_t))


def time_nt_kip_step(n_s, n_t, d=784, *, k=10, depth=3, repeats=7, dtype="float32"):
    """Median/IQR of NT's FC KIP step (loss + grads w.r.t. support x and y) after jit warm-up."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _harness

    step = nt_kip_loss_and_grad(depth)
    args = _kip_problem(n_s, n_t, d, k, dtype)

    def run():
        jax.block_until_ready(step(*args))

    res = _harness.measure(run, repeats=repeats, warmup=2)
    loss, (g_x, g_y) = step(*args)
    return {"n_s": n_s, "n_t": n_t, "d": d, "k": k, "depth": depth, "dtype": dtype,
            "loss": float(loss), "median_ms": 1e3 * res["median_s"], "iqr_ms": 1e3 * res["iqr_s"],
            "min_ms": 1e3 * res["min_s"], "repeats": repeats, "g_x_dtype": str(g_x.dtype),
            "times_s": res["times"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="only the small case, 5 repeats")
    p.add_argument("--x64", action="store_true", help="also time float64")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _harness

    sizes = [(100, 1000, 784)] if args.quick else [(100, 1000, 784), (500, 5000, 784)]
    dtypes = ["float32"]
    if args.x64:
        jax.config.update("jax_enable_x64", True)
        dtypes.append("float64")
    rows = [time_nt_kip_step(n_s, n_t, d, repeats=5 if args.quick else args.repeats, dtype=dt)
            for dt in dtypes for n_s, n_t, d in sizes]
    _harness.print_table(rows, ["n_s", "n_t", "d", "dtype", ("median_ms", "NT median (ms)"),
                                ("iqr_ms", "IQR (ms)"), ("min_ms", "min (ms)"), "repeats"])
    path = _harness.write_json("nt_fc_kip_step", rows,
                               {"depth": 3, "W_std": 2**0.5, "b_std": 0.1, "activation": "relu",
                                "kernel": "ntk", "reg": 1e-6, "k": 10,
                                "jax_backend": jax.default_backend()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
