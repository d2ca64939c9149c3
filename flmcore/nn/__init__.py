"""PyTorch adapters of flmcore: autograd Functions over the ``flmcore._ext`` kernels and modules.

``flmcore.nn.functional`` holds the stateless ops; ``losses``, ``layers``,
``heads``, ``backbones`` and ``models`` hold the :class:`torch.nn.Module` wrappers.
Layers take ``(B, P, 2)`` float32 tensors by default, work in float64 too, and
return tensors on the input's device and dtype.
"""
from . import functional  # noqa: F401
from .backbones import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .models import *  # noqa: F401,F403
