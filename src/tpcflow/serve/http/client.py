"""Python client of the TFaaS-compatible routes (Python 3; one reused HTTP session).

Source: the TFaaS client ``tfaas_client.py`` (upload, models, delete, predict,
image), which opened a new connection per call and no longer imports on
Python 3; this one keeps one :class:`httpx.Client` (keep-alive) for its lifetime.
"""

from __future__ import annotations

import json
import mimetypes
import os
from pathlib import Path

import httpx
import numpy as np

from tpcflow.errors import ServiceError
from tpcflow.serve.http.params import DATATYPES
from tpcflow.serve.http.settings import TOKEN_ENV

__all__ = ["HTTPServiceError", "TFaaSClient"]


class HTTPServiceError(ServiceError):
    """The server answered with an error status, or could not be reached.

    Attributes
    ----------
    status : int or None
        HTTP status (None if no answer).
    message : str
        The server's error message.
    """

    def __init__(self, message: str, status: int | None = None, url: str | None = None):
        self.status = status
        self.message = message
        self.url = url
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" from {self.url}" if self.url else ""
        code = f"HTTP {self.status}{where}: " if self.status is not None else ""
        return f"{code}{self.message}"


class TFaaSClient:
    """Client of a tpcflow (or TFaaS-compatible) model server.

    Parameters
    ----------
    url : str
        Server address, e.g. ``"http://127.0.0.1:8083"``.
    token : str, optional
        API token for upload and delete; default ``$TPCFLOW_API_TOKEN``.
    timeout : float
        Per-request timeout [s].

    Examples
    --------
    >>> with TFaaSClient("http://127.0.0.1:8083") as c:  # doctest: +SKIP
    ...     c.predict({"model": "mlp", "keys": ["a", "b"], "values": [[1.0, 2.0]]})
    """

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0):
        self.url = url.rstrip("/")
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def __enter__(self) -> TFaaSClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session."""
        self._http.close()

    def _request(self, method: str, path: str, **kwargs: object):
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as err:
            raise HTTPServiceError(f"cannot reach the server {self.url}: {err}") from None
        if response.status_code >= 400:
            try:
                body = response.json()
                message = body.get("error") or body.get("detail") or response.text
            except (ValueError, AttributeError):
                message = response.text
            raise HTTPServiceError(str(message), status=response.status_code, url=f"{self.url}{path}")
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    def upload(self, name: str, params: dict, model_path: str | Path, labels_path: str | Path | None = None) -> dict:
        """Upload ``model_path`` (TorchScript, tpcflow checkpoint or .onnx) as a new version of ``name``.

        Raises
        ------
        HTTPServiceError
            On 401/403 (token), 400 (invalid model or params), 413 (too large).
        """
        model_path = Path(model_path)
        with open(model_path, "rb") as model_file:
            files: dict[str, tuple] = {
                "params": ("params.json", json.dumps(params).encode(), "application/json"),
                "model": (model_path.name, model_file, "application/octet-stream"),
            }
            if labels_path is not None:
                files["labels"] = ("labels.txt", Path(labels_path).read_bytes(), "text/plain")
            return self._request("POST", "/upload", data={"name": name}, files=files)

    def models(self) -> list[dict]:
        """Params of every model on the server, each with its ``versions``."""
        return self._request("GET", "/models")

    def delete(self, name: str, version: int | None = None) -> dict:
        """Delete model ``name`` (every version, or one)."""
        params = {"version": version} if version is not None else None
        return self._request("DELETE", f"/delete/{name}", params=params)

    def predict(self, payload: dict) -> dict:
        """``POST /json`` with ``{"model", "keys", "values"}``; returns ``{"predictions", ...}``."""
        return self._request("POST", "/json", json=payload)

    def metadata(self, name: str) -> dict:
        """KServe v2 model metadata (``GET /v2/models/<name>``): name, versions, platform, inputs, outputs.

        Raises
        ------
        HTTPServiceError
            Unknown model, or the server cannot be reached.
        """
        return self._request("GET", f"/v2/models/{name}")

    def infer(self, name: str, x: np.ndarray, *, parameters: dict | None = None) -> list[np.ndarray]:
        """KServe v2 ``infer`` of one input tensor ``x``, both ways binary; returns the outputs.

        ``x`` is sent little-endian with its dtype (float32 -> FP32...) under the model's first
        input name; ``parameters`` go in the request (e.g. ``{"preprocessed": True}``).

        Raises
        ------
        HTTPServiceError
            On an error answer, or an answer that is not binary tensors.
        """
        from tpcflow.serve.http.tensors import HEADER, tensor_datatype

        x = np.ascontiguousarray(x)
        blob = x.astype(x.dtype.newbyteorder("<"), copy=False).tobytes()
        meta = self.metadata(name)
        request = {"inputs": [{"name": meta["inputs"][0]["name"], "shape": list(x.shape),
                               "datatype": tensor_datatype(x.dtype), "parameters": {"binary_data_size": len(blob)}}],
                   "parameters": {"binary_data_output": True, **(parameters or {})}}
        header = json.dumps(request).encode()
        path = f"/v2/models/{name}/infer"
        try:
            response = self._http.post(path, content=header + blob, headers={HEADER: str(len(header))})
        except httpx.HTTPError as err:
            raise HTTPServiceError(f"cannot reach the server {self.url}: {err}") from None
        if response.status_code >= 400:
            raise HTTPServiceError(str(response.json().get("error", response.text)), status=response.status_code,
                                   url=f"{self.url}{path}")
        n = int(response.headers.get(HEADER, len(response.content)))
        answer = json.loads(response.content[:n])
        outputs, offset = [], n
        for out in answer["outputs"]:
            size = int((out.get("parameters") or {}).get("binary_data_size", -1))
            if size < 0:
                raise HTTPServiceError(f"output {out['name']!r} came back as JSON, not binary", url=self.url + path)
            dtype = np.dtype(DATATYPES[out["datatype"]]).newbyteorder("<")
            outputs.append(np.frombuffer(response.content[offset:offset + size], dtype=dtype).reshape(out["shape"]))
            offset += size
        return outputs

    def image(self, path: str | Path, model: str | None = None) -> dict:
        """Classify a PNG or JPEG file with ``model`` (default: the server's); returns labels with probabilities."""
        path = Path(path)
        mime = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        data = {"model": model} if model else {}
        with open(path, "rb") as f:
            return self._request("POST", "/image", data=data, files={"image": (path.name, f, mime)})

    def status(self) -> dict:
        """Server status."""
        return self._request("GET", "/status")
