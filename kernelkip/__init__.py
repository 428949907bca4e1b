"""kernelkip: dataset distillation by kernel meta-model matching.

Analytic infinite-width kernels (neural-tangents' conventions) with hand-derived gradients,
kernel ridge regression with explicit adjoints, random-feature kernels of finite ConvNets
(RFAD), and the KIP/RFAD outer loop. No autodiff framework.
"""
__version__ = "0.1.0"

from . import _threads  # noqa: F401,E402 -- must run before NumPy is first imported

# architecture
from .arch import (ABRelu, AvgPool, Conv, ConvNet, Dense, Erf, FC, Flatten, Gelu,  # noqa: F401
                   GlobalAvgPool, LeakyRelu, Relu, Serial, serial)

# kernels and their pullbacks
from .kernels import (kernel, kernel_pullback, nngp, nngp_pullback, nngp_vjp,  # noqa: F401
                      ntk, ntk_pullback, ntk_vjp)

# random features of finite networks (RFAD)
from . import features  # noqa: F401,E402 -- features(), features_vjp() live there
from .features import RandomFeatures, rf_kernel, sample_weights  # noqa: F401,E402

# kernel ridge regression and objectives
from . import krr, losses, objectives  # noqa: F401,E402
from .objectives import kip_loss, label_solve, rfad_loss  # noqa: F401,E402

# the outer loop and evaluation
from . import optim  # noqa: F401,E402
from .distill import DistillResult, EarlyStopping, TargetSampler, distill  # noqa: F401,E402
from .evaluate import krr_accuracy, krr_predict  # noqa: F401,E402
