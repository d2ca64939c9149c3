"""Trained landmark models: the :class:`Landmarker` wrapper (photos + boxes -> image pixels),
network construction from a model config, and the models shipped with flmcore.
"""
__all__ = []
from ._landmarker import Landmarker, build_network, find_torchvision_weights, MODEL_DEFAULTS  # noqa: E402
__all__ += ["Landmarker", "build_network", "find_torchvision_weights", "MODEL_DEFAULTS"]
from ._registry import SHIPPED_MODELS, load_model, model_card  # noqa: E402
__all__ += ["SHIPPED_MODELS", "load_model", "model_card"]
from ._predict import (draw_overlay, predict_batch, predict_dataset, predict_files, predict_image,  # noqa: E402
                       read_boxes_file,
                       write_predictions)
__all__ += ["predict_image", "predict_batch", "predict_dataset", "predict_files", "read_boxes_file", "write_predictions",
            "draw_overlay"]
from ._export import export_onnx, decode_onnx_outputs, onnx_metadata  # noqa: E402
__all__ += ["export_onnx", "decode_onnx_outputs", "onnx_metadata"]
