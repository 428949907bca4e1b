"""Command line: ``kernelkip distill`` (KIP or RFAD), ``evaluate`` and ``label-solve``.

Argument parsing and wiring only; every computation is a library call. A run directory holds
``config.json``, ``checkpoint.npz``, ``log.jsonl``, ``distilled.npz``, ``support.png`` and
``summary.json``. Running the same ``distill`` command again resumes from the checkpoint. A
run directory belongs to one process at a time and to one run (``kernelkip.io.RunDirectory``).
Every error a user can cause ends in one line on stderr and exit code 2.
"""
import argparse
import json
import math
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from . import __version__, _deps, io, optim
from .arch import ACTIVATIONS, FC, READOUTS, ConvNet
from .data import (DATASET_NAMES, class_balanced_sample, layer_norm, load_dataset,
                   one_hot_centered, standardize, zca)
from .distill import EarlyStopping, TargetSampler, distill
from .evaluate import krr_accuracy
from .features import RandomFeatures
from .objectives import kip, label_solve, rfad

KERNELS = ("fc-ntk", "fc-nngp", "conv-ntk", "conv-nngp")
METHODS = ("kip", "rfad")
# per-method defaults of options left unset (RFAD: Loo et al. 2022's ridge and loss)
_DEFAULTS = {"kip": {"kernel": "fc-ntk", "reg": 1e-6, "lr": 0.04, "loss": "mse",
                     "target_batch": 5000},
             "rfad": {"kernel": "conv-nngp", "reg": 5e-3, "lr": 0.01, "loss": "platt",
                      "target_batch": 500}}
PREPROCESS = ("standardize", "zca", "layernorm", "none")
# options that may change between a run and its resumption
_RESUMABLE = ("steps", "eval_every", "checkpoint_every", "progress", "overwrite", "engine",
              "out", "data_dir", "eval_block", "minutes", "eval_minutes", "clock", "patience")


def _number(kind, low, *, strict=False):
    """An argparse ``type``: a finite ``kind`` >= ``low`` (> ``low`` when ``strict``)."""
    relation = ">" if strict else ">="

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not math.isfinite(value) or value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(f"must be a finite number {relation} {low}, "
                                             f"got {text}")
        return value

    parse.__name__ = f"{kind.__name__} {relation} {low}"
    return parse


_POSITIVE, _NONNEG = _number(float, 0, strict=True), _number(float, 0)
_COUNT, _NATURAL = _number(int, 0), _number(int, 1)


def _parse_kernel(spec):
    family, _, name = spec.partition("-")
    return family, name


def _arch(cfg):
    family, _ = _parse_kernel(cfg["kernel"])
    if family == "fc":
        return FC(cfg["depth"], cfg["W_std"], cfg["b_std"], cfg["activation"])
    if family == "conv":
        return ConvNet(cfg["depth"], cfg["W_std"], cfg["b_std"], cfg.get("readout", "flatten"),
                       cfg.get("extra_conv", False), cfg["activation"])
    raise ValueError(f"unknown kernel {cfg['kernel']!r}; expected one of {KERNELS}")


def _prepare(cfg):
    """Dataset, preprocessed in float, with centred one-hot targets."""
    ds = load_dataset(cfg["dataset"], cfg.get("data_dir"))
    x_train, x_test = ds.x_train, ds.x_test
    if cfg["preprocess"] == "standardize":
        x_train, x_test, _ = standardize(x_train, x_test)
    elif cfg["preprocess"] == "layernorm":
        x_train, x_test = layer_norm(x_train), layer_norm(x_test)
    elif cfg["preprocess"] == "zca":
        x_train, x_test = zca(layer_norm(x_train), layer_norm(x_test),
                              strength=cfg["zca_strength"])
    dtype = np.dtype(cfg["dtype"])
    x_train, x_test = x_train.astype(dtype), x_test.astype(dtype)
    y_train = one_hot_centered(ds.y_train, ds.num_classes, dtype=dtype)
    return ds, x_train, y_train, x_test


def _config(args):
    cfg = {k: v for k, v in vars(args).items() if k not in ("func",)}
    for key, value in _DEFAULTS[cfg.get("method", "kip")].items():
        if cfg.get(key, "absent") is None:
            cfg[key] = value
    if cfg.get("depth") is None:
        cfg["depth"] = 3 if cfg.get("kernel", "").startswith("conv") else 1
    cfg["version"] = __version__
    return cfg


