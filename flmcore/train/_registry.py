"""Models shipped inside the flmcore package (weights + model card) and :func:`load_model`."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Union

__all__ = ["SHIPPED_MODELS", "load_model", "model_card"]

#: The weights and model cards live in the (torch-free) package folder ``flmcore/models/weights``.
_WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights"

#: Name -> (weights file, model card) of the models shipped in the package.
SHIPPED_MODELS: Dict[str, Dict[str, str]] = {
    "ibug68": {"weights": "ibug68_pipnet_mbv2.pt", "card": "ibug68_pipnet_mbv2.md",
               "summary": "300-W 68 points, PIPNet on an ImageNet MobileNetV2, 256-px crops; research use only"},
}


def load_model(name: Union[str, os.PathLike] = "ibug68", *, device=None, flip_test: Optional[bool] = None):
    """A ready-to-use :class:`~flmcore.models.Landmarker`: a shipped model by name, or a checkpoint file.

    Parameters
    ----------
    name : str or path
        A name of :data:`SHIPPED_MODELS` (``"ibug68"``), or a file written by
        :func:`flmcore.train.train` (``best.pt`` / ``last.pt``) or
        :meth:`Landmarker.save`.  Files are read with ``weights_only=True``.
    device : str or torch.device, optional
        Default CUDA when available, else CPU.
    flip_test : bool, optional
        Average with the prediction on the mirrored crop (default: as stored
        with the model).

    Examples
    --------
    >>> lm = load_model("ibug68", device="cpu")  # doctest: +SKIP
    >>> lm.scheme.name  # doctest: +SKIP
    'ibug68'
    """
    from ._landmarker import Landmarker

    key = os.fspath(name)
    if key in SHIPPED_MODELS:
        path = _WEIGHTS / SHIPPED_MODELS[key]["weights"]
        if not path.is_file():
            raise ValueError(f"the shipped model {key!r} is missing from this installation ({path})")
        return Landmarker.load(path, device=device, flip_test=flip_test)
    if os.path.isfile(key):
        return Landmarker.load(key, device=device, flip_test=flip_test)
    raise ValueError(f"name must be a shipped model ({', '.join(sorted(SHIPPED_MODELS))}) or a checkpoint file, "
                     f"got {key!r}")


def model_card(name: str = "ibug68") -> str:
    """The model card (Markdown) of a shipped model: data, split, config, training time, validation, terms."""
    if name not in SHIPPED_MODELS:
        raise ValueError(f"name must be one of {sorted(SHIPPED_MODELS)}, got {name!r}")
    return (_WEIGHTS / SHIPPED_MODELS[name]["card"]).read_text(encoding="utf-8")
