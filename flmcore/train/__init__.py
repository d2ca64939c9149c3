"""Training procedures of flmcore (torch): DRN-SSR alternation, ATDP and pose-balanced
samplers (DDP-aware), ATF alternating training, PIPNet training and self-training with curriculum.
"""
__all__ = []
from ._samplers import ATDPSampler, PoseBalancedSampler, atdp_batch_counts, atdp_proportions  # noqa: E402
from ._atf import BranchLoss, fit_atf  # noqa: E402
__all__ += ["ATDPSampler", "PoseBalancedSampler", "atdp_proportions", "atdp_batch_counts", "fit_atf", "BranchLoss"]
from ._stc import predict_pipnet, self_train_curriculum, train_pipnet  # noqa: E402  (PIPNet, STC)
__all__ += ["train_pipnet", "predict_pipnet", "self_train_curriculum"]
from ._drn_ssr import DRNSSRResult, drn_ssr_init, fit_drn_ssr  # noqa: E402  (DRN-SSR)
__all__ += ["fit_drn_ssr", "drn_ssr_init", "DRNSSRResult"]
from ._run import DEFAULTS, check_config, load_config, load_dataset, train  # noqa: E402  (config-driven runs)
__all__ += ["train", "load_config", "check_config", "load_dataset", "DEFAULTS"]
