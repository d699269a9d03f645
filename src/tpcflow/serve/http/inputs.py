"""Turn TFaaS requests (JSON rows, PNG/JPEG images) into model inputs, and outputs into answers."""

from __future__ import annotations

import io
import math

import numpy as np

from tpcflow.serve.http.errors import BadRequestError, check_elements
from tpcflow.serve.http.params import DATATYPES, ModelParams
from tpcflow.serve.http.tensors import narrow

__all__ = ["check_sample_shape", "decode_image", "label_probabilities", "rows_to_array", "values_to_rows"]

_PNG = b"\x89PNG\r\n\x1a\n"
_JPEG = b"\xff\xd8\xff"


class UnsupportedImageError(BadRequestError):
    """The upload is not a PNG or JPEG image (HTTP 415)."""

    status_code = 415


def check_sample_shape(x: np.ndarray, params: ModelParams, what: str = "input") -> np.ndarray:
    """Check (and for flat rows, reshape) ``x`` ``(n, ...)`` against ``params.input_shape``.

    Raises
    ------
    BadRequestError
        If the per-sample shape does not fit.
    """
    shape = params.input_shape
    if shape is None:
        return x
    sample = x.shape[1:]
    if len(sample) == len(shape) and all(s == d or d == -1 for s, d in zip(sample, shape, strict=True)):
        return x
    if len(sample) == 1 and -1 not in shape and sample[0] == math.prod(shape):
        return x.reshape((x.shape[0], *shape))
    want = "[" + ", ".join("any" if d == -1 else str(d) for d in shape) + "]"
    raise BadRequestError(
        f"wrong shape for {what} of model {params.name!r}: each sample has shape {list(sample)}, expected {want}"
    )


def values_to_rows(values: list, max_elements: int) -> tuple[np.ndarray, bool]:
    """``POST /json`` values (one row ``[v, ...]`` or rows ``[[v, ...], ...]``) as ``(n, width)`` float64.

    Returns the array and whether one row was sent.

    Raises
    ------
    BadRequestError
        On empty or ragged rows, NaN or infinity.
    TooManyElementsError
        If there are more than ``max_elements`` values (HTTP 413).
    """
    single = not values or not isinstance(values[0], list)
    rows = [values] if single else values
    if not rows or not rows[0]:
        raise BadRequestError("values is empty: send a row [v1, v2, ...] or rows [[...], ...]")
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            raise BadRequestError(f"values rows have different lengths: row 0 has {width}, row {i} has {len(row)}")
    check_elements(len(rows) * width, max_elements, "values")
    x = np.asarray(rows, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise BadRequestError("values contain NaN or infinity")
    return x, single


def rows_to_array(x: np.ndarray, keys: list[str] | None, params: ModelParams) -> np.ndarray:
    """Make ``x`` ``(n, width)`` float64 (from :func:`values_to_rows`) the input of the model.

    ``keys`` (the request's feature names) are matched against ``params.keys``
    and the columns reordered to the model's order; the values are cast to the
    model's datatype.

    Raises
    ------
    BadRequestError
        On a key mismatch, values the model's datatype cannot hold (:func:`~.tensors.narrow`), or a wrong shape.
    """
    width = x.shape[1]
    dtype = np.dtype(DATATYPES[params.datatype])
    x = narrow(x, dtype, f"values for model {params.name!r}")
    if keys is not None:
        if len(set(keys)) != len(keys):
            raise BadRequestError(f"keys must be unique, but got {keys}")
        if len(keys) != width:
            raise BadRequestError(f"{len(keys)} keys but {width} values per row")
        if params.keys is not None:
            if set(keys) != set(params.keys):
                missing = sorted(set(params.keys) - set(keys))
                extra = sorted(set(keys) - set(params.keys))
                raise BadRequestError(
                    f"keys do not match model {params.name!r}: missing {missing}, unexpected {extra}; "
                    f"the model takes {params.keys}"
                )
            if keys != params.keys:
                x = x[:, [keys.index(k) for k in params.keys]]
    elif params.keys is not None and width != len(params.keys):
        raise BadRequestError(f"model {params.name!r} takes {len(params.keys)} values per row {params.keys}, got {width}")
    return check_sample_shape(x, params)


def decode_image(data: bytes, params: ModelParams, max_pixels: int) -> np.ndarray:
    """Decode a PNG or JPEG into ``(1, C, H, W)`` float32 in [0, 1].

    ``C`` is ``params.img_channels`` (default 3); if ``img_width`` / ``img_height``
    are set the image must have that size.

    Raises
    ------
    UnsupportedImageError
        If the data is not PNG or JPEG.
    BadRequestError
        If it cannot be decoded, is too large, or has the wrong size.
    """
    if not (data.startswith(_PNG) or data.startswith(_JPEG)):
        raise UnsupportedImageError("image must be PNG or JPEG (by its signature bytes)")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise BadRequestError(f"image too large: {width}x{height} pixels, the limit is {max_pixels}")
            want_w, want_h = params.img_width, params.img_height
            if (want_w is not None and width != want_w) or (want_h is not None and height != want_h):
                raise BadRequestError(
                    f"image is {width}x{height} pixels but model {params.name!r} takes "
                    f"{want_w or 'any'}x{want_h or 'any'} (width x height)"
                )
            mode = {1: "L", 3: "RGB", 4: "RGBA"}[params.img_channels or 3]
            pixels = np.asarray(img.convert(mode), dtype=np.float32)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, BadRequestError):
            raise
        raise BadRequestError(f"cannot decode image: {err}") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None] / np.float32(255.0))


def label_probabilities(output: np.ndarray, params: ModelParams, labels: list[str] | None) -> list[dict]:
    """``[{"label", "probability"}]`` for one sample's output, most probable first."""
    scores = np.asarray(output, dtype=np.float64).reshape(-1)
    if params.probabilities == "softmax":
        e = np.exp(scores - scores.max())
        probs = e / e.sum()
    elif params.probabilities == "sigmoid":
        probs = 1.0 / (1.0 + np.exp(-scores))
    else:
        probs = scores
    names = list(labels or [])
    names += [f"class{i}" for i in range(len(names), len(probs))]
    order = np.argsort(-probs, kind="stable")
    return [{"label": names[i], "probability": float(probs[i])} for i in order]
