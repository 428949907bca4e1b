"""The brute-force conv reference agrees with Monte-Carlo estimates from finite random CNNs.

These tests validate the oracle that the convolutional kernels will be tested against: the
NNGP of a random CNN's scalar output, averaged over many networks, must match the brute-force
value within a few standard errors. The oracle's NTK rules are checked by the hand example
only; an empirical-NTK check needs a CNN backward pass, which belongs with the conv kernels.
"""
import numpy as np
import pytest

from . import conv_reference as ref

ARCHS = {
    "conv-relu-flatten": [("conv", 3, "SAME", 1.4, 0.1), ("relu",), ("flatten",),
                          ("dense", 1.4, 0.1)],
    "conv-relu-pool-gap": [("conv", 3, "SAME", 1.4, 0.1), ("relu",), ("pool",), ("gap",),
                           ("dense", 1.4, 0.1)],
    "valid-erf-conv-flatten": [("conv", 3, "VALID", 1.2, 0.2), ("erf",),
                               ("conv", 3, "SAME", 1.3, 0.0), ("flatten",), ("dense", 1.1, 0.3)],
}


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_brute_force_nngp_equals_monte_carlo_of_random_cnns(name):
    arch = ARCHS[name]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 4, 2))
    exact, _ = ref.kernel_matrices(x, x, arch)
    # E[f(x_i) f(x_j)] over 3000 random networks of 64 channels
    samples = np.array([np.outer(*(2 * [ref.finite_cnn_outputs(x, arch, 64, rng)]))
                        for _ in range(3000)])
    mean, se = samples.mean(0), samples.std(0) / np.sqrt(len(samples))
    # finite width 64 biases the deeper architectures by O(1/width): allow 5 SE + 3%
    assert np.all(np.abs(mean - exact) <= 5 * se + 0.03 * np.abs(exact)), (mean, exact, se)


def test_conv_rules_by_hand():
    """One 1x1 image, one channel: a SAME 3x3 conv sees only its centre tap, so
    K' = W^2/9 K + b^2; then Flatten and Dense."""
    x1, x2 = np.full((1, 1, 1), 2.0), np.full((1, 1, 1), 3.0)
    arch = [("conv", 3, "SAME", 1.5, 0.5), ("flatten",), ("dense", 2.0, 0.1)]
    nngp, ntk = ref.pair_kernel(x1, x2, arch)
    k_conv = 1.5 ** 2 / 9 * 6.0 + 0.25
    assert nngp == pytest.approx(4 * k_conv + 0.01)
    assert ntk == pytest.approx(4 * k_conv + nngp)
