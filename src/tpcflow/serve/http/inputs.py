"""Turn TFaaS requests (JSON rows, PNG/JPEG images) into model inputs, and outputs into answers."""

from __future__ import annotations

import io
import math

import numpy as np

from tpcflow.serve.http.errors import BadRequestError, check_elements
from tpcflow.serve.http.params import DATATYPES, ModelParams
from tpcflow.serve.http.tensors import narrow

__all__ = [
    "check_sample_shape",
    "decode_image",
    "label_probabilities",
    "is_row_preprocessing",
    "model_input",
    "order_columns",
    "preprocess_rows",
    "rows_to_array",
    "transform_outputs",
    "values_to_rows",
]

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
        On empty or ragged rows.
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
    return np.asarray(rows, dtype=np.float64), single  # null -> NaN: an empty slot of a raw row


def order_columns(x: np.ndarray, keys: list[str] | None, columns: list[str] | None, model: str) -> np.ndarray:
    """Reorder the columns of ``x`` ``(n, width)``, named ``keys``, to the model's ``columns``.

    Raises
    ------
    BadRequestError
        If ``keys`` are not unique, do not match ``width``, or are not the model's columns.
    """
    width = x.shape[1]
    if keys is not None:
        if len(set(keys)) != len(keys):
            raise BadRequestError(f"keys must be unique, but got {keys}")
        if len(keys) != width:
            raise BadRequestError(f"{len(keys)} keys but {width} values per row")
        if columns is not None:
            if set(keys) != set(columns):
                missing = sorted(set(columns) - set(keys))
                extra = sorted(set(keys) - set(columns))
                raise BadRequestError(
                    f"keys do not match model {model!r}: missing {missing[:10]}, unexpected {extra[:10]}; "
                    f"the model takes {columns[:10]}" + (f"... ({len(columns)})" if len(columns) > 10 else "")
                )
            if keys != columns:
                x = x[:, [keys.index(k) for k in columns]]
    elif columns is not None and width != len(columns):
        raise BadRequestError(f"model {model!r} takes {len(columns)} values per row {columns[:10]}, got {width}")
    return x


def rows_to_array(x: np.ndarray, keys: list[str] | None, params: ModelParams) -> np.ndarray:
    """Make ``x`` ``(n, width)`` float64 (from :func:`values_to_rows`) the input of a model without preprocessing.

    ``keys`` (the request's feature names) are matched against ``params.keys``
    and the columns reordered to the model's order; the values are cast to the
    model's datatype.

    Raises
    ------
    BadRequestError
        On NaN or infinity, a key mismatch, values the model's datatype cannot hold
        (:func:`~.tensors.narrow`), or a wrong shape.
    """
    if not np.all(np.isfinite(x)):
        raise BadRequestError("values contain NaN, infinity or null")
    x = narrow(x, np.dtype(DATATYPES[params.datatype]), f"values for model {params.name!r}")
    return check_sample_shape(order_columns(x, keys, params.keys, params.name), params)


def preprocess_rows(x: np.ndarray, keys: list[str] | None, params: ModelParams, preprocessing) -> np.ndarray:
    """Raw rows ``(n, width)`` in physics units (NaN where empty) -> the model's ``(n, input_width)`` input.

    ``preprocessing`` is the model's :class:`~tpcflow.loader.root_preprocess.Preprocessing`:
    the same min/max normalisation and padding as in training.

    Raises
    ------
    BadRequestError
        On a key mismatch or a wrong width (naming the model's columns).
    """
    x = order_columns(x, keys, preprocessing.columns, params.name)
    return preprocessing.model_input(x)


def model_input(loaded, x: np.ndarray, keys: list[str] | None, preprocessed: bool = False) -> np.ndarray:
    """The input of ``loaded`` (a :class:`~.cache.LoadedModel`) for rows ``x`` ``(n, width)`` float64.

    Raw rows go through the model's preprocessing when it has one (unless ``preprocessed``);
    otherwise they are checked and cast (:func:`rows_to_array`).

    Raises
    ------
    BadRequestError
        See :func:`preprocess_rows` and :func:`rows_to_array`; also for a model of several inputs.
    """
    p = loaded.params
    if len(p.input_names) != 1:
        raise BadRequestError(f"model {p.name!r} takes {len(p.input_names)} inputs; use POST /v2/models/{{name}}/infer")
    prep = None if preprocessed else loaded.preprocessing
    if prep is not None and is_row_preprocessing(prep):
        return preprocess_rows(x, keys, p, prep)
    x = rows_to_array(x, keys, p)
    return x if prep is None else prep.apply(x)


def is_row_preprocessing(prep) -> bool:
    """Whether ``prep`` turns raw rows of a tree into inputs (else it transforms images, shape kept)."""
    from tpcflow.loader.root_preprocess import Preprocessing

    return isinstance(prep, Preprocessing)


def transform_outputs(outputs: list[np.ndarray], params: ModelParams) -> list[np.ndarray]:
    """Apply the model's ``output_transform`` (sigmoid, softmax) to its first output; the rest unchanged."""
    if params.output_transform in (None, "none") or not outputs:
        return outputs
    from tpcflow.loader.root_preprocess import output_transform

    return [output_transform(outputs[0], params.output_transform).astype(np.float32), *outputs[1:]]


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
