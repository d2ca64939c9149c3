"""flmcore.nn.models: public hub; implementations live in the private flmcore.nn._* modules.

Each topic adds its own re-export lines below (only add lines, keep each import
pointing to importable code).
"""
__all__ = []
from ._pip import PIPNet  # noqa: E402
__all__ += ["PIPNet"]
from ._multibranch import MultiBranch  # noqa: E402
__all__ += ["MultiBranch"]
from ._lddmm import LDDMMFace  # noqa: E402
__all__ += ["LDDMMFace"]
from ._drn import DRNCascade  # noqa: E402  (DRN-SSR cascade)
__all__ += ["DRNCascade"]
