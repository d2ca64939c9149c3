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


def _guard_exported_modules():
    # A NumPy array passed to a layer: "expected a torch.Tensor, got numpy.ndarray" (see _checks).
    import inspect as _inspect

    import torch as _torch

    from ._checks import guard_tensor_inputs

    for _obj in list(globals().values()):
        if (_inspect.isclass(_obj) and issubclass(_obj, _torch.nn.Module)
                and _obj.__module__.startswith("flmcore.nn")):
            for _c in _obj.__mro__:
                if _c.__module__.startswith("flmcore.nn") and issubclass(_c, _torch.nn.Module):
                    guard_tensor_inputs(_c)


_guard_exported_modules()
del _guard_exported_modules
