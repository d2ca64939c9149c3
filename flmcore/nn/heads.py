"""flmcore.nn.heads: public hub; implementations live in the private flmcore.nn._* modules.

Each topic adds its own re-export lines below (only add lines, keep each import
pointing to importable code).
"""
__all__ = []
from ._pip import PIPHead  # noqa: E402
__all__ += ["PIPHead"]
