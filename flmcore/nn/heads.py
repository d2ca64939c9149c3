"""flmcore.nn.heads: public hub; implementations live in the private flmcore.nn._* modules.

Each topic adds its own re-export lines below (only add lines, keep each import
pointing to importable code).
"""
__all__ = []
from ._pip import PIPHead  # noqa: E402
__all__ += ["PIPHead"]
from ._multibranch import CoordHead, HeatmapHead  # noqa: E402
__all__ += ["CoordHead", "HeatmapHead"]
from ._lddmm import MomentumHead  # noqa: E402
__all__ += ["MomentumHead"]