def _unresumable(path):
    """Why the run in ``path`` (same settings) cannot be continued, or None."""
    try:
        if (path / "checkpoint.npz").exists():
            io.load_checkpoint(path / "checkpoint.npz")
        if (path / "log.jsonl").exists():
            io.read_jsonl(path / "log.jsonl", skip_partial=True)
    except ValueError as err:  # FileFormatError: truncated, corrupt, not ours
        return f"cannot be resumed: {err}"
    return None


def _run_directory(cfg):
    """The run directory of ``cfg``, checked (reading only) before any work is done."""
    run = io.RunDirectory(cfg["out"], cfg, ignore=_RESUMABLE, overwrite=cfg["overwrite"],
                          validate=_unresumable if cfg["command"] == "distill" else None)
    run.check()
    return run


def _check_engine(cfg):
    if cfg["engine"] == "cupy" and not _deps.cupy_available():
        raise ValueError("--engine cupy needs CuPy and a CUDA device, and this machine has "
                         "none (pip install kernelkip[gpu]); use --engine numba or numpy")


def _check_batches(cfg, ds):
    """Sizes that can only be checked against the dataset: one image per class at least."""
    c = ds.num_classes
    if cfg["target_batch"] < c:
        raise ValueError(f"--target-batch {cfg['target_batch']} is smaller than the {c} classes "
                         f"of {cfg['dataset']}; class-balanced batches need one image per class "
                         f"at least: pass --target-batch {c} or more")
    if cfg.get("val_size") and cfg["val_size"] < c:
        raise ValueError(f"--val-size {cfg['val_size']} is smaller than the {c} classes of "
                         f"{cfg['dataset']}; the split is class-balanced: pass --val-size {c} "
                         f"or more")


def _support_indices(cfg, ds):
    return class_balanced_sample(ds.y_train, cfg["ipc"], np.random.default_rng(cfg["seed"]),
                                 ds.num_classes)


def _initial_support(cfg, ds, x_train, y_train):
    idx = _support_indices(cfg, ds)
    return x_train[idx].copy(), y_train[idx].copy(), ds.y_train[idx].copy()


def _save_outputs(out, cfg, ds, params, labels, summary):
    io.save_checkpoint(out / "distilled.npz", {"x_support": params["x_support"],
                                               "y_support": params["y_support"],
                                               "labels": labels}, {"config": cfg})
    io.save_image_grid(out / "support.png", params["x_support"], labels=labels)
    io.write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")


def _objective(cfg, arch):
    family, kern = _parse_kernel(cfg["kernel"])
    if cfg["method"] == "kip":
        if cfg["loss"] != "mse":
            raise ValueError(f"--loss {cfg['loss']} is an RFAD option; KIP's loss is mse")
        return kip(arch, kernel=kern, reg=cfg["reg"], engine=cfg["engine"])
    if family != "conv" or kern != "nngp":
        raise ValueError(f"--method rfad estimates the ConvNet NNGP; use --kernel conv-nngp, "
                         f"not {cfg['kernel']}")
    return rfad(arch, width=cfg["width"], models=cfg["models"], loss=cfg["loss"],
                reg=cfg["reg"])


def _split_validation(cfg, ds, x_train, y_train):
    """Hold out ``val_size`` class-balanced training images: never drawn as targets, and
    disjoint from the initial support set (else validation would score images it holds)."""
    labels = ds.y_train
    if not cfg.get("val_size"):
        return x_train, y_train, labels, None
    per_class = cfg["val_size"] // ds.num_classes
    pool = np.setdiff1d(np.arange(len(labels)), _support_indices(cfg, ds))
    counts = np.bincount(labels[pool], minlength=ds.num_classes)
    # every class must keep images for the targets, too
    if per_class >= counts.min():
        raise ValueError(f"--val-size {cfg['val_size']} takes {per_class} images per class, but "
                         f"class {int(counts.argmin())} has only {int(counts.min())} training "
                         f"images outside the support set; pass --val-size "
                         f"{ds.num_classes * (int(counts.min()) - 1)} or less")
    val = pool[class_balanced_sample(labels[pool], per_class,
                                     np.random.default_rng([cfg["seed"], 4]), ds.num_classes)]
    keep = np.setdiff1d(np.arange(len(labels)), val)
    return x_train[keep], y_train[keep], labels[keep], (x_train[val], labels[val])


