"""Trained landmark models: the :class:`Landmarker` wrapper (photos + boxes -> image pixels),
network construction from a model config, and the models shipped with flmcore.
"""
__all__ = []
from ._landmarker import Landmarker, build_network, find_torchvision_weights, MODEL_DEFAULTS  # noqa: E402
__all__ += ["Landmarker", "build_network", "find_torchvision_weights", "MODEL_DEFAULTS"]
