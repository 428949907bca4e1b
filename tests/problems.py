"""Small standard problems shared by test files."""
import numpy as np
import pytest

from kernelkip.data import class_balanced_sample, load_digits, one_hot_centered, standardize


def digits_problem(dtype, per_class=2):
    """``(ds, x_train, y_train, x_test, params0)`` on the embedded digits: standardised
    images of ``dtype``, centred one-hot targets and a class-balanced initial support set."""
    ds = load_digits()
    x_train, x_test, _ = standardize(ds.x_train, ds.x_test)
    x_train, x_test = x_train.astype(dtype), x_test.astype(dtype)
    y_train = one_hot_centered(ds.y_train, 10, dtype=dtype)
    idx = class_balanced_sample(ds.y_train, per_class, np.random.default_rng(0), 10)
    return ds, x_train, y_train, x_test, {"x_support": x_train[idx], "y_support": y_train[idx]}


def check_resume_is_exact(run, steps, interrupt_at, ckpt):
    """Run ``run(steps, **kw)`` straight through, and again interrupted after step
    ``interrupt_at`` and resumed from ``ckpt``: parameters and losses must be identical."""
    full = run(steps)

    def interrupt(step, params, record):
        if step == interrupt_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match=f"step {interrupt_at}"):
        run(steps, checkpoint=ckpt, checkpoint_every=5, callback=interrupt)
    resumed = run(steps, checkpoint=ckpt, checkpoint_every=5)
    assert resumed.resumed_from == interrupt_at and resumed.nit == steps
    for name in full.params:
        np.testing.assert_array_equal(resumed.params[name], full.params[name])
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in full.history]
