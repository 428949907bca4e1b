"""Write neural-tangents reference values for the FC kernels to ``tests/data/nt_fc_reference.npz``.

Run with the peer environment (``bench/requirements-peers.txt``)::

    /opt/ntenv/bin/python bench/nt_dump_reference.py [--out PATH]

Everything is float64 (``jax_enable_x64``). kernelkip's tests read the file with NumPy alone, so
they compare against NT without installing it.

Layout: one array per ``"<case>/<name>"`` key, plus ``"index"``, a 0-d string array holding JSON
``{"format": 1, "versions": ..., "cases": {case: params}}``; read it with
``json.loads(str(npz["index"]))``. Each case's params list its array names under ``"arrays"``.

``fc`` cases (architecture ``[Dense(W_std, b_std), act] * depth + [Dense(W_std, b_std)]``, NTK
parameterization), with ``x1`` of shape (4, 5) and ``x2`` of shape (3, 5):

- ``nngp``, ``ntk``: (4, 3) kernels of ``(x1, x2)``; ``nngp_11``, ``ntk_11``: (4, 4) of
  ``(x1, None)``;
- ``cot`` (4, 3): ``ntk_grad_x1``, ``ntk_grad_x2`` are the gradients of ``sum(cot * ntk(x1, x2))``
  and ``nngp_grad_x1``, ``nngp_grad_x2`` those of ``sum(cot * nngp(x1, x2))``;
- ``cot_11`` (4, 4): ``ntk_11_grad_x1`` is the gradient of ``sum(cot_11 * ntk(x1, None))``.

``kip`` cases: ``x_support`` (4, 5), ``y_support`` (4, 3), ``x_target`` (6, 5), ``y_target``
(6, 3); ``loss`` (0-d), ``pred`` (6, 3), ``grad_x_support``, ``grad_y_support`` of the KIP
notebook's loss (``bench/nt_reference.py``).
"""
import argparse
import datetime
import json
import sys
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import nt_reference as ntr  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "data" / "nt_fc_reference.npz"
N1, N2, D = 4, 3, 5
SQRT2 = 2**0.5

# name, depth, W_std, b_std, activation, coincident (x2[0] = x1[0])
FC_CASES = [
    ("linear_d0", 0, 1.3, 0.2, None, False),
    ("relu_d1", 1, SQRT2, 0.1, "relu", False),
    ("relu_d2_nobias", 2, 1.5, 0.0, "relu", False),
    ("relu_d3", 3, SQRT2, 0.1, "relu", False),
    ("leaky_relu_d1", 1, 1.0, 0.3, "leaky_relu:0.1", False),
    ("leaky_relu_d2", 2, 1.2, 0.2, "leaky_relu:0.1", False),
    ("abrelu_d1", 1, 1.0, 0.3, "abrelu:-0.5,1.5", False),
    ("abrelu_d3", 3, 0.9, 0.1, "abrelu:-0.5,1.5", False),
    ("erf_d1", 1, 1.0, 0.5, "erf", False),
    ("erf_d3", 3, 1.3, 0.2, "erf", False),
    ("erf_abc_d2", 2, 1.1, 0.2, "erf:0.8,1.3,0.1", False),
    ("gelu_d1", 1, 1.0, 0.1, "gelu", False),
    ("gelu_d2", 2, SQRT2, 0.05, "gelu", False),
    ("gelu_d3", 3, 1.1, 0.2, "gelu", False),
    ("relu_d2_coincident", 2, SQRT2, 0.1, "relu", True),
    ("erf_d2_coincident", 2, 1.2, 0.1, "erf", True),
    ("gelu_d2_coincident", 2, SQRT2, 0.1, "gelu", True),
]

# name, depth, W_std, b_std, activation, kernel, reg
KIP_CASES = [
    ("kip_relu_d3", 3, SQRT2, 0.1, "relu", "ntk", 1e-3),
    ("kip_relu_d3_reg1e-6", 3, SQRT2, 0.1, "relu", "ntk", 1e-6),
    ("kip_gelu_d2_nngp", 2, 1.2, 0.1, "gelu", "nngp", 1e-2),
]

