"""Fashion-MNIST KIP-ConvNet under a fixed CPU budget: KRR accuracy against minutes (README).

Protocol: ConvNet3 (3 x [Conv3x3 SAME, ReLU, AvgPool2], Flatten, Dense; W_std sqrt(2), b_std
0.1) exact NNGP, float32; pixels standardised with the training mean and std; 10 real images
per class to start, labels learned; class-balanced target batch of 50 resampled each step;
Adam lr 0.04; ridge 1e-6 * trace/n; 0.5 * mean MSE. The budget counts the CPU time of the
optimisation (all threads; evaluation excluded). Accuracy is exact ConvNet-NNGP KRR on a fixed
random subset of the test set during the run (``--eval-size``), and on the full test set at
the end (``--final-full``). The run goes through ``kernelkip distill`` into ``runs/``.

    python bench/bench_fmnist_conv_kip.py [--minutes 60] [--kernel conv-nngp] [--final-full]
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

import _harness  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=60.0, help="CPU-time budget")
    ap.add_argument("--eval-minutes", type=float, default=15.0)
    ap.add_argument("--eval-size", type=int, default=1000)
    ap.add_argument("--kernel", default="conv-nngp", choices=("conv-nngp", "conv-ntk"))
    ap.add_argument("--target-batch", type=int, default=50)
    ap.add_argument("--lr", type=float, default=0.04)
    ap.add_argument("--final-full", action="store_true",
                    help="also evaluate the result on the full 10k test set")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--name", default="fmnist_conv_kip",
                    help="results name (bench/results/NAME.json) and run directory suffix")
    args = ap.parse_args()
    out = ROOT / "runs" / f"bench-{args.name}-{args.kernel}3-ipc10-{args.minutes:g}min"
    argv = ["distill", "--dataset", "fashion-mnist", "--ipc", "10", "--kernel", args.kernel,
            "--depth", "3", "--W-std", str(2 ** 0.5), "--b-std", "0.1", "--reg", "1e-6",
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
              "wall_min": r["time"] / 60, "test_acc": r["test_acc"]}
             for r in log if "test_acc" in r]
    result = {"kernel": args.kernel, "ipc": 10, "budget_cpu_minutes": args.minutes,
              "target_batch": args.target_batch, "lr": args.lr, "eval_size": args.eval_size,
              "steps": summary["steps"], "curve": curve, "wall_s_total": wall}
    if args.final_full:
        t1 = time.perf_counter()
        if cli.main(["evaluate", str(out), "--no-progress"]) != 0:
            raise SystemExit("kernelkip evaluate failed")
        full = json.loads((out / f"eval-{args.kernel}.json").read_text())
        result["final_full_test_acc"] = full["test_acc"]
        result["final_full_eval_s"] = time.perf_counter() - t1
    print(f"{'step':>6} {'cpu min':>8} {'wall min':>9} {'test acc':>9}")
    for r in curve:
        print(f"{r['step']:>6} {r['cpu_min']:>8.1f} {r['wall_min']:>9.1f} {r['test_acc']:>9.4f}")
    if "final_full_test_acc" in result:
        print(f"full test set: {result['final_full_test_acc']:.4f}")
    params = {k: result.pop(k) for k in ("kernel", "ipc", "budget_cpu_minutes", "target_batch",
                                         "lr", "eval_size")}
    print("wrote", _harness.write_json(args.name, result, params))


if __name__ == "__main__":
    main()
