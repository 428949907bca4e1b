"""A run directory never loses or mixes a result, and every mistake a user can make with files
or numbers ends in one line and exit code 2 (not a traceback, not a silent wrong answer)."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import kernelkip as kk
from kernelkip import cli, io

REPO = Path(__file__).resolve().parents[1]
BASE = ["--dataset", "digits", "--ipc", "2", "--target-batch", "200"]


def _distill(out, *extra, steps=6):
    return cli.main(["distill", *BASE, "--steps", str(steps), "--lr", "0.01", "--eval-every",
                     "3", "--no-progress", "--out", str(out), *extra])


def _error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err


def _python(code, **kw):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


# ----------------------------------------------------------------------------- data loss

def test_label_solve_refuses_a_distill_run_and_overwrite_replaces_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert _distill(out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    argv = ["label-solve", *BASE, "--out", str(out)]
    assert cli.main(argv) == 2
    assert "'distill' run" in _error(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    # the distill command still resumes its own run
    assert _distill(out, steps=8) == 0
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == 6
    # --overwrite replaces it: nothing of the distill run is left
    assert cli.main(argv + ["--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["command"] == "label-solve"
    assert not (out / "checkpoint.npz").exists() and not (out / "log.jsonl").exists()


def test_overwrite_removes_every_file_of_the_old_run_and_nothing_else(tmp_path, capsys):
    out = tmp_path / "run"
    assert _distill(out, "--val-size", "100", "--patience", "5") == 0
    assert cli.main(["evaluate", str(out), "--no-progress"]) == 0
    (out / "notes.txt").write_text("mine")
    assert (out / "best.npz").exists() and list(out.glob("eval-*.json"))
    assert _distill(out, "--reg", "1e-4", "--overwrite") == 0
    names = {p.name for p in out.iterdir()}
    assert "best.npz" not in names and not any(n.startswith("eval-") for n in names)
    assert "notes.txt" in names  # not a run file: kept
    log = io.read_jsonl(out / "log.jsonl")
    assert [r["step"] for r in log] == list(range(7))


def test_a_failed_start_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert _distill(out, "--ipc", "1000") == 2
    assert "ipc 1000" in _error(capsys)
    assert not out.exists()
    out.mkdir()
    assert _distill(out, "--ipc", "1000") == 2
    assert list(out.iterdir()) == []
    assert _distill(out) == 0  # the corrected command is not refused


def test_a_directory_in_use_is_refused_naming_its_holder(tmp_path, capsys):
    out = tmp_path / "run"
    holder = _python(f"""
        from kernelkip import io
        import sys, time
        with io.RunDirectory({str(out)!r}, {{"command": "distill"}}):
            print("locked", flush=True)
            time.sleep(60)
    """)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert _distill(out, "--overwrite") == 2
        err = _error(capsys)
        assert f"in use by pid {holder.pid}" in err and "kernelkip distill" in err
    finally:
        holder.kill()
        holder.wait()
    # killed with SIGKILL: its lock went with it, and the stale .lock file does not block
    assert (out / ".lock").exists()
    assert _distill(out, "--overwrite") == 0


def test_two_runs_started_together_on_one_directory(tmp_path):
    out = tmp_path / "run"
    argv = ["-m", "kernelkip", "distill", *BASE, "--steps", "40", "--eval-every", "10",
            "--no-progress", "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, *argv, *extra], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for extra in ([], ["--overwrite"])]
    results = [(p.wait(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    codes = sorted(code for code, _ in results)
    # either one was refused (they overlapped) or the second resumed the finished first
    assert codes in ([0, 0], [0, 2]), results
    if codes == [0, 2]:
        assert any("in use by pid" in err for _, err in results)
    log = io.read_jsonl(out / "log.jsonl")
    assert [r["step"] for r in log] == list(range(41))


_KILLED_RUN = """
    import os, signal, sys
    import numpy as np
    import kernelkip as kk
    from kernelkip.data import load_digits, one_hot_centered
    ds = load_digits()
    x = ds.x_train.reshape(len(ds.x_train), -1) / 16.0
    y = one_hot_centered(ds.y_train, 10)
    out, how, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    params0 = {"x_support": x[:20].copy(), "y_support": y[:20].copy()}

    def evaluate(params):
        if how == "term-in-eval" and evaluate.calls == at:
            os.kill(os.getpid(), signal.SIGTERM)
        evaluate.calls += 1
        return {"acc": float(np.abs(params["x_support"]).sum())}
    evaluate.calls = 0

    def callback(step, params, record):
        if how == "kill" and step == at:
            os.kill(os.getpid(), signal.SIGKILL)

    try:
        kk.distill(kk.objectives.kip(kk.FC(1)), params0, kk.TargetSampler(x, y, ds.y_train, 100),
                   steps=20, rng=np.random.default_rng(1), evaluate=evaluate, eval_every=2,
                   checkpoint=out + "/ckpt.npz", checkpoint_every=5, log=out + "/log.jsonl",
                   progress=False, callback=callback)
    except KeyboardInterrupt as err:
        print(err)
        sys.exit(130)