def cmd_distill(args):
    cfg = _config(args)
    run = _run_directory(cfg)  # refuse a directory in use or holding another run, first
    out = run.path
    _check_engine(cfg)
    if cfg.get("patience") and not cfg.get("val_size"):
        raise ValueError("--patience needs a validation split: pass --val-size")
    arch = _arch(cfg)
    objective = _objective(cfg, arch)
    ds, x_train, y_train, x_test = _prepare(cfg)
    _check_batches(cfg, ds)
    x_s, y_s, labels = _initial_support(cfg, ds, x_train, y_train)
    x_train, y_train, train_labels, val = _split_validation(cfg, ds, x_train, y_train)
    _, kern = _parse_kernel(cfg["kernel"])
    params = {"x_support": x_s, "y_support": y_s}
    lr = {"x_support": cfg["lr"],
          "y_support": cfg["label_lr"] if cfg["label_lr"] is not None else cfg["lr"]}
    learn = ("x_support", "y_support") if cfg["learn_labels"] else ("x_support",)
    if cfg["method"] == "rfad" and cfg["loss"] == "platt":
        params["log_temp"] = np.full(1, np.log(cfg["init_temp"]))
        lr["log_temp"] = cfg["temp_lr"]
        learn += ("log_temp",)

    y_test = ds.y_test
    if cfg.get("eval_size"):  # a fixed random subset of the test set, for runs' curves
        keep = np.random.default_rng([cfg["seed"], 3]).permutation(len(y_test))
        keep = np.sort(keep[:cfg["eval_size"]])
        x_test, y_test = x_test[keep], y_test[keep]
    # RFAD runs are also scored by a random-feature kernel with more networks, fixed seed
    rf_eval = (RandomFeatures(arch, cfg["width"], cfg["eval_models"])
               if cfg["method"] == "rfad" and cfg.get("eval_models") else None)

    def accuracy(params, x, y, which):
        if which == "rf":
            return krr_accuracy(params["x_support"], params["y_support"], x, y, rf_eval,
                                reg=cfg["reg"], block_size=cfg["eval_block"],
                                seed=cfg["seed"] + 12345)
        return krr_accuracy(params["x_support"], params["y_support"], x, y, arch, kernel=kern,
                            reg=cfg["reg"], block_size=cfg["eval_block"], engine=cfg["engine"])

    def evaluate(params):
        rec = {"test_acc": accuracy(params, x_test, y_test, "exact")}
        if rf_eval is not None:
            rec["test_acc_rf"] = accuracy(params, x_test, y_test, "rf")
        if val is not None:
            rec["val_acc"] = accuracy(params, *val, "rf" if rf_eval is not None else "exact")
        return rec

    stopper = (EarlyStopping("val_acc", cfg["patience"], path=out / "best.npz")
               if cfg.get("patience") else None)

    # everything is valid: from here on the directory is this process's, and this run's
    with run:
        t0 = time.perf_counter()
        res = distill(objective, params,
                      TargetSampler(x_train, y_train, train_labels, cfg["target_batch"]),
                      steps=cfg["steps"], optimizer=optim.adam({k: lr[k] for k in learn}),
                      learn=learn, rng=np.random.default_rng([cfg["seed"], 1]),
                      evaluate=evaluate,
                      eval_every=cfg["eval_every"], checkpoint=out / "checkpoint.npz",
                      checkpoint_every=cfg["checkpoint_every"], log=out / "log.jsonl",
                      progress=cfg["progress"], callback=stopper,
                      max_seconds=None if cfg.get("minutes") is None else 60 * cfg["minutes"],
                      eval_every_seconds=None if cfg.get("eval_minutes") is None
                      else 60 * cfg["eval_minutes"], clock=cfg.get("clock", "wall"))
        final = res.params
        evals = [r for r in res.history if "test_acc" in r]
        summary = {"dataset": cfg["dataset"], "method": cfg["method"], "kernel": cfg["kernel"],
                   "ipc": cfg["ipc"], "steps": res.nit, "n_test": int(len(y_test)),
                   "initial_test_acc": evals[0]["test_acc"] if evals else None,
                   "final_test_acc": evals[-1]["test_acc"] if evals else None,
                   "optimisation_seconds": res.elapsed,
                   "optimisation_cpu_seconds": res.history[-1].get("cpu_time") if res.history
                   else None,
                   "wall_seconds_this_call": time.perf_counter() - t0,
                   "resumed_from": res.resumed_from}
        if rf_eval is not None and evals:
            summary["final_test_acc_rf"] = evals[-1].get("test_acc_rf")
        if stopper is not None and stopper.best_params is not None:
            # the distilled set is the best one on the validation split
            final = {k: stopper.best_params.get(k, v) for k, v in res.params.items()}
            best = [r for r in evals if r["step"] == stopper.best_step]
            summary.update(best_step=stopper.best_step, best_val_acc=stopper.best,
                           best_test_acc=best[0]["test_acc"] if best else None,
                           stopped_early=res.nit < cfg["steps"])
        _save_outputs(out, cfg, ds, final, labels, summary)
        print(json.dumps(summary, indent=2))
        return 0


