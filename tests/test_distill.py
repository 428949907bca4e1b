"""The outer loop: it improves a support set, and an interrupted run resumes exactly."""
import numpy as np
import pytest

import kernelkip as kk
from kernelkip import io, optim

from .problems import check_resume_is_exact, digits_problem


@pytest.fixture(scope="module")
def digits():
    return digits_problem(np.float64, per_class=2)


def _run(digits, steps, **kwargs):
    ds, x_train, y_train, x_test, params0 = digits
    arch = kk.FC(1)
    return kk.distill(kk.objectives.kip(arch), params0,
                      kk.TargetSampler(x_train, y_train, ds.y_train, 300), steps=steps,
                      optimizer=optim.adam(0.01), rng=np.random.default_rng(1), progress=False,
                      **kwargs)


def _accuracy(digits, params):
    ds, _, _, x_test, _ = digits
    return kk.krr_accuracy(params["x_support"], params["y_support"], x_test, ds.y_test, kk.FC(1))


def test_distill_improves_test_accuracy_over_initial_support(digits):
    before = _accuracy(digits, digits[4])
    res = _run(digits, 60)
    after = _accuracy(digits, res.params)
    assert res.nit == 60 and len(res.history) == 60
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert after > before + 0.05, (before, after)


def test_interrupted_run_resumes_bit_identical(digits, tmp_path):
    check_resume_is_exact(lambda steps, **kw: _run(digits, steps, **kw), 25, 11,
                          tmp_path / "ckpt.npz")


def test_checkpoint_from_another_problem_is_refused(digits, tmp_path):
    ckpt = tmp_path / "ckpt.npz"
    _run(digits, 2, checkpoint=ckpt)
    ds, x_train, y_train, _, params0 = digits
    with pytest.raises(ValueError, match="different objective"):
        kk.distill(kk.objectives.kip(kk.FC(2)), params0,
                   kk.TargetSampler(x_train, y_train, ds.y_train, 300), steps=3,
                   checkpoint=ckpt, progress=False)


def test_learn_subset_keeps_other_parameters_fixed(digits):
    res = _run(digits, 5, learn=("x_support",))
    np.testing.assert_array_equal(res.params["y_support"], digits[4]["y_support"])
    assert not np.array_equal(res.params["x_support"], digits[4]["x_support"])


def test_log_and_evaluation_records(digits, tmp_path):
    log = tmp_path / "log.jsonl"
    res = _run(digits, 4, log=log, eval_every=2,
               evaluate=lambda p: {"test_acc": _accuracy(digits, p)})
    records = io.read_jsonl(log)
    assert [r["step"] for r in records] == [0, 1, 2, 3, 4]
    assert [("test_acc" in r) for r in records] == [True, False, True, False, True]
    assert records == res.history


def test_bad_arguments(digits):
    with pytest.raises(ValueError, match="cannot learn"):
        _run(digits, 1, learn=("labels",))
    with pytest.raises(ValueError, match="steps"):
        _run(digits, -1)
    ds, x_train, y_train, _, _ = digits
    with pytest.raises(ValueError, match="rows"):
        kk.TargetSampler(x_train, y_train[:-1], ds.y_train, 10)


def test_class_balanced_target_batches():
    labels = np.repeat(np.arange(3), 20)
    sampler = kk.TargetSampler(np.arange(60.0)[:, None], np.eye(3)[labels], labels, 12)
    x, y = sampler(np.random.default_rng(0))
    assert np.bincount(y.argmax(1)).tolist() == [4, 4, 4]


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_time_budget_stops_the_run_and_evaluates_at_the_end(digits, clock):
    res = _run(digits, 50, max_seconds=1e-9, clock=clock,
               evaluate=lambda p: {"test_acc": _accuracy(digits, p)})
    assert res.nit == 1  # the first step spends the (tiny) budget
    assert "test_acc" in res.history[-1] and res.history[-1]["cpu_time"] > 0


def test_evaluation_every_few_seconds(digits):
    res = _run(digits, 5, eval_every_seconds=1e-9,
               evaluate=lambda p: {"test_acc": _accuracy(digits, p)})
    assert all("test_acc" in r for r in res.history)


def test_unknown_clock_is_refused(digits):
    with pytest.raises(ValueError, match="clock"):
        _run(digits, 1, clock="gpu")
