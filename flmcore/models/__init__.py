"""Trained landmark models: the models shipped with flmcore (``weights/``: weights + model cards),
:func:`load_model`, the :class:`Landmarker` wrapper (photos + boxes -> image pixels),
prediction on photos and ONNX export.

This package is the public face; the implementation imports torch and therefore lives in
:mod:`flmcore.train` (``_landmarker``, ``_predict``, ``_export``, ``_registry``), the layer
allowed to use torch.  Names are resolved on first use, so importing ``flmcore.models``
does not load torch.
"""
import importlib

_WHERE = {
    "_landmarker": ("Landmarker", "build_network", "find_torchvision_weights", "MODEL_DEFAULTS", "CoordRegressor",
                    "IMAGENET_MEAN", "IMAGENET_STD"),
    "_registry": ("SHIPPED_MODELS", "load_model", "model_card"),
    "_predict": ("predict_image", "predict_batch", "predict_dataset", "predict_files", "find_faces",
                 "read_boxes_file", "write_predictions", "draw_overlay"),
    "_export": ("export_onnx", "decode_onnx_outputs", "onnx_metadata"),
}
_NAMES = {name: mod for mod, names in _WHERE.items() for name in names}
__all__ = sorted(_NAMES)


def __getattr__(name):
    mod = _NAMES.get(name)
    if mod is None:
        raise AttributeError(f"module 'flmcore.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"flmcore.train.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