# ReLU-family kernels are not differentiable where two inputs coincide (the derivative of the
# arc-cosine J0 in cos(theta) is infinite at theta = 0); Erf and Gelu kernels are smooth there.
SMOOTH_AT_COINCIDENCE = {None: True, "erf": True, "gelu": True}


def _act_entry(activation):
    if activation is None:
        return None, []
    name, args = ntr.parse_activation(activation)
    return name, list(args)


def _dir_check(f, x, g, rng, eps=1e-6):
    """Relative error of <g, v> against a central difference of f along a random v."""
    v = rng.standard_normal(x.shape)
    fd = (float(f(x + eps * v)) - float(f(x - eps * v))) / (2 * eps)
    an = float(np.sum(np.asarray(g) * v))
    return abs(fd - an) / max(abs(fd), abs(an), 1e-12)


def fc_case(seed, depth, W_std, b_std, activation, coincident):
    rng = np.random.default_rng(seed)
    kf = ntr.fc_kernel_fn(depth, W_std, b_std, activation or "relu")
    x1 = rng.standard_normal((N1, D))
    x2 = rng.standard_normal((N2, D))
    if coincident:
        x2[0] = x1[0]
    cot = rng.standard_normal((N1, N2))
    cot_11 = rng.standard_normal((N1, N1))
    k12 = kf(x1, x2, ("nngp", "ntk"))
    k11 = kf(x1, None, ("nngp", "ntk"))

    def s12(get):
        return lambda a, b: jnp.sum(cot * kf(a, b, get))

    ntk_g1, ntk_g2 = jax.grad(s12("ntk"), argnums=(0, 1))(x1, x2)
    nngp_g1, nngp_g2 = jax.grad(s12("nngp"), argnums=(0, 1))(x1, x2)

    def s11(a):
        return jnp.sum(cot_11 * kf(a, None, "ntk"))

    ntk11_g1 = jax.grad(s11)(x1)
    arrays = {"x1": x1, "x2": x2, "cot": cot, "cot_11": cot_11,
              "nngp": k12.nngp, "ntk": k12.ntk, "nngp_11": k11.nngp, "ntk_11": k11.ntk,
              "ntk_grad_x1": ntk_g1, "ntk_grad_x2": ntk_g2,
              "nngp_grad_x1": nngp_g1, "nngp_grad_x2": nngp_g2, "ntk_11_grad_x1": ntk11_g1}
    checks = {
        "ntk_grad_x1": _dir_check(lambda a: s12("ntk")(a, x2), x1, ntk_g1, rng),
        "ntk_grad_x2": _dir_check(lambda b: s12("ntk")(x1, b), x2, ntk_g2, rng),
        "nngp_grad_x1": _dir_check(lambda a: s12("nngp")(a, x2), x1, nngp_g1, rng),
        "ntk_11_grad_x1": _dir_check(s11, x1, ntk11_g1, rng),
    }
    return arrays, checks


def kip_case(seed, depth, W_std, b_std, activation, kernel, reg, n_s=4, n_t=6, k=3):
    rng = np.random.default_rng(seed)
    x_s = rng.standard_normal((n_s, D))
    x_t = rng.standard_normal((n_t, D))
    y_s = np.eye(k)[np.arange(n_s) % k] - 1.0 / k
    y_t = np.eye(k)[rng.integers(0, k, n_t)] - 1.0 / k
    kf = ntr.fc_kernel_fn(depth, W_std, b_std, activation)
    loss_fn = ntr.kip_loss_fn(kf, kernel=kernel, reg=reg)
    loss, (g_x, g_y) = jax.value_and_grad(loss_fn, argnums=(0, 1))(x_s, y_s, x_t, y_t)
    k_ss = kf(x_s, x_s, kernel)
    k_ss_reg = k_ss + reg * jnp.trace(k_ss) / n_s * jnp.eye(n_s)
    pred = kf(x_t, x_s, kernel) @ jnp.linalg.solve(k_ss_reg, y_s)
    arrays = {"x_support": x_s, "y_support": y_s, "x_target": x_t, "y_target": y_t,
              "loss": np.asarray(loss), "pred": pred, "grad_x_support": g_x,
              "grad_y_support": g_y}
    checks = {
        "grad_x_support": _dir_check(lambda a: loss_fn(a, y_s, x_t, y_t), x_s, g_x, rng),
        "grad_y_support": _dir_check(lambda b: loss_fn(x_s, b, x_t, y_t), y_s, g_y, rng),
    }
    return arrays, checks