def _read_config(run):
    path = run / "config.json"
    if run.exists() and not run.is_dir():
        raise ValueError(f"{run} is a file, not a run directory")
    if not path.exists():
        raise ValueError(f"{run} is not a run directory (no config.json)")
    try:
        cfg = json.loads(path.read_text())
        if not isinstance(cfg, dict) or "kernel" not in cfg:
            raise ValueError
    except ValueError:
        raise ValueError(f"{path} is empty or not a kernelkip config; rerun the command that "
                         f"made {run}") from None
    return cfg


def _read_support(run):
    """The support set of a run: its distilled set, or else its last checkpoint."""
    for name, prefix in (("distilled.npz", ""), ("checkpoint.npz", "param/")):
        source = run / name
        if source.exists():
            arrays, _ = io.load_checkpoint(source, what="support set")
            missing = [prefix + k for k in ("x_support", "y_support")
                       if prefix + k not in arrays]
            if missing:
                raise ValueError(f"{source} lacks {', '.join(missing)}; it is not a support "
                                 f"set written by kernelkip")
            return source, arrays[prefix + "x_support"], arrays[prefix + "y_support"]
    raise ValueError(f"{run} holds neither distilled.npz nor checkpoint.npz")


def cmd_evaluate(args):
    run = Path(args.run)
    cfg = _read_config(run)
    if args.data_dir is not None:
        cfg["data_dir"] = args.data_dir
    if args.engine is not None:
        cfg["engine"] = args.engine
    _check_engine(dict(cfg, engine=cfg.get("engine", "auto")))
    source, x_s, y_s = _read_support(run)
    kernel_spec = args.kernel or cfg["kernel"]
    cfg_eval = dict(cfg, kernel=kernel_spec)
    arch = _arch(cfg_eval)
    ds, _, _, x_test = _prepare(cfg)
    reg = cfg["reg"] if args.reg is None else args.reg
    t0 = time.perf_counter()
    if args.rf_models:
        # the random-feature kernel of rf_models networks of the run's width, fixed seed
        if _parse_kernel(kernel_spec) != ("conv", "nngp"):
            raise ValueError(f"--rf-models estimates the ConvNet NNGP; the kernel is "
                             f"{kernel_spec}")
        arch = RandomFeatures(arch, cfg.get("width", 128), args.rf_models)
        kernel_spec = f"rf{args.rf_models}"
    acc = krr_accuracy(x_s.astype(x_test.dtype), y_s, x_test, ds.y_test, arch,
                       kernel=_parse_kernel(cfg_eval["kernel"])[1], reg=reg,
                       block_size=args.block_size, engine=cfg.get("engine", "auto"),
                       progress=args.progress, seed=args.seed)
    result = {"run": str(run), "source": source.name, "kernel": kernel_spec, "reg": reg,
              "n_test": int(len(ds.y_test)), "test_acc": acc,
              "seconds": time.perf_counter() - t0}
    print(json.dumps(result, indent=2), flush=True)  # first: a failed write loses nothing
    path = run / f"eval-{kernel_spec}.json"
    try:
        io.write_text_atomic(path, json.dumps(result, indent=2) + "\n")
    except OSError as err:
        raise ValueError(f"cannot write {path} ({err.strerror}); the result is printed "
                         f"above") from None
    return 0


