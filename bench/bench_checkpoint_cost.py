"""Checkpoint cost against the number of steps done: ``kernelkip distill`` on the digits with a
checkpoint after every step, against the same run checkpointing only at the end.

    python bench/bench_checkpoint_cost.py [--steps 2000] [--repeats 3]

Each configuration runs in a fresh process (round-robin, ``--repeats`` times); the table gives
the median wall time of the whole command and the ratio to the run without checkpoints.
``--tree DIR`` times another checkout of kernelkip in the same rounds (a peer measured now,
not a figure carried over).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import print_table, write_json  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SITE = [p for p in sys.path if p.endswith("site-packages")]


def run_once(tree, steps, every):
    out = tempfile.mkdtemp(prefix="ckpt-bench-")
    argv = [sys.executable, "-S", "-m", "kernelkip", "distill", "--dataset", "digits", "--ipc", "2",
            "--target-batch", "200", "--steps", str(steps), "--eval-every", "0",
            "--checkpoint-every", str(every), "--no-progress", "--out", out]
    # -S: no site hooks, so an editable install of another checkout cannot shadow ``tree``
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), *SITE]))
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True, cwd=out)
    seconds = time.perf_counter() - t0
    size = os.path.getsize(Path(out) / "checkpoint.npz")
    shutil.rmtree(out)
    return seconds, size


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tree", action="append", default=[],
                   help="another kernelkip checkout to time beside this one (NAME=DIR)")
    args = p.parse_args()
    trees = {"this": REPO}
    trees.update(dict(t.split("=", 1) for t in args.tree))
    configs = [(name, every) for name in trees for every in (0, 1)]
    times = {c: [] for c in configs}
    sizes = {}
    for _ in range(args.repeats):
        for name, every in configs:
            seconds, size = run_once(trees[name], args.steps, every)
            times[(name, every)].append(seconds)
            sizes[(name, every)] = size
    rows = []
    for name, every in configs:
        med = statistics.median(times[(name, every)])
        base = statistics.median(times[(name, 0)])
        rows.append({"code": name, "checkpoint": "every step" if every else "at the end",
                     "median_s": med, "ratio": med / base, "times": times[(name, every)],
                     "checkpoint_kb": sizes[(name, every)] / 1024})
    print_table(rows, ["code", "checkpoint", ("median_s", f"{args.steps} steps, median s"),
                       ("ratio", "vs at the end"), ("checkpoint_kb", "final checkpoint KB")])
    write_json("checkpoint_cost", rows, {"steps": args.steps, "repeats": args.repeats,
                                         "trees": {k: str(v) for k, v in trees.items()}})


if __name__ == "__main__":
    main()
