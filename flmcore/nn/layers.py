"""Layers: shape-indexed SIFT features and the LDDMM deformation layer.
"""
__all__ = []
from ._sift import ShapeIndexedSIFT  # noqa: E402  (shape-indexed SIFT)
__all__ += ["ShapeIndexedSIFT"]
from ._lddmm import LDDMMDeformation  # noqa: E402
__all__ += ["LDDMMDeformation"]
