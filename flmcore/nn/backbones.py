"""Small CPU-friendly backbones written here (no torchvision): ResNet-18-style and MobileNetV2-style.
"""
__all__ = []
from ._backbones import (MobileNetV2, ResNet18, load_torchvision_weights, load_weights,  # noqa: E402
                         torchvision_key_map)
__all__ += ["ResNet18", "MobileNetV2", "load_weights", "load_torchvision_weights", "torchvision_key_map"]
