"""Whole models: PIPNet, ATF multi-branch, LDDMM-Face and the DRN cascade.
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
