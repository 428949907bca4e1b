"""kernelkip: dataset distillation by kernel meta-model matching.

Analytic infinite-width kernels (neural-tangents' conventions) with hand-derived gradients,
kernel ridge regression with explicit adjoints, and the KIP outer loop. No autodiff framework.
"""
__version__ = "0.1.0"

from . import _threads  # noqa: F401,E402 -- must run before NumPy is first imported

# architecture
from .arch import (ABRelu, AvgPool, Conv, ConvNet, Dense, Erf, FC, Flatten, Gelu,  # noqa: F401
                   GlobalAvgPool, LeakyRelu, Relu, Serial, serial)

# kernels and their pullbacks
from .kernels import (kernel, kernel_pullback, nngp, nngp_pullback, nngp_vjp,  # noqa: F401
                      ntk, ntk_pullback, ntk_vjp)

# kernel ridge regression and objectives
from . import krr, losses, objectives  # noqa: F401,E402
from .objectives import kip_loss, label_solve  # noqa: F401,E402

# the outer loop and evaluation
from . import optim  # noqa: F401,E402
from .distill import DistillResult, TargetSampler, distill  # noqa: F401,E402
from .evaluate import krr_accuracy, krr_predict  # noqa: F401,E402
