"""flmcore.nn.functional: public hub; implementations live in the private flmcore.nn._* modules.

Each topic adds its own re-export lines below (only add lines, keep each import
pointing to importable code).
"""
__all__ = []
from ._pip import pip_decode, pip_merge, pip_score_targets, pip_targets  # noqa: E402
from ..pip import mean_face, neighbor_table  # noqa: E402
__all__ += ["pip_targets", "pip_score_targets", "pip_decode", "pip_merge", "neighbor_table", "mean_face"]
