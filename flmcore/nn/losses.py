"""Landmark losses as :class:`torch.nn.Module` s: Wing family, L1/L2/smooth-L1, anisotropic (Rayhan et al.),
mixed-branch (ATF), curve + landmark (LDDMM-Face) and PIPNet losses.
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
