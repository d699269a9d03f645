"""On-disk, versioned model repository.

Layout (the Triton model-repository convention with TFaaS files)::

    <root>/<name>/<version>/model.pt | model.onnx
                            params.json
                            labels.txt      (optional, one label per line)

Versions are positive integers; an upload adds ``max + 1``.  A version is
written in a temporary directory under ``<root>/.tmp`` and renamed into place,
so readers never see half a model; a delete renames the model directory into
``<root>/.tmp`` before removing it.  Names must match
:data:`tpcflow.serve.http.params.NAME_PATTERN`, and every path is checked to
stay inside ``<root>``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from tpcflow.errors import ConfigError
from tpcflow.serve.http.errors import BadRequestError, ModelFormatError, UnknownModelError
from tpcflow.serve.http.loading import FORMAT_FILES, detect_format, load_runner
from tpcflow.serve.http.params import ModelParams, valid_name

__all__ = ["ModelEntry", "ModelRepository", "check_name", "parse_labels"]

_TMP = ".tmp"


def check_name(name: object) -> str:
    """Return ``name`` if it is a safe model name.

    Raises
    ------
    BadRequestError
        If it is not (it could escape the repository, or has odd characters).
    """
    if not valid_name(name):
        raise BadRequestError(
            f"invalid model name: {name!r}; use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit, without '..'"
        )
    return name  # type: ignore[return-value]


def parse_labels(data: bytes, source: str = "labels") -> list[str]:
    """Decode a labels file: UTF-8, one label per line, surrounding blank lines dropped."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ModelFormatError(f"labels file is not UTF-8 text: {err}", file_path=source) from None
    return [line.strip() for line in text.strip().splitlines()]


@dataclass(frozen=True)
class ModelEntry:
    """One stored model version."""

    name: str
    version: int
    path: Path
    params: ModelParams
    labels: list[str] | None

    @property
    def model_file(self) -> Path:
        return self.path / FORMAT_FILES[self.params.format or "torchscript"]


