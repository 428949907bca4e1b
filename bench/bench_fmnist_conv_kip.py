"""Fashion-MNIST KIP-ConvNet or RFAD under a fixed CPU budget: KRR accuracy against minutes.

Common protocol: ConvNet3 (3 x [Conv3x3 SAME, ReLU, AvgPool2], Flatten, Dense; W_std sqrt(2),
b_std 0.1), float32; pixels standardised with the training mean and std; 10 real images per
class to start, labels learned; class-balanced target batches resampled each step; Adam. The
budget counts the CPU time of the optimisation (all threads; evaluation excluded). Accuracy is
exact ConvNet-NNGP KRR on a fixed random subset of the test set during the run
(``--eval-size``), and on the full test set at the end (``--final-full``). The run goes through
``kernelkip distill`` into ``runs/``.

* ``--method kip`` (default): exact NNGP (or NTK), target batch 50, lr 0.04, ridge
  1e-6 * trace/n, 0.5 * mean MSE.
* ``--method rfad``: random-feature NNGP of 8 random ConvNets of width 128 drawn each step,
  target batch 500, lr 0.01, ridge 5e-3 * trace/n, Platt loss (temperature learned, lr 0.1);
  also scored by the random-feature kernel of 32 networks.

    python bench/bench_fmnist_conv_kip.py [--method kip|rfad] [--minutes 60] [--final-full]
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="CPU-time budget")
    ap.add_argument("--eval-minutes", type=float, default=15.0)
    ap.add_argument("--eval-size", type=int, default=1000)
    ap.add_argument("--method", default="kip", choices=("kip", "rfad"))
    ap.add_argument("--kernel", default="conv-nngp", choices=("conv-nngp", "conv-ntk"))
    ap.add_argument("--target-batch", type=int, default=None, help="default: 50 KIP, 500 RFAD")
    ap.add_argument("--lr", type=float, default=None, help="default: 0.04 KIP, 0.01 RFAD")
    ap.add_argument("--final-full", action="store_true",
                    help="also evaluate the result on the full 10k test set")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--name", default="fmnist_conv_kip",
                    help="results name (bench/results/NAME.json) and run directory suffix")
    args = ap.parse_args()
    rfad = args.method == "rfad"
    if args.target_batch is None:
        args.target_batch = 500 if rfad else 50
    if args.lr is None:
        args.lr = 0.01 if rfad else 0.04
    out = ROOT / "runs" / f"bench-{args.name}-{args.kernel}3-ipc10-{args.minutes:g}min"
    argv = ["distill", "--method", args.method, "--dataset", "fashion-mnist", "--ipc", "10",
            "--kernel", args.kernel, "--depth", "3", "--W-std", str(2 ** 0.5), "--b-std", "0.1",
            "--reg", "5e-3" if rfad else "1e-6",
            "--lr", str(args.lr), "--target-batch", str(args.target_batch),
            "--steps", "100000", "--minutes", str(args.minutes), "--clock", "cpu",
            "--eval-minutes", str(args.eval_minutes), "--eval-every", "0",
            "--eval-size", str(args.eval_size), "--checkpoint-every", "5",
            "--dtype", "float32", "--no-progress", "--out", str(out)]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    t0 = time.perf_counter()
    if cli.main(argv) != 0:
        raise SystemExit("kernelkip distill failed")
    wall = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    curve = [{"step": r["step"], "cpu_min": r.get("cpu_time", 0.0) / 60,
              "wall_min": r["time"] / 60, "test_acc": r["test_acc"],
              **{k: r[k] for k in ("test_acc_rf", "temperature") if k in r}}
             for r in log if "test_acc" in r]
    result = {"method": args.method, "kernel": args.kernel, "ipc": 10,
              "budget_cpu_minutes": args.minutes,
              "target_batch": args.target_batch, "lr": args.lr, "eval_size": args.eval_size,
              "steps": summary["steps"], "curve": curve, "wall_s_total": wall}
    if args.final_full:
        t1 = time.perf_counter()
        if cli.main(["evaluate", str(out), "--no-progress"]) != 0:
            raise SystemExit("kernelkip evaluate failed")
        full = json.loads((out / f"eval-{args.kernel}.json").read_text())
        result["final_full_test_acc"] = full["test_acc"]
        result["final_full_eval_s"] = time.perf_counter() - t1
    print(f"{'step':>6} {'cpu min':>8} {'wall min':>9} {'test acc':>9} {'rf acc':>7}")
    for r in curve:
        print(f"{r['step']:>6} {r['cpu_min']:>8.1f} {r['wall_min']:>9.1f} {r['test_acc']:>9.4f} "
              f"{r.get('test_acc_rf', float('nan')):>7.4f}")
    if "final_full_test_acc" in result:
        print(f"full test set: {result['final_full_test_acc']:.4f}")
    params = {k: result.pop(k) for k in ("method", "kernel", "ipc", "budget_cpu_minutes",
                                         "target_batch", "lr", "eval_size")}
    print("wrote", _harness.write_json(args.name, result, params))
    _harness.write_figure(args.name, lambda: plot.learning_curves(out, x=("steps", "cpu")))


if __name__ == "__main__":
    main()
