"""``tpcflow root-predict``: apply a model trained by ``root-train`` to new ROOT files.

The model is a ``root-train`` output folder (``params.json`` with its preprocessing, and
``model.pt``), run here, or ``http(s)://HOST:PORT/NAME``, a model on a ``tpcflow serve-http``
server, which then applies the preprocessing itself to the raw rows it is sent (KServe v2,
binary tensors).  Either way the rows are built by
:class:`tpcflow.loader.root_preprocess.Preprocessing`, as in training.

Output: one row per event, in file order: the identifier branches the files have (run,
luminosityBlock, event...), ``file`` (index in the input list) and ``entry``, then one score
column per model output after its output transform: ``score`` for one output (the sigmoid
probability), ``score_<label>`` for several (softmax).  ``.root`` gets a flat TTree
``scores`` written with uproot, usable as a friend tree of the input (same entry order, one
file per input file or ``file`` to tell them apart); ``.parquet`` gets a Parquet table
(awkward, with pyarrow).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tpcflow.atomic import atomic_write
from tpcflow.errors import ConfigError
from tpcflow.io.root import open_reader
from tpcflow.loader.root_preprocess import Preprocessing, output_transform

__all__ = ["OUTPUT_TREE", "ScoreModel", "load_score_model", "predict_root"]

#: name of the TTree written to ``.root`` outputs
OUTPUT_TREE = "scores"


@dataclass
class ScoreModel:
    """A model to apply: its preprocessing, labels and a function from raw rows to scores.

    ``scores(raw)`` maps ``(N, width)`` raw rows (NaN where empty) to ``(N, K)`` float64
    probabilities (or raw outputs when the model declares no output transform).
    """

    preprocessing: Preprocessing
    labels: list[str]
    scores: object
    close: object = None


def _local_model(folder: Path) -> ScoreModel:
    import torch

    from tpcflow.serve.http.params import ModelParams

    params_path = folder / "params.json"
    try:
        params = ModelParams.model_validate(json.loads(params_path.read_text()))
    except OSError as err:
        raise ConfigError(f"cannot read the model's params: {err.strerror}\nin file {params_path}") from None
    except ValueError as err:
        raise ConfigError(f"invalid model params: {err}\nin file {params_path}") from None
    if params.preprocessing is None:
        raise ConfigError(f"the model has no preprocessing: root-predict takes a root-train output folder\n"
                          f"in file {params_path}")
    prep = Preprocessing.from_dict(params.preprocessing, origin=params_path)
    model_path = folder / (params.model or "model.pt")
    try:
        net = torch.jit.load(str(model_path), map_location="cpu").eval()
    except (OSError, RuntimeError, ValueError) as err:
        raise ConfigError(f"cannot load the TorchScript model: {str(err).splitlines()[0]}\nin file {model_path}") from None
    labels_path = folder / (params.labels if isinstance(params.labels, str) else "labels.txt")
    labels = params.label_list or (labels_path.read_text().split() if labels_path.is_file() else [])
    transform = params.output_transform or "none"

    def scores(raw: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = net(torch.from_numpy(prep.model_input(raw))).numpy()
        return output_transform(out.reshape(len(raw), -1), transform)

    return ScoreModel(prep, labels, scores)


def _served_model(url: str, token: str | None) -> ScoreModel:
    from tpcflow.serve.http.client import TFaaSClient

    base, _, name = url.rstrip("/").rpartition("/")
    if not name or "://" not in base:
        raise ConfigError(f"--model URL must be http(s)://HOST:PORT/NAME, but got {url!r}")
    client = TFaaSClient(base, token=token)
    found = [m for m in client.models() if m.get("name") == name]
    if not found:
        client.close()
        raise ConfigError(f"no model {name!r} on {base}")
    params = found[0]
    if params.get("preprocessing") is None:
        client.close()
        raise ConfigError(f"model {name!r} on {base} has no preprocessing: upload a root-train output folder")
    prep = Preprocessing.from_dict(params["preprocessing"], origin=url)
    labels = params["labels"] if isinstance(params.get("labels"), list) else []

    def scores(raw: np.ndarray) -> np.ndarray:
        out = client.infer(name, raw.astype(np.float32))[0]  # the server preprocesses and transforms
        return np.asarray(out, dtype=np.float64).reshape(len(raw), -1)

    return ScoreModel(prep, labels, scores, close=client.close)


def load_score_model(model: str | Path, *, token: str | None = None) -> ScoreModel:
    """The model of ``--model``: a root-train output folder, or ``http(s)://HOST:PORT/NAME``.

    Raises
    ------
    ConfigError
        If the folder or server has no such model, or the model has no preprocessing.
    """
    text = str(model)
    if re.match(r"^https?://", text):
        return _served_model(text, token)
    folder = Path(text)
    if not folder.is_dir():
        raise ConfigError(f"--model {text!r} is neither a root-train output folder nor an http(s) URL")
    return _local_model(folder)


def _score_names(k: int, labels: list[str]) -> list[str]:
    if k == 1:
        return ["score"]
    names = [str(labels[i]) if i < len(labels) else str(i) for i in range(k)]
    return [f"score_{re.sub(r'[^A-Za-z0-9_]', '_', n)}" for n in names]


def predict_root(model: str | Path, files: list[str], out: str | Path, *, chunk_size: int = 10_000,
                 token: str | None = None, progress: bool = True, echo=print, max_chunk_bytes: int = 1 << 30) -> dict:
    """Score every event of ``files`` with ``model`` and write ``out`` (``.root`` or ``.parquet``).

    Returns
    -------
    dict
        ``events`` (rows written), ``columns`` (output columns), ``truncated`` (events cut to a
        jagged branch's ``jdim``, per branch), ``out`` (the path).

    Raises
    ------
    ConfigError
        On an unknown output suffix, a model that cannot be used, or no files.
    BranchNotFoundError, DataFormatError
        If a file lacks a branch of the model (naming file and branch).
    """
    out = Path(out)
    if out.suffix not in (".root", ".parquet"):
        raise ConfigError(f"-o must end in .root or .parquet, but got {out.name!r}")
    if not files:
        raise ConfigError("root-predict needs at least one ROOT file")
    if chunk_size <= 0:
        raise ConfigError(f"--chunk-size must be > 0, but got {chunk_size}")
    if out.suffix == ".parquet":
        _require_pyarrow()
    scorer = load_score_model(model, token=token)
    prep = scorer.preprocessing
    columns: dict[str, list[np.ndarray]] = {}
    try:
        prep.check_chunk(chunk_size, max_chunk_bytes, "--chunk-size")
        # only the model's branches are selected (classifying every branch of a NanoAOD costs more than reading)
        readers = [open_reader(f, tree=prep.specs.tree or None, include=prep.branches) for f in files]
        total = sum(r.num_entries for r in readers)
        bar = tqdm(total=total, unit="ev", desc="root-predict", disable=not progress, file=sys.stderr)
        for i, reader in enumerate(readers):
            names = set(reader.all_branches())
            ids = [b for b in prep.identifiers if b in names]
            for start, stop, arrays in reader.iterate(chunk_size, branches=prep.branches + ids):
                s = scorer.scores(prep.raw_rows(arrays))
                if not np.all(np.isfinite(s)):
                    bad = int(np.count_nonzero(~np.isfinite(s).all(axis=1)))
                    raise ConfigError(f"the model gave NaN or infinite scores for {bad} events of entries "
                                      f"[{start}, {stop})\nin file {reader.source}")
                chunk = {b: np.asarray(arrays[b]) for b in ids}
                chunk["file"] = np.full(stop - start, i, dtype=np.int32)
                chunk["entry"] = np.arange(start, stop, dtype=np.int64)
                for name, col in zip(_score_names(s.shape[1], scorer.labels), s.T, strict=True):
                    chunk[name] = col.astype(np.float32)
                for k, v in chunk.items():
                    columns.setdefault(k, []).append(v)
                bar.update(stop - start)
            reader.close()
        bar.close()
    finally:
        if scorer.close is not None:
            scorer.close()
    table = {k: np.concatenate(v) for k, v in columns.items()}
    _write(out, table)
    if prep.truncated:
        echo(f"root-predict: truncated to the model's jdim: {prep.truncation_summary()}")
    n = len(next(iter(table.values()))) if table else 0
    return {"events": n, "columns": list(table), "truncated": dict(prep.truncated), "out": str(out)}


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ConfigError("Parquet output needs pyarrow: pip install 'tpcflow[parquet]' (or write .root)") from None


def _write(out: Path, table: dict[str, np.ndarray]) -> None:
    if out.suffix == ".root":
        import uproot

        def write(tmp: Path) -> None:
            with uproot.recreate(tmp) as f:
                f[OUTPUT_TREE] = table

        atomic_write(out, write)
    else:
        import awkward as ak

        atomic_write(out, lambda tmp: ak.to_parquet(ak.Array(table), tmp))