class ModelRepository:
    """The model repository rooted at ``root`` (created if missing)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"--models {root}: the model repository must be a folder, and this is a file")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / _TMP).mkdir(exist_ok=True)
        self._lock = threading.Lock()
        # name -> (directory mtime_ns, latest version): avoids a scandir per request
        self._latest: dict[str, tuple[int, int]] = {}

    # ------------------------------------------------------------------ paths
    def _model_dir(self, name: str) -> Path:
        path = self.root / check_name(name)
        if path.parent != self.root:  # defence in depth; check_name already forbids separators
            raise BadRequestError(f"invalid model name: {name!r}")
        return path

    # ----------------------------------------------------------------- queries
    def names(self) -> list[str]:
        """Sorted names of the stored models."""
        try:
            return sorted(
                e.name for e in os.scandir(self.root) if e.is_dir() and valid_name(e.name) and self.versions(e.name)
            )
        except FileNotFoundError:
            return []

    def versions(self, name: str) -> list[int]:
        """Sorted versions of model ``name`` (empty if unknown)."""
        try:
            return sorted(int(e.name) for e in os.scandir(self._model_dir(name)) if e.name.isdigit() and e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []

    def resolve(self, name: str, version: int | None = None) -> int:
        """Version to serve for ``name``: ``version`` if it exists, else the latest.

        Raises
        ------
        BadRequestError
            If the name is not a valid model name.
        UnknownModelError
            If the model or the version does not exist.
        """
        path = self._model_dir(name)
        if version is not None:
            if version >= 1 and (path / str(version) / "params.json").is_file():
                return version
            if not self.versions(name):
                raise UnknownModelError(name, available=self.names())
            raise UnknownModelError(name, version=version, available=[str(v) for v in self.versions(name)])
        try:
            mtime = os.stat(path).st_mtime_ns
        except (FileNotFoundError, NotADirectoryError):
            raise UnknownModelError(name, available=self.names()) from None
        cached = self._latest.get(name)
        if cached is not None and cached[0] == mtime:
            return cached[1]
        versions = self.versions(name)
        if not versions:
            raise UnknownModelError(name, available=self.names())
        self._latest[name] = (mtime, versions[-1])
        return versions[-1]

    def entry(self, name: str, version: int | None = None) -> ModelEntry:
        """Read params and labels of a model version (latest if None)."""
        version = self.resolve(name, version)
        path = self._model_dir(name) / str(version)
        try:
            params = ModelParams.model_validate_json((path / "params.json").read_bytes())
        except FileNotFoundError:
            raise UnknownModelError(name, version=version) from None
        except ValidationError as err:
            raise ModelFormatError(f"invalid params.json: {err}", file_path=path / "params.json") from None
        labels_path = path / "labels.txt"
        labels = parse_labels(labels_path.read_bytes(), str(labels_path)) if labels_path.is_file() else None
        if labels is None:
            labels = params.label_list
        return ModelEntry(name=name, version=version, path=path, params=params, labels=labels)

    def describe(self) -> list[dict]:
        """Params of the latest version of every model, with ``versions``."""
        out = []
        for name in self.names():
            try:
                entry = self.entry(name)
            except (UnknownModelError, ModelFormatError):
                continue  # deleted meanwhile, or a broken directory made by hand
            info = entry.params.model_dump(mode="json", exclude_none=True)
            info["versions"] = self.versions(name)
            out.append(info)
        return out

    # ----------------------------------------------------------------- changes
    def add(self, name: str, params: dict | ModelParams, model_file: Path, *, filename: str | None = None,
            labels: list[str] | None = None) -> ModelEntry:
        """Store a new version of model ``name`` and return it.

        ``model_file`` is moved into the repository.  The model is loaded once to
        check that it works before the version becomes visible.

        Raises
        ------
        BadRequestError, ModelFormatError
            If the name, the params or the model file are invalid.
        """
        check_name(name)
        raw = params.model_dump() if isinstance(params, ModelParams) else dict(params)
        raw["name"] = name
        fmt = detect_format(Path(model_file), filename)
        raw["format"] = fmt
        raw.pop("version", None)
        try:
            parsed = ModelParams.model_validate(raw)
        except ValidationError as err:
            raise ModelFormatError(f"invalid params: {err}", file_path="params.json") from None
        staging = Path(tempfile.mkdtemp(prefix="upload-", dir=self.root / _TMP))
        try:
            target_file = staging / FORMAT_FILES[fmt]
            shutil.move(str(model_file), target_file)
            load_runner(target_file, fmt, name, parsed.input_names)  # raises ModelFormatError if unusable
            if labels is not None:
                (staging / "labels.txt").write_text("\n".join(labels) + "\n")
            model_dir = self._model_dir(name)
            with self._lock:
                model_dir.mkdir(exist_ok=True)
                version = (self.versions(name) or [0])[-1] + 1
                parsed = parsed.model_copy(update={"version": version})
                (staging / "params.json").write_text(parsed.model_dump_json(indent=1, exclude_none=True))
                os.rename(staging, model_dir / str(version))
                self._latest.pop(name, None)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return ModelEntry(name=name, version=version, path=model_dir / str(version), params=parsed,
                          labels=labels if labels is not None else parsed.label_list)

    def delete(self, name: str, version: int | None = None) -> list[int]:
        """Remove model ``name`` (every version, or one); return the versions removed.

        Raises
        ------
        UnknownModelError
            If it does not exist.
        """
        model_dir = self._model_dir(name)
        with self._lock:
            versions = self.versions(name)
            if not versions:
                raise UnknownModelError(name, available=self.names())
            if version is not None and version not in versions:
                raise UnknownModelError(name, version=version, available=[str(v) for v in versions])
            doomed = Path(tempfile.mkdtemp(prefix="delete-", dir=self.root / _TMP))
            if version is None or versions == [version]:
                os.rename(model_dir, doomed / "model")
                removed = versions
            else:
                os.rename(model_dir / str(version), doomed / "model")
                removed = [version]
            self._latest.pop(name, None)
        shutil.rmtree(doomed, ignore_errors=True)
        return removed

    def scratch_dir(self) -> Path:
        """Directory for spooling uploads (same file system as the repository)."""
        return self.root / _TMP
