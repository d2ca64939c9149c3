"""Heads: PIPNet pixel-in-pixel head, coordinate and heatmap heads (ATF), LDDMM momentum head.
"""
__all__ = []
from ._pip import PIPHead  # noqa: E402
__all__ += ["PIPHead"]
from ._multibranch import CoordHead, HeatmapHead  # noqa: E402
__all__ += ["CoordHead", "HeatmapHead"]
from ._lddmm import MomentumHead  # noqa: E402
__all__ += ["MomentumHead"]
