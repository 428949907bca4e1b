"""Fashion-MNIST KIP with a depth-1 FC NTK: KRR test accuracy and wall time (README table).

Protocol: pixels standardised with the training mean and std; support = class-balanced real
samples; class-balanced target batch of 5000 resampled each step; Adam lr 0.04; ridge
1e-6 * trace/n; 0.5 * mean MSE; labels one-hot - 1/C, learned; 1000 steps; W_std sqrt(2),
b_std 0.1. Each run goes through the ``kernelkip distill`` command into ``runs/bench-...``.

    python bench/bench_fmnist_fc_kip.py [--ipc 1 10 50] [--dtype float32] [--steps 1000]
"""
import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))

from kernelkip import cli  # noqa: E402 -- first, so its thread-pool defaults apply
from kernelkip import plot  # noqa: E402 -- matplotlib is imported only when a figure is drawn

import _harness  # noqa: E402


def run(ipc, dtype, steps, data_dir=None):
    out = ROOT / "runs" / f"bench-fmnist-fc1-ipc{ipc}-{dtype}-{steps}"
    argv = ["distill", "--dataset", "fashion-mnist", "--ipc", str(ipc), "--kernel", "fc-ntk",
            "--depth", "1", "--W-std", str(2 ** 0.5), "--b-std", "0.1", "--reg", "1e-6",
            "--lr", "0.04", "--target-batch", "5000", "--steps", str(steps),
            "--eval-every", "100", "--dtype", dtype, "--no-progress", "--overwrite",
            "--out", str(out)]
    if data_dir:
        argv += ["--data-dir", data_dir]
    for name in ("checkpoint.npz", "log.jsonl"):  # always a fresh run
        (out / name).unlink(missing_ok=True)
    t0 = time.perf_counter()
    if cli.main(argv) != 0:
        raise SystemExit(f"kernelkip distill failed for ipc={ipc}")
    wall = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    curve = [(r["step"], r["test_acc"]) for r in log if "test_acc" in r]
    return {"ipc": ipc, "dtype": dtype, "steps": steps,
            "initial_test_acc": summary["initial_test_acc"],
            "final_test_acc": summary["final_test_acc"],
            "best_test_acc": max(a for _, a in curve),
            "optimisation_s": summary["optimisation_seconds"], "wall_s": wall,
            "curve": curve, "run_dir": str(out)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args(argv)
    rows = [run(ipc, args.dtype, args.steps, args.data_dir) for ipc in args.ipc]
    _harness.print_table(rows, ["ipc", "dtype", "steps", "initial_test_acc", "final_test_acc",
                                "best_test_acc", "optimisation_s", "wall_s"])
    _harness.write_json(f"fmnist_fc_kip_{args.dtype}", rows, vars(args))
    _harness.write_figure(f"fmnist_fc_kip_{args.dtype}", lambda: plot.learning_curves(
        [r["run_dir"] for r in rows], names=[f"{r['ipc']} per class" for r in rows]))


if __name__ == "__main__":
    main()
