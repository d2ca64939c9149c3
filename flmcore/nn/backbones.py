"""flmcore.nn.backbones: public hub; implementations live in the private flmcore.nn._* modules.

Each topic adds its own re-export lines below (only add lines, keep each import
pointing to importable code).
"""
__all__ = []
from ._backbones import MobileNetV2, ResNet18, load_weights  # noqa: E402  (PIPNet backbones)
__all__ += ["ResNet18", "MobileNetV2", "load_weights"]
