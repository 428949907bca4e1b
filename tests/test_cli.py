"""The kernelkip command, run the way a user runs it."""
import json

import numpy as np
import pytest

from kernelkip import cli, io
from kernelkip.data import load_dataset


def _distill(tmp_path, *extra):
    out = tmp_path / "run"
    argv = ["distill", "--dataset", "digits", "--ipc", "2", "--steps", "6", "--lr", "0.01",
            "--target-batch", "200", "--eval-every", "3", "--no-progress", "--out", str(out),
            *extra]
    return cli.main(argv), out


def test_distill_writes_a_complete_run_directory(tmp_path, capsys):
    code, out = _distill(tmp_path)
    assert code == 0
    for name in ("config.json", "checkpoint.npz", "log.jsonl", "distilled.npz", "support.png",
                 "summary.json"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and 0 <= summary["final_test_acc"] <= 1
    arrays, _ = io.load_checkpoint(out / "distilled.npz")
    assert arrays["x_support"].shape == (20, 8, 8, 1)
    assert io.read_png(out / "support.png").shape[0] > 0


def test_evaluate_reproduces_the_final_accuracy(tmp_path, capsys):
    _, out = _distill(tmp_path)
    capsys.readouterr()
    assert cli.main(["evaluate", str(out), "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    summary = json.loads((out / "summary.json").read_text())
    assert result["test_acc"] == pytest.approx(summary["final_test_acc"])


def test_rerun_resumes_and_other_settings_are_refused(tmp_path, capsys):
    _distill(tmp_path)
    code, out = _distill(tmp_path, "--steps", "8")
    assert code == 0
    assert json.loads((out / "summary.json").read_text())["resumed_from"] == 6
    capsys.readouterr()
    code, _ = _distill(tmp_path, "--reg", "0.1")
    assert code == 2 and "other settings" in capsys.readouterr().err


def test_label_solve_baseline(tmp_path, capsys):
    out = tmp_path / "ls"
    assert cli.main(["label-solve", "--dataset", "digits", "--ipc", "2", "--target-batch",
                     "300", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_acc_label_solve"] > 0.1


@pytest.mark.parametrize("argv, message", [
    (["--ipc", "500"], "ipc 500 is larger than class"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent-dir"], "nonexistent-dir"),
    (["--activation", "swish"], "unknown activation"),
    (["--loss", "platt"], "RFAD option"),
    (["--method", "rfad", "--kernel", "fc-nngp"], "use --kernel conv-nngp"),
    (["--method", "rfad", "--patience", "2"], "needs a validation split"),
])
def test_bad_input_gives_a_clear_error(tmp_path, capsys, argv, message):
    code, _ = _distill(tmp_path, *argv)
    assert code == 2
    assert message in capsys.readouterr().err


def test_unknown_kernel_is_rejected_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _distill(tmp_path, "--kernel", "rbf")
    assert "invalid choice" in capsys.readouterr().err


def test_distill_a_convnet_under_a_cpu_budget(tmp_path, capsys):
    code, out = _distill(tmp_path, "--kernel", "conv-ntk", "--depth", "1", "--readout", "gap",
                         "--extra-conv", "--minutes", "1e-9", "--clock", "cpu",
                         "--eval-size", "50")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["n_test"] == 50
    assert 0 <= summary["final_test_acc"] <= 1 and summary["optimisation_cpu_seconds"] > 0
    config = json.loads((out / "config.json").read_text())
    assert config["depth"] == 1 and config["readout"] == "gap" and config["extra_conv"]


def _rfad(tmp_path, *extra):
    return _distill(tmp_path, "--method", "rfad", "--depth", "2", "--width", "8", "--models",
                    "2", "--eval-models", "4", "--lr", "0.05", *extra)


def test_rfad_run_through_the_command(tmp_path, capsys):
    code, out = _rfad(tmp_path)
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert (config["kernel"], config["reg"], config["loss"]) == ("conv-nngp", 5e-3, "platt")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "rfad" and summary["steps"] == 6
    assert 0 <= summary["final_test_acc"] <= 1 and 0 <= summary["final_test_acc_rf"] <= 1
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(r["temperature"] > 0 for r in log if "loss" in r)
    arrays, _ = io.load_checkpoint(out / "checkpoint.npz")
    assert arrays["param/log_temp"].shape == (1,)
    capsys.readouterr()
    # the exact kernel reproduces the run's last score; the random-feature kernel is fixed-seed
    assert cli.main(["evaluate", str(out), "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["test_acc"] == pytest.approx(
        summary["final_test_acc"])
    scores = []
    for _ in range(2):
        assert cli.main(["evaluate", str(out), "--rf-models", "3", "--no-progress"]) == 0
        scores.append(json.loads(capsys.readouterr().out)["test_acc"])
    assert scores[0] == scores[1] and (out / "eval-rf3.json").exists()
    # resuming continues with the same networks and temperature
    code, out = _rfad(tmp_path, "--steps", "8")
    assert code == 0 and json.loads((out / "summary.json").read_text())["resumed_from"] == 6


def test_validation_split_is_disjoint_from_support_and_targets():
    ds = load_dataset("digits")
    cfg = {"seed": 0, "ipc": 5, "val_size": 200}
    x = np.arange(len(ds.y_train), dtype=float)[:, None]        # each row names its image
    x_t, _, labels_t, (x_v, labels_v) = cli._split_validation(cfg, ds, x, x)
    support = set(cli._support_indices(cfg, ds).tolist())
    val, targets = set(x_v[:, 0].astype(int).tolist()), set(x_t[:, 0].astype(int).tolist())
    assert len(val) == 200 and not val & support and not val & targets
    assert len(targets) == len(ds.y_train) - 200
    np.testing.assert_array_equal(labels_v, ds.y_train[x_v[:, 0].astype(int)])


def test_rfad_early_stopping_keeps_the_best_support_set(tmp_path, capsys):
    code, out = _rfad(tmp_path, "--steps", "40", "--eval-every", "1", "--val-size", "100",
                      "--patience", "2", "--lr", "0.5")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    vals = [r["val_acc"] for r in log if "val_acc" in r]
    assert summary["best_val_acc"] == max(vals)
    # stopped exactly `patience` evaluations after the best one (every step is evaluated)
    assert summary["stopped_early"] and summary["steps"] == summary["best_step"] + 2
    best, _ = io.load_checkpoint(out / "best.npz")
    final, _ = io.load_checkpoint(out / "distilled.npz")
    np.testing.assert_array_equal(final["x_support"], best["x_support"])
