"""Configuration of the HTTP model server (pydantic; unknown keys raise)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from tpcflow.errors import ConfigError
from tpcflow.serve.http.params import NAME_PATTERN

__all__ = ["TOKEN_ENV", "Settings"]

#: environment variable holding the API token for upload and delete
TOKEN_ENV = "TPCFLOW_API_TOKEN"

MiB = 1024 * 1024


class Settings(BaseModel):
    """Server settings.

    Attributes
    ----------
    models_dir : Path
        Model repository: ``<models_dir>/<name>/<version>/{model.pt|model.onnx, params.json, labels.txt}``.
    api_token : SecretStr or None
        Token required (``Authorization: Bearer <token>``) by upload and delete.
        None disables both (HTTP 403).  :meth:`load` fills it from ``$TPCFLOW_API_TOKEN``.
    max_upload_bytes : int
        Largest ``POST /upload`` body [bytes] (HTTP 413 above).
    max_request_bytes : int
        Largest body of every other request [bytes] (HTTP 413 above).
    max_image_pixels : int
        Largest decoded image for ``POST /image`` [pixels].
    max_request_elements : int
        Most numbers in one inference request (``/json`` values, KServe input shapes);
        HTTP 413 above.  The default is what the largest request body holds as binary FP32.
    parse_processes : int
        Helper processes that parse bodies above 64 KiB, so that the server keeps
        answering meanwhile (JSON parsing holds Python's GIL); 0 parses in a thread.
    batching : bool
        Group concurrent inference requests into one model call.
    max_batch_size : int
        Most rows (samples) per model call when batching.
    max_batch_delay_ms : float
        How long the batcher waits for more requests once one is queued [ms];
        0 groups only what is already waiting.
    cache_size : int
        Most models (name, version) kept loaded; least recently used evicted.
    default_model : str or None
        Model used by ``/json``, ``/proto`` and ``/image`` requests that name none (TFaaS's
        format has no ``model`` field); without it, the repository's only model.  ``POST
        /params`` changes it while the server runs.
    torch_threads : int or None
        ``torch.set_num_threads`` applied by ``tpcflow serve-http`` (None leaves it).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    models_dir: Path
    api_token: SecretStr | None = None
    max_upload_bytes: int = Field(default=512 * MiB, gt=0)
    max_request_bytes: int = Field(default=16 * MiB, gt=0)
    max_image_pixels: int = Field(default=16 * MiB, gt=0)
    max_request_elements: int = Field(default=4 * MiB, gt=0)
    parse_processes: int = Field(default=1, ge=0, le=64)
    batching: bool = True
    max_batch_size: int = Field(default=64, ge=1)
    max_batch_delay_ms: float = Field(default=0.0, ge=0.0, le=1000.0)
    cache_size: int = Field(default=8, ge=1)
    default_model: str | None = Field(default=None, pattern=NAME_PATTERN)
    torch_threads: int | None = Field(default=None, ge=1)

    @classmethod
    def load(cls, config: str | Path | None = None, **overrides: object) -> Settings:
        """Build settings from a YAML/JSON file, the environment, then ``overrides``.

        Parameters
        ----------
        config : str or Path, optional
            File with a mapping of the fields above (``.json``, ``.yaml``, ``.yml``);
            a ``serve_http:`` top-level key is used when present.
        **overrides
            Field values that win over the file (None values are ignored).

        Raises
        ------
        ConfigError
            If the file cannot be read, or a key or value is invalid.
        """
        values: dict[str, object] = {}
        if config is not None:
            path = Path(config)
            try:
                text = path.read_text()
            except OSError as err:
                raise ConfigError(f"cannot read server config: {err}\nin file {path}") from None
            try:
                if path.suffix == ".json":
                    data = json.loads(text)
                else:
                    import yaml

                    data = yaml.safe_load(text)
            except Exception as err:  # yaml and json raise their own types
                raise ConfigError(f"server config is not valid {path.suffix[1:] or 'yaml'}: {err}\nin file {path}") from None
            if isinstance(data, dict) and isinstance(data.get("serve_http"), dict):
                data = data["serve_http"]
            if not isinstance(data, dict):
                raise ConfigError(f"server config must be a mapping, but got {type(data).__name__}\nin file {path}")
            values.update(data)
        if values.get("api_token") in (None, "") and os.environ.get(TOKEN_ENV):
            values["api_token"] = os.environ[TOKEN_ENV]
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except ValidationError as err:
            where = f"\nin file {config}" if config is not None else ""
            raise ConfigError(f"invalid server settings: {err}{where}") from None

    def token(self) -> str | None:
        """The API token in clear, or None."""
        return self.api_token.get_secret_value() if self.api_token is not None else None
