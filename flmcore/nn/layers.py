"""flmcore.nn.layers: public hub; implementations live in the private flmcore.nn._* modules.

Each topic adds its own re-export lines below (only add lines, keep each import
pointing to importable code).
"""
__all__ = []
from ._sift import ShapeIndexedSIFT  # noqa: E402  (shape-indexed SIFT)
__all__ += ["ShapeIndexedSIFT"]
from ._lddmm import LDDMMDeformation  # noqa: E402
__all__ += ["LDDMMDeformation"]
