"""flmcore.nn.losses: public hub; implementations live in the private flmcore.nn._* modules.

Each topic adds its own re-export lines below (only add lines, keep each import
pointing to importable code).
"""
__all__ = []
from ._pip import PIPLoss  # noqa: E402
__all__ += ["PIPLoss"]
from ._losses import (AdaptiveWingLoss, AnisotropicLoss, AnisotropicWingLoss, L1Loss, L2Loss,  # noqa: E402
                      MixedBranchLoss, SmoothL1Loss, SoftWingLoss, WingLoss)
__all__ += ["WingLoss", "AdaptiveWingLoss", "SoftWingLoss", "L1Loss", "L2Loss", "SmoothL1Loss",
            "AnisotropicLoss", "AnisotropicWingLoss", "MixedBranchLoss"]
from ._lddmm import CurveLandmarkLoss  # noqa: E402
__all__ += ["CurveLandmarkLoss"]
