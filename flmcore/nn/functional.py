"""Stateless torch ops of flmcore (kornia-style functional twins of the modules).

LDDMM flows and curve norms (CPU ``_ext`` kernels with hand-written backward, pure torch elsewhere),
PIPNet label assignment and decoding, landmark losses (Wing family, anisotropic, mixed-branch) and
heatmap helpers.
"""
__all__ = []
from ._pip import pip_decode, pip_merge, pip_score_targets, pip_targets  # noqa: E402
from ..pip import mean_face, neighbor_table  # noqa: E402
__all__ += ["pip_targets", "pip_score_targets", "pip_decode", "pip_merge", "neighbor_table", "mean_face"]
from ._losses import (adaptive_wing_loss, anisotropic_loss, anisotropic_weights, anisotropic_wing_loss,  # noqa: E402
                      l1_loss, l2_loss, mixed_branch_loss, smooth_l1_loss, soft_wing_loss, wing_loss)
from ._multibranch import decode_heatmaps, heatmap_targets  # noqa: E402
__all__ += ["wing_loss", "adaptive_wing_loss", "soft_wing_loss", "l1_loss", "l2_loss", "smooth_l1_loss",
            "anisotropic_weights", "anisotropic_loss", "anisotropic_wing_loss", "mixed_branch_loss",
            "heatmap_targets", "decode_heatmaps"]
from ._lddmm import currents_loss, lddmm_flow, lddmm_flow_points, lddmm_shoot, varifold_loss  # noqa: E402
__all__ += ["lddmm_flow", "lddmm_shoot", "lddmm_flow_points", "currents_loss", "varifold_loss"]
