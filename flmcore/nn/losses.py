"""flmcore.nn.losses: public hub; implementations live in the private flmcore.nn._* modules.

Each topic adds its own re-export lines below (only add lines, keep each import
pointing to importable code).
"""
__all__ = []
from ._pip import PIPLoss  # noqa: E402
__all__ += ["PIPLoss"]