def cmd_label_solve(args):
    cfg = _config(args)
    run = _run_directory(cfg)
    _check_engine(cfg)
    arch = _arch(cfg)
    ds, x_train, y_train, x_test = _prepare(cfg)
    _check_batches(cfg, ds)
    x_s, y_s0, labels = _initial_support(cfg, ds, x_train, y_train)
    x_t, y_t = TargetSampler(x_train, y_train, ds.y_train, cfg["target_batch"])(
        np.random.default_rng([cfg["seed"], 2]))
    _, kern = _parse_kernel(cfg["kernel"])
    y_s = label_solve(x_s, x_t, y_t, arch, kernel=kern, reg=cfg["reg"], engine=cfg["engine"])
    accs = {}
    for name, y in (("real_labels", y_s0), ("label_solve", y_s)):
        accs[name] = krr_accuracy(x_s, y, x_test, ds.y_test, arch, kernel=kern, reg=cfg["reg"],
                                  block_size=cfg["eval_block"], engine=cfg["engine"])
    summary = {"dataset": cfg["dataset"], "kernel": cfg["kernel"], "ipc": cfg["ipc"],
               "test_acc_real_labels": accs["real_labels"],
               "test_acc_label_solve": accs["label_solve"]}
    with run:
        _save_outputs(run.path, cfg, ds, {"x_support": x_s, "y_support": y_s.astype(x_s.dtype)},
                      labels, summary)
    print(json.dumps(summary, indent=2))
    return 0


def cmd_plot(args):
    from . import plot  # matplotlib is imported on first use, only by this command
    try:
        written = plot.write_run_figures(args.runs, args.out, x=args.x,
                                         support=args.support,
                                         max_per_class=args.max_per_class or None,
                                         dpi=args.dpi)
    except ImportError as err:  # matplotlib is an optional dependency
        raise ValueError(str(err)) from None
    print(json.dumps(written, indent=2))
    return 0


def _add_problem_args(p):
    p.add_argument("--dataset", default="digits", choices=DATASET_NAMES,
                   help="dataset name (default: the embedded digits)")
    p.add_argument("--data-dir", default=None,
                   help="directory holding the dataset files (default: search known places)")
    p.add_argument("--ipc", type=_NATURAL, default=10, help="support images per class")
    p.add_argument("--kernel", default=None, choices=KERNELS,
                   help="default: fc-ntk for KIP, conv-nngp for RFAD")
    p.add_argument("--depth", type=_NATURAL, default=None,
                   help="hidden layers of the FC net (default 1), or [Conv, act, AvgPool] "
                        "blocks of the ConvNet (default 3)")
    p.add_argument("--readout", default="flatten", choices=READOUTS,
                   help="ConvNet readout: Flatten or GlobalAvgPool, then Dense")
    p.add_argument("--extra-conv", action="store_true",
                   help="ConvNet: one more [Conv, act] first (the KIP paper's 'ConvNet')")
    p.add_argument("--W-std", dest="W_std", type=_POSITIVE, default=2 ** 0.5)
    p.add_argument("--b-std", dest="b_std", type=_NONNEG, default=0.1)
    p.add_argument("--activation", default="relu",
                   help=f"one of {sorted(ACTIVATIONS)} ('leaky_relu:ALPHA')")
    p.add_argument("--reg", type=_NONNEG, default=None,
                   help="ridge, relative to trace(K_ss)/n (default: 1e-6 for KIP, 5e-3 for RFAD)")
    p.add_argument("--target-batch", type=_NATURAL, default=None,
                   help="class-balanced target batch size, resampled each step (default: 5000 "
                        "for KIP, 500 for RFAD)")
    p.add_argument("--preprocess", default="standardize", choices=PREPROCESS)
    p.add_argument("--zca-strength", type=_NONNEG, default=0.1)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--engine", default="auto", choices=("auto", "numpy", "numba", "cupy"))
    p.add_argument("--seed", type=_COUNT, default=0)
    p.add_argument("--eval-block", type=_NATURAL, default=2000,
                   help="test rows per kernel block")
    p.add_argument("--out", required=True, help="run directory")