"""


def _killed_run(out, how, at):
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(_KILLED_RUN), str(out), how,
                        str(at)], env=dict(os.environ, PYTHONPATH=str(REPO)),
                       capture_output=True, text=True, timeout=300)
    return p.returncode


@pytest.mark.parametrize("how, at, code", [("kill", 13, -signal.SIGKILL),
                                           ("term-in-eval", 5, 130)])
def test_the_log_is_made_consistent_with_the_checkpoint_on_resume(tmp_path, how, at, code):
    """kill -9 after step 13 (checkpoint at 10), or SIGTERM during the evaluation of step 10
    (the 6th evaluation): the resumed log has exactly one record per step, the same records as
    an uninterrupted run."""
    ref, run = tmp_path / "ref", tmp_path / "run"
    ref.mkdir(), run.mkdir()
    assert _killed_run(ref, "none", 0) == 0
    assert _killed_run(run, how, at) == code
    steps = [r["step"] for r in io.read_jsonl(run / "log.jsonl")]
    _, meta = io.load_checkpoint(run / "ckpt.npz")
    assert "history" not in meta
    if how == "kill":
        assert meta["step"] == 10
        assert steps == list(range(14))  # steps 11..13 are past the checkpoint
    else:
        # step 10 was not committed: the interrupt's checkpoint is at 9, the log's last record
        assert meta["step"] == 9 and steps == list(range(10))
    assert _killed_run(run, "none", 0) == 0
    drop = ("time", "cpu_time")
    strip = [{k: v for k, v in r.items() if k not in drop}
             for r in io.read_jsonl(run / "log.jsonl")]
    assert strip == [{k: v for k, v in r.items() if k not in drop}
                     for r in io.read_jsonl(ref / "log.jsonl")]


def test_checkpoint_cost_does_not_grow_with_the_steps_done(tmp_path):
    ckpt, log = tmp_path / "c.npz", tmp_path / "log.jsonl"
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(40, 5)), np.arange(40) % 2
    y = np.eye(2)[labels] - 0.5
    sizes = []
    for steps in (5, 200):
        kk.distill(kk.objectives.kip(kk.FC(1)), {"x_support": x[:4], "y_support": y[:4]},
                   kk.TargetSampler(x, y, labels, 20), steps=steps, progress=False,
                   checkpoint=ckpt, checkpoint_every=1, log=log)
        sizes.append(os.path.getsize(ckpt))
    assert abs(sizes[1] - sizes[0]) < 64, sizes  # a few digits of the step count, no history
    assert len(io.read_jsonl(log)) == 200


def test_early_stopping_state_survives_a_resume(tmp_path):
    """The best set and the patience count come back from the checkpoint: an interrupted run
    stops at the same step and keeps the same best set as an uninterrupted one."""
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(60, 5)), np.arange(60) % 2
    y = np.eye(2)[labels] - 0.5
    # best at step 6; steps 7, 8, 9 are worse, so patience 3 stops after step 9
    scores = iter([0.5, 0.6, 0.55, 0.7, 0.65, 0.6, 0.8, 0.7, 0.6, 0.5] + [0.9] * 30)
    table = {}

    def evaluate(params):  # a score per step, the same in both runs
        key = float(params["x_support"].sum())
        table.setdefault(key, next(scores))
        return {"val_acc": table[key]}

    def run(tag, steps):
        stop = kk.EarlyStopping("val_acc", patience=3, path=tmp_path / f"{tag}-best.npz")
        res = kk.distill(kk.objectives.kip(kk.FC(1)), {"x_support": x[:4], "y_support": y[:4]},
                         kk.TargetSampler(x, y, labels, 20), steps=steps, progress=False,
                         rng=np.random.default_rng(3), evaluate=evaluate, eval_every=1,
                         checkpoint=tmp_path / f"{tag}.npz", log=tmp_path / f"{tag}.jsonl",
                         callback=stop)
        return res, stop

    full, stop_full = run("full", 30)
    assert full.nit == 9 and stop_full.best_step == 6
    run("cut", 8)                     # stopped by the step budget after step 8, checkpointed
    cut, stop_cut = run("cut", 30)    # resumed: two bad evaluations already count
    assert cut.resumed_from == 8 and cut.nit == 9
    assert stop_cut.best_step == 6 and stop_cut.bad == stop_full.bad == 3
    np.testing.assert_array_equal(stop_cut.best_params["x_support"],
                                  stop_full.best_params["x_support"])


# ----------------------------------------------------------------------------- library errors

def test_distill_refuses_integer_parameters_and_fractional_counts():
    rng = np.random.default_rng(0)
    x, labels = rng.normal(size=(40, 5)), np.arange(40) % 2
    y = np.eye(2)[labels] - 0.5
    args = (kk.objectives.kip(kk.FC(1)),)
    sampler = kk.TargetSampler(x, y, labels, 20)
    with pytest.raises(ValueError, match="dtype int64.*float32 or float64"):
        kk.distill(*args, {"x_support": np.ones((4, 5), dtype=np.int64), "y_support": y[:4]},
                   sampler, steps=2, progress=False)
    good = {"x_support": x[:4], "y_support": y[:4]}
    for name, value in (("steps", 2.7), ("steps", True), ("steps", -1)):
        with pytest.raises(ValueError, match=f"{name} must be a whole number"):
            kk.distill(*args, good, sampler, steps=value, progress=False)
    for kw in ({"eval_every": -1}, {"checkpoint_every": 1.5}):
        with pytest.raises(ValueError, match="whole number"):
            kk.distill(*args, good, sampler, steps=2, progress=False, **kw)
    for kw in ({"max_seconds": -1.0}, {"eval_every_seconds": float("nan")}):
        with pytest.raises(ValueError, match="positive number of seconds"):
            kk.distill(*args, good, sampler, steps=2, progress=False, **kw)
    assert kk.distill(*args, good, sampler, steps=2.0, progress=False).nit == 2


# ----------------------------------------------------------------------------- CLI errors

@pytest.fixture
def run_dir(tmp_path, capsys):
    out = tmp_path / "run"
    assert _distill(out) == 0
    capsys.readouterr()
    return out


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_truncated_checkpoint_says_what_to_do(run_dir, capsys):
    _truncate(run_dir / "checkpoint.npz")
    assert _distill(run_dir, steps=8) == 2
    err = _error(capsys)
    assert "checkpoint.npz" in err and "truncated or corrupt" in err and "--overwrite" in err
    assert _distill(run_dir, "--overwrite", steps=8) == 0  # replaced, started afresh
    assert json.loads((run_dir / "summary.json").read_text())["resumed_from"] == 0


@pytest.mark.parametrize("damage, message", [
    (lambda run: _truncate(run / "distilled.npz"), "truncated or corrupt"),
    (lambda run: (run / "distilled.npz").write_text("x_support,y_support\n1,2\n"),
     "not a readable .npz"),
    (lambda run: np.savez(run / "distilled.npz", x_support=np.zeros((2, 8, 8, 1))),
     "lacks y_support"),
    (lambda run: (run / "config.json").write_text(""), "config.json is empty"),
])
def test_evaluate_on_damaged_files(run_dir, capsys, damage, message):
    damage(run_dir)
    assert cli.main(["evaluate", str(run_dir), "--no-progress"]) == 2
    err = _error(capsys)
    assert message in err and "allow_pickle" not in err


def test_checkpoint_without_generator_state(run_dir, capsys):
    arrays, meta = io.load_checkpoint(run_dir / "checkpoint.npz")
    del meta["rng"]
    io.save_checkpoint(run_dir / "checkpoint.npz", arrays, meta)
    assert _distill(run_dir, steps=8) == 2
    assert "lacks rng" in _error(capsys)


def test_evaluate_in_a_read_only_directory_prints_the_result_first(run_dir, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    run_dir.chmod(0o555)
    try:
        assert cli.main(["evaluate", str(run_dir), "--no-progress"]) == 2
        captured = capsys.readouterr()
        assert 0 <= json.loads(captured.out)["test_acc"] <= 1
        assert "result is printed above" in captured.err
    finally:
        run_dir.chmod(0o755)


def test_evaluate_prints_the_result_before_writing_it(run_dir, capsys, monkeypatch):
    """(The read-only case as root, who may write anywhere: the write itself fails.)"""
    def fail(path, text):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(io, "write_text_atomic", fail)
    assert cli.main(["evaluate", str(run_dir), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert 0 <= json.loads(captured.out)["test_acc"] <= 1
    assert "Permission denied" in captured.err and "printed above" in captured.err


def test_out_naming_a_file(tmp_path, capsys):
    path = tmp_path / "file"
    path.write_text("")
    assert _distill(path) == 2
    assert "is a file" in _error(capsys)
    assert cli.main(["evaluate", str(path)]) == 2
    assert "is a file" in _error(capsys)


def test_unwritable_out(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        assert _distill(parent / "run") == 2
        assert "cannot write to" in _error(capsys)
    finally:
        parent.chmod(0o755)


def test_unwritable_out_as_any_user(tmp_path, capsys):
    """A path under a regular file cannot be created, whoever runs the command."""
    (tmp_path / "f").write_text("")
    assert _distill(tmp_path / "f" / "run") == 2
    assert "cannot write to" in _error(capsys)


def _cifar_dir(tmp_path, batch):
    import pickle
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(tmp_path / name, "wb") as f:
            pickle.dump(batch, f)
    return tmp_path


@pytest.mark.parametrize("batch, message", [
    ({b"data": print, b"labels": [0]}, "builtins.print"),
    ({b"labels": [0]}, "lacks 'data'"),
])
def test_bad_cifar_batches(tmp_path, capsys, batch, message):
    data = _cifar_dir(tmp_path / "c", batch) if (tmp_path / "c").mkdir() is None else None
    assert _distill(tmp_path / "run", "--dataset", "cifar10", "--data-dir", str(data)) == 2
    assert message in _error(capsys)
    assert not (tmp_path / "run").exists()


def test_truncated_and_plain_text_dataset_npz(tmp_path, capsys):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((20, 4, 4)), y_train=np.arange(20) % 2,
             x_test=np.zeros((4, 4, 4)), y_test=np.arange(4) % 2)
    _truncate(path)
    assert _distill(tmp_path / "run", "--dataset", "npz", "--data-dir", str(path)) == 2
    assert "truncated or corrupt" in _error(capsys)
    path.write_text("hello")
    assert _distill(tmp_path / "run", "--dataset", "npz", "--data-dir", str(path)) == 2
    err = _error(capsys)
    assert "not a readable .npz" in err and "allow_pickle" not in err


def test_engine_cupy_without_cupy(tmp_path, capsys, monkeypatch):
    from kernelkip import _deps
    monkeypatch.setattr(_deps, "cupy_available", lambda: False)
    assert _distill(tmp_path / "run", "--engine", "cupy") == 2
    assert "pip install kernelkip[gpu]" in _error(capsys)


@pytest.mark.parametrize("argv", [
    ["--lr", "-0.04"], ["--lr", "nan"], ["--eval-size", "-5"], ["--minutes", "-1"],
    ["--eval-every", "-1"], ["--checkpoint-every", "-2"], ["--steps", "2.7"], ["--ipc", "0"],
    ["--reg", "-1e-6"], ["--label-lr", "inf"], ["--width", "0"], ["--seed", "-1"],
])
def test_numbers_out_of_range_are_refused_by_the_parser(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as exc:
        _distill(tmp_path / "run", f"{argv[0]}={argv[1]}")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argv[0]}" in err and argv[1] in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, message", [
    (["--val-size", "100000"], "--val-size 100000 takes"),
    (["--val-size", "5"], "--val-size 5 is smaller than the 10 classes"),
    (["--target-batch", "5"], "--target-batch 5 is smaller than the 10 classes"),
])
def test_sizes_checked_against_the_dataset(tmp_path, capsys, argv, message):
    assert _distill(tmp_path / "run", *argv) == 2
    err = _error(capsys)
    assert message in err and "ipc" not in err.split(message)[0]
    assert not (tmp_path / "run").exists()


def test_negative_lr_would_have_run_gradient_ascent(tmp_path, capsys):
    """The reason for the check: the library itself accepts any step size."""
    assert kk.optim.adam(-0.04) is not None
