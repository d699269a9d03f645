"""TFaaS model bundles and base64 model uploads.

Source: TFaaS ``UploadBundleHandler`` and ``UploadFormHandler`` (vkuznet/TFaaS
``src/Go/handlers.go``).  A bundle is the body of ``POST /upload`` when it is not a
multipart form: a tar archive, usually gzip-compressed (``Content-Encoding: gzip``, or
by its magic bytes), of one model folder::

    NAME/params.json   the model's params (its "name", "model" and "labels" files)
    NAME/<model file>  params["model"], or the only other file
    NAME/labels.txt    optional (params["labels"])

A multipart upload with ``Content-Encoding: base64`` carries the model file base64-encoded.
"""

from __future__ import annotations

import binascii
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from tpcflow.serve.http.errors import BadRequestError, ModelFormatError, PayloadTooLargeError

__all__ = ["Bundle", "decode_base64_model", "read_bundle"]

#: most members a bundle may hold
MAX_MEMBERS = 64


@dataclass
class Bundle:
    """The parts of a model bundle."""

    name: str
    params: dict
    model_name: str
    model: bytes
    labels: bytes | None


def read_bundle(data: bytes, max_bytes: int) -> Bundle:
    """Read a TFaaS model bundle (see the module docstring) in memory; nothing is extracted to disk.

    Raises
    ------
    BadRequestError
        If it is no tar archive, holds links, absolute or ``..`` paths, several model folders,
        or no params.json or model file.
    PayloadTooLargeError
        If its files together exceed ``max_bytes`` once decompressed.
    ModelFormatError
        If params.json is not a JSON object.
    """
    try:
        archive = tarfile.open(fileobj=io.BytesIO(data), mode="r:*")
    except (tarfile.TarError, EOFError, OSError) as err:
        raise BadRequestError(f"the upload is neither a multipart form nor a (gzip) tar model bundle: {err}") from None
    files: dict[str, bytes] = {}
    total = 0
    with archive:
        try:
            for count, member in enumerate(archive):
                if count >= MAX_MEMBERS:
                    raise BadRequestError(f"the model bundle holds more than {MAX_MEMBERS} entries")
                path = PurePosixPath(member.name)
                if path.is_absolute() or ".." in path.parts:
                    raise BadRequestError(f"the model bundle holds an unsafe path {member.name!r}")
                if member.isdir():
                    continue
                if not member.isfile():
                    raise BadRequestError(f"the model bundle holds {member.name!r}, which is not a regular file")
                handle = archive.extractfile(member)
                content = handle.read(max_bytes - total + 1) if handle is not None else b""
                total += len(content)
                if total > max_bytes:
                    raise PayloadTooLargeError(None, max_bytes, "model bundle (decompressed)")
                files[str(path)] = content
        except (tarfile.TarError, EOFError, OSError, binascii.Error) as err:
            raise BadRequestError(f"the model bundle is damaged: {err}") from None
    params_paths = [p for p in files if PurePosixPath(p).name == "params.json"]
    if len(params_paths) != 1:
        raise BadRequestError(f"a model bundle holds one params.json, but this one holds {len(params_paths)}")
    folder = PurePosixPath(params_paths[0]).parent
    try:
        params = json.loads(files[params_paths[0]])
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFormatError(f"params is not valid JSON: {err}", file_path=params_paths[0]) from None
    if not isinstance(params, dict):
        raise ModelFormatError("params must be a JSON object", file_path=params_paths[0])
    local = {PurePosixPath(p).relative_to(folder).as_posix(): c for p, c in files.items()
             if PurePosixPath(p).parent == folder}
    labels_name = PurePosixPath(str(params.get("labels") or "labels.txt")).name
    model_name = PurePosixPath(str(params["model"])).name if params.get("model") else None
    if model_name is None:
        others = [n for n in local if n not in ("params.json", labels_name)]
        if len(others) != 1:
            raise BadRequestError(f"params.json names no model file and the bundle folder holds {others}")
        model_name = others[0]
    if model_name not in local:
        raise BadRequestError(f"the model file {model_name!r} of params.json is not in the bundle folder "
                              f"{folder.as_posix()!r}")
    name = params.get("name") if isinstance(params.get("name"), str) else folder.name
    return Bundle(name=name, params=params, model_name=model_name, model=local[model_name],
                  labels=local.get(labels_name))


def decode_base64_model(data: bytes) -> bytes:
    """The model file of a ``Content-Encoding: base64`` upload.

    Raises
    ------
    BadRequestError
        If ``data`` is not base64.
    """
    try:
        return binascii.a2b_base64(data, strict_mode=False)
    except binascii.Error as err:
        raise BadRequestError(f"the model is not base64 (Content-Encoding: base64): {err}") from None