def build_parser():
    parser = argparse.ArgumentParser(prog="kernelkip", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"kernelkip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("distill", help="distill a dataset with KIP or RFAD")
    _add_problem_args(p)
    p.add_argument("--method", default="kip", choices=METHODS)
    p.add_argument("--steps", type=_COUNT, default=1000)
    p.add_argument("--lr", type=_POSITIVE, default=None,
                   help="Adam step size for the images (default: 0.04 for KIP, 0.01 for RFAD)")
    p.add_argument("--label-lr", type=_POSITIVE, default=None,
                   help="Adam step size for the labels (default: --lr)")
    p.add_argument("--learn-labels", dest="learn_labels", action="store_true", default=True)
    p.add_argument("--no-learn-labels", dest="learn_labels", action="store_false")
    p.add_argument("--eval-every", type=_COUNT, default=100,
                   help="evaluate every this many steps (0: at the start and the end only)")
    p.add_argument("--minutes", type=_POSITIVE, default=None,
                   help="budget of optimisation time; stops before --steps when spent")
    p.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                   help="what --minutes and --eval-minutes count: wall time, or this "
                        "process's CPU time (all threads)")
    p.add_argument("--eval-minutes", type=_POSITIVE, default=None,
                   help="also evaluate every this many minutes of optimisation")
    p.add_argument("--eval-size", type=_COUNT, default=0,
                   help="evaluate during the run on this many test images (fixed random "
                        "subset; 0: the whole test set)")
    p.add_argument("--checkpoint-every", type=_COUNT, default=50,
                   help="checkpoint every this many steps (0: at the end and on interrupts)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out if it has other settings, was made by "
                        "another command or cannot be resumed (the same settings resume)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True)
    g = p.add_argument_group("RFAD")
    g.add_argument("--width", type=_NATURAL, default=128, help="channels of the random ConvNets")
    g.add_argument("--models", type=_NATURAL, default=8, help="random ConvNets drawn per step")
    g.add_argument("--loss", default=None, choices=("mse", "platt"),
                   help="outer loss (default: platt for RFAD; KIP uses mse)")
    g.add_argument("--init-temp", type=_POSITIVE, default=1.0, help="initial Platt temperature")
    g.add_argument("--temp-lr", type=_POSITIVE, default=0.1,
                   help="Adam step size for the log-temperature")
    g.add_argument("--eval-models", type=_COUNT, default=32,
                   help="networks of the random-feature kernel used for evaluation (0: none)")
    g.add_argument("--val-size", type=_COUNT, default=0,
                   help="hold out this many training images (class-balanced) for validation")
    g.add_argument("--patience", type=_COUNT, default=0,
                   help="stop after this many evaluations without a better validation "
                        "accuracy and keep the best support set (needs --val-size)")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("evaluate", help="KRR test accuracy of a distilled set")
    p.add_argument("run", help="run directory written by 'kernelkip distill'")
    p.add_argument("--kernel", default=None, choices=KERNELS, help="default: the run's kernel")
    p.add_argument("--reg", type=_NONNEG, default=None, help="default: the run's reg")
    p.add_argument("--block-size", type=_NATURAL, default=2000)
    p.add_argument("--engine", default=None, choices=("auto", "numpy", "numba", "cupy"),
                   help="default: the run's engine")
    p.add_argument("--rf-models", type=_COUNT, default=0,
                   help="score with the random-feature kernel of this many ConvNets instead "
                        "of the exact kernel (conv-nngp runs)")
    p.add_argument("--seed", type=_COUNT, default=0, help="seeds the --rf-models networks")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("label-solve", help="Label Solve baseline on real support images")
    _add_problem_args(p)
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out if it has other settings or was made by "
                        "another command")
    p.set_defaults(func=cmd_label_solve)

    p = sub.add_parser("plot", help="figures of runs: curves.png and support-<run>.png "
                                    "(needs matplotlib: pip install kernelkip[plot])")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run directories written by 'kernelkip distill'; their curves share "
                        "the axes")
    p.add_argument("--out", default=None,
                   help="directory for curves.png and support-<run>.png, or a file name for "
                        "the curves (its suffix sets the format; support grids go beside it). "
                        "Default: the run directory when there is one run; required for several")
    p.add_argument("--x", nargs="+", default=["steps", "time"], choices=("steps", "time", "cpu"),
                   help="x axes of the curves, one column each: steps, wall time, CPU time "
                        "(default: steps time)")
    p.add_argument("--no-support", dest="support", action="store_false", default=True,
                   help="only the curves")
    p.add_argument("--max-per-class", type=int, default=20,
                   help="images shown per class in the support grid (0: all)")
    p.add_argument("--dpi", type=float, default=100)
    p.set_defaults(func=cmd_plot)
    return parser


def _os_message(err):
    where = f" {err.filename}" if getattr(err, "filename", None) else ""
    return f"cannot access{where}: {err.strerror or err}"


def main(argv=None):
    """Run one command; every error a user can cause is one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FloatingPointError, pickle.UnpicklingError) as err:
        print(f"error: {err}", file=sys.stderr)
    except OSError as err:  # permissions, a full disk, a path that is not a directory, ...
        print(f"error: {_os_message(err)}", file=sys.stderr)
    except MemoryError:
        print("error: out of memory; lower --eval-block, --target-batch or --ipc",
              file=sys.stderr)
    except KeyboardInterrupt as err:
        print(f"\n{err}", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
