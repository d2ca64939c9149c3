"""Small CPU-friendly backbones written here (no torchvision): ResNet-18-style and MobileNetV2-style.
"""
__all__ = []
from ._backbones import MobileNetV2, ResNet18, load_weights  # noqa: E402  (PIPNet backbones)
__all__ += ["ResNet18", "MobileNetV2", "load_weights"]