def build():
    arrays, cases, worst = {}, {}, {}
    for seed, (name, depth, W_std, b_std, activation, coincident) in enumerate(FC_CASES):
        arrs, checks = fc_case(seed, depth, W_std, b_std, activation, coincident)
        act, act_args = _act_entry(activation)
        smooth = not coincident or SMOOTH_AT_COINCIDENCE.get(act, False)
        cases[name] = {"kind": "fc", "depth": depth, "W_std": W_std, "b_std": b_std,
                       "activation": act, "activation_args": act_args,
                       "parameterization": "ntk", "seed": seed, "coincident": coincident,
                       "grads_well_defined": smooth, "fd_check_rel_err": checks,
                       "arrays": sorted(arrs)}
        if smooth:
            worst[name] = max(checks.values())
        arrays.update({f"{name}/{k}": np.asarray(v, dtype=np.float64) for k, v in arrs.items()})
    for seed, (name, depth, W_std, b_std, activation, kernel, reg) in enumerate(KIP_CASES, 100):
        arrs, checks = kip_case(seed, depth, W_std, b_std, activation, kernel, reg)
        act, act_args = _act_entry(activation)
        cases[name] = {"kind": "kip", "depth": depth, "W_std": W_std, "b_std": b_std,
                       "activation": act, "activation_args": act_args,
                       "parameterization": "ntk", "seed": seed, "kernel": kernel, "reg": reg,
                       "ridge_scale": "trace", "reduction": "mean",
                       "fd_check_rel_err": checks, "arrays": sorted(arrs)}
        worst[name] = max(checks.values())
        arrays.update({f"{name}/{k}": np.asarray(v, dtype=np.float64) for k, v in arrs.items()})
    return arrays, cases, worst


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    from importlib.metadata import version

    arrays, cases, worst = build()
    bad = {k: v for k, v in worst.items() if v > 1e-6}
    if bad:
        raise SystemExit(f"finite-difference check failed (rel err > 1e-6): {bad}")
    index = {
        "format": 1,
        "generated_by": "bench/nt_dump_reference.py",
        "date": datetime.date.today().isoformat(),
        "versions": {d: version(d) for d in ("neural-tangents", "jax", "jaxlib", "numpy")},
        "dtype": "float64",
        "key_format": "<case>/<array>",
        "conventions": {
            "architecture": "[Dense(W_std, b_std), act] * depth + [Dense(W_std, b_std)], NTK "
                            "parameterization; input layer nngp = x1 @ x2.T / d",
            "activation_args": "leaky_relu: [alpha]; abrelu: [a, b] for a*min(x,0) + b*max(x,0);"
                               " erf: [a, b, c] for a*erf(b*x) + c; relu, gelu: []",
            "gelu": "exact (erf-based) GELU; NT's approximate flag only affects finite nets",
            "x2_none": "kernel_fn(x1, None) is bit-identical to kernel_fn(x1, x1)",
            "kip_loss": "0.5 * mean((K_ts @ solve(K_ss + reg * trace(K_ss) / n_s * I, y_s) - "
                        "y_t) ** 2), K_ss = kernel_fn(x_s, x_s); the trace is differentiated",
            "coincident": "x2[0] == x1[0]; for ReLU-family activations the kernel gradient is "
                          "undefined there and NT's value is its own convention (its custom "
                          "sqrt/arctan2 JVPs give zero derivative to the angle at theta = 0)",
        },
        "cases": cases,
    }
    arrays["index"] = np.array(json.dumps(index, sort_keys=True))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    size_kb = args.out.stat().st_size / 1024
    print(f"wrote {args.out} ({size_kb:.1f} KB, {len(cases)} cases, {len(arrays)} arrays); "
          f"worst finite-difference rel err {max(worst.values()):.2e}")


if __name__ == "__main__":
    main()
