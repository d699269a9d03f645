"""The preprocessing of a HEP image classifier (hep_resnet), from raw images to the network's input.

Source: MLaaS4HEP ``hep_resnet.py``; tpcflow's recipe (:mod:`tpcflow.workflows.image_classify`)
is ``log1p(max(x, 0)) / scale``, ``scale`` being the largest ``log1p`` of the training set, so
that inputs lie in [0, 1].  Raw images are ``(N, C, H, W)``: detector charges (larcv2), or
8-bit image files as ``pixel / 255`` (the scale that ``POST /image`` decodes to).  It travels
with the model in ``params.json`` (``preprocessing``)::

    {"format": "tpcflow-image-preprocessing", "version": 1, "transform": "log1p", "scale": 4.6}
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tpcflow.errors import DataFormatError

__all__ = ["IMAGE_PREPROCESSING_FORMAT", "ImagePreprocessing"]

IMAGE_PREPROCESSING_FORMAT = "tpcflow-image-preprocessing"
_VERSION = 1


@dataclass(frozen=True)
class ImagePreprocessing:
    """``log1p(max(x, 0)) / scale`` (see the module docstring).

    Attributes
    ----------
    scale : float
        Divisor after ``log1p`` (> 0).
    """

    scale: float

    @classmethod
    def fit(cls, images: np.ndarray) -> ImagePreprocessing:
        """The preprocessing whose ``scale`` maps the largest ``log1p`` of ``images`` to 1."""
        return cls(float(np.log1p(np.maximum(np.max(images, initial=0.0), 0.0))) or 1.0)

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Raw images (any shape) -> the network's float32 input of the same shape."""
        x = np.log1p(np.maximum(images, 0, dtype=np.float32))
        x /= np.float32(self.scale)
        return x

    def to_dict(self) -> dict:
        return {"format": IMAGE_PREPROCESSING_FORMAT, "version": _VERSION, "transform": "log1p", "scale": self.scale}

    @classmethod
    def from_dict(cls, d: object, *, origin: object = None) -> ImagePreprocessing:
        """Build from :meth:`to_dict` output.

        Raises
        ------
        DataFormatError
            If ``d`` is not tpcflow image preprocessing with a positive ``scale``.
        """
        if not isinstance(d, dict) or d.get("format") != IMAGE_PREPROCESSING_FORMAT or d.get("version") != _VERSION:
            raise DataFormatError(f"not tpcflow image preprocessing version {_VERSION}", file_path=origin)
        if d.get("transform") != "log1p" or set(d) - {"format", "version", "transform", "scale"}:
            raise DataFormatError(f"image preprocessing must be {{transform: log1p, scale}}, got {d}", file_path=origin)
        scale = d.get("scale")
        if not isinstance(scale, (int, float)) or not scale > 0 or not np.isfinite(scale):
            raise DataFormatError(f"image preprocessing scale must be a positive number, got {scale!r}",
                                  file_path=origin)
        return cls(float(scale))
