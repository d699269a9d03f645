"""``tpcflow root-train``: train a user's torch model on ROOT TTrees (MLaaS4HEP ``workflow.py``).

The user's ``my_model.py`` defines ``model(idim) -> torch.nn.Module`` mapping (B, idim)
float32 rows to (B, K) logits (K = 1: binary, BCE loss; K >= 2: classes, cross-entropy).
Rows come from :class:`tpcflow.loader.root_generator.DataGenerator`.

Outputs in ``out_dir``, one model artifact that ``tpcflow client upload`` (or
``root-train --upload``) publishes as it is:

* ``model.pt`` (TorchScript) and ``model_state.pt`` (state dict);
* ``params.json``: the serving params (:class:`tpcflow.serve.http.params.ModelParams`) with the
  ``preprocessing`` (branches, padding, normalisation, identifiers:
  :mod:`tpcflow.loader.root_preprocess`) and the ``output_transform`` (sigmoid for one
  output, softmax for several), so that the server answers probabilities for raw rows;
* ``labels.txt`` (one class name per line), ``upload.json`` (TFaaS's upload description);
* ``train_params.json`` (these parameters, ``idim``, ``columns``), ``specs.json``, ``history.json``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from tpcflow.atomic import atomic_write
from tpcflow.errors import ConfigError
from tpcflow.io.root import save_specs
from tpcflow.loader.root_generator import DataGenerator
from tpcflow.loader.root_torch import RootIterableDataset
from tpcflow.workflows.export import save_torchscript, write_json

__all__ = ["RootTrainParams", "load_user_model", "train_root"]


@dataclass(frozen=True, kw_only=True)
class RootTrainParams:
    """Parameters of ``root-train`` (``params.json``; unknown keys raise ConfigError).

    Reading: ``tree``, ``include``, ``exclude`` (branch globs), ``nevts`` (per file),
    ``chunk_size``, ``pad_value``, ``normalise``, ``specs`` (a specs JSON to reuse instead of
    the first pass).  Training: ``epochs``, ``batch_size``, ``lr`` (Adam), ``validation_split``,
    ``shuffle``, ``seed``, ``use_mask`` (append the mask to the input: idim = 2 W),
    ``num_workers`` (DataLoader processes).  ``identifiers`` (branches kept as event keys,
    never features; default :data:`~tpcflow.loader.root_preprocess.DEFAULT_IDENTIFIERS`),
    ``jdim`` (cap on jagged widths: one number, or ``{branch: cap}``), ``max_chunk_mb`` (most
    memory the rows of one chunk may take).
    """

    epochs: int = 5
    batch_size: int = 256
    lr: float = 1e-3
    validation_split: float = 0.2
    shuffle: bool = True
    seed: int = 0
    use_mask: bool = False
    num_workers: int = 0
    tree: str | None = None
    include: list[str] | None = None
    exclude: list[str] | None = None
    nevts: int | None = None
    chunk_size: int = 10_000
    pad_value: float = 0.0
    normalise: bool = True
    specs: str | None = None
    identifiers: list[str] | None = None
    jdim: int | dict[str, int] | None = None
    max_chunk_mb: float = 1024.0

    @classmethod
    def from_dict(cls, d: dict, *, origin: object = "params") -> RootTrainParams:
        """Build from a dict; unknown keys raise ConfigError naming the closest valid key."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            from tpcflow.errors import closest

            raise ConfigError(f"unknown key {unknown[0]!r} in {origin}; closest: {closest(unknown[0], names, 3)}")
        p = cls(**d)
        if p.epochs < 1 or p.batch_size < 1 or p.lr <= 0 or p.num_workers < 0:
            raise ConfigError(f"epochs, batch_size must be >= 1, lr > 0, num_workers >= 0 in {origin}; got {d}")
        return p

    @classmethod
    def from_json(cls, path) -> RootTrainParams:
        """Read ``params.json``."""
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read params file {path}: {err}") from err
        if not isinstance(d, dict):
            raise ConfigError(f"params file {path} must hold a JSON object")
        return cls.from_dict(d, origin=path)


def load_user_model(path, idim: int) -> torch.nn.Module:
    """Import ``path`` (a .py file defining ``model(idim)``) and return ``model(idim)``.

    ``model(idim)`` returns a ``torch.nn.Module``, or a Keras 3 model: Keras is set to its torch
    backend (``KERAS_BACKEND=torch`` unless set otherwise), where its models are torch modules.

    Raises
    ------
    ConfigError
        If the file is missing, fails to import, has no callable ``model``, or it does not
        return a ``torch.nn.Module``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model file {path} does not exist")
    # Keras 3 user models (MLaaS4HEP's ex_keras.py) run on its torch backend: a keras.Model is then
    # a torch.nn.Module that trains, exports and serves like any other; no TensorFlow needed
    os.environ.setdefault("KERAS_BACKEND", "torch")
    spec = importlib.util.spec_from_file_location(f"tpcflow_user_model_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise ConfigError(f"cannot import model file {path}: {type(err).__name__}: {err}") from err
    fn = getattr(module, "model", None)
    if not callable(fn):
        raise ConfigError(f"model file {path} must define a function model(idim) returning a torch.nn.Module")
    net = fn(idim)
    if not isinstance(net, torch.nn.Module):
        hint = ""
        if type(net).__module__.startswith("keras"):
            hint = (f"; Keras runs here on its torch backend only, but KERAS_BACKEND is "
                    f"{os.environ.get('KERAS_BACKEND')!r}: unset it or set KERAS_BACKEND=torch")
        raise ConfigError(f"model(idim) in {path} returned {type(net).__name__}, expected a torch.nn.Module{hint}")
    return net


def _loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    binary = logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1)
    k = 2 if binary else logits.shape[-1]
    lo, hi = (float(y.min()), float(y.max())) if len(y) else (0.0, 0.0)
    if lo < 0 or hi >= k or (not binary and logits.ndim != 2):
        raise ConfigError(f"the model returns {tuple(logits.shape[1:]) or '(scalar)'} outputs per event but labels "
                          f"span [{lo:g}, {hi:g}]: return 1 output (binary labels 0/1) or K outputs for labels 0..K-1")
    if binary:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits.reshape(-1), y.float())
    return torch.nn.functional.cross_entropy(logits, y.long())


def _correct(logits: torch.Tensor, y: torch.Tensor) -> int:
    if logits.ndim == 2 and logits.shape[1] == 1 or logits.ndim == 1:
        return int(((logits.reshape(-1) > 0).long() == y.long()).sum())
    return int((logits.argmax(1) == y.long()).sum())


def _inputs(batch: dict, use_mask: bool) -> torch.Tensor:
    return torch.cat([batch["x"], batch["mask"].float()], 1) if use_mask else batch["x"]


def train_root(files, labels, model_file, params: RootTrainParams, out_dir, *, progress: bool = True,
               echo=print) -> dict:
    """Train ``model(idim)`` from ``model_file`` on ROOT files and write the outputs.

    Parameters
    ----------
    files : list of str
        ROOT files or URLs.
    labels : list of int or str
        One label per file, or the name of a flat label branch.
    model_file : str or Path
        Python file defining ``model(idim)``.
    params : RootTrainParams
    out_dir : str or Path
        Output folder (created).

    Returns
    -------
    dict
        ``history`` (per epoch: loss, accuracy, val_loss, val_accuracy, seconds), ``idim``,
        ``files`` ({name: path} of what was written), ``events`` (train/validation counts).
    """
    torch.manual_seed(params.seed)
    out = Path(out_dir)
    gen = DataGenerator(files, labels=labels, specs=params.specs, tree=params.tree, include=params.include,
                        exclude=params.exclude, nevts=params.nevts, chunk_size=params.chunk_size,
                        pad_value=params.pad_value, normalise=params.normalise, shuffle=params.shuffle,
                        seed=params.seed, validation_split=params.validation_split, jdim=params.jdim,
                        max_chunk_bytes=int(params.max_chunk_mb * 2**20),
                        **({} if params.identifiers is None else {"identifiers": params.identifiers}))
    if gen._no_labels:
        raise ConfigError("root-train needs labels: one per file (in files.txt or --labels) or a label branch")
    idim = gen.width * (2 if params.use_mask else 1)
    net = load_user_model(model_file, idim)
    opt = torch.optim.Adam(net.parameters(), lr=params.lr)
    n_train, n_val = gen.nevents("train"), gen.nevents("validation")
    echo(f"root-train: {len(files)} file(s), {n_train} train / {n_val} validation events, idim={idim}")
    train_ds = RootIterableDataset(gen, subset="train", batch_size=params.batch_size)
    val_ds = RootIterableDataset(gen, subset="validation", batch_size=params.batch_size)

    def loader(ds):
        return torch.utils.data.DataLoader(ds, batch_size=None, num_workers=params.num_workers)

    history, seen = [], set()
    for epoch in range(params.epochs):
        t0 = time.perf_counter()
        train_ds.set_epoch(epoch)
        net.train()
        tot, correct, n = 0.0, 0, 0
        bar = tqdm(total=n_train, desc=f"epoch {epoch + 1}/{params.epochs}", unit="ev", disable=not progress,
                   file=sys.stderr, leave=False)
        for batch in loader(train_ds):
            logits = net(_inputs(batch, params.use_mask))
            loss = _loss_fn(logits, batch["y"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            b = len(batch["y"])
            tot, n, correct = tot + loss.item() * b, n + b, correct + _correct(logits.detach(), batch["y"])
            bar.update(b)
            if epoch == 0:
                seen.update(torch.unique(batch["y"]).tolist())
            bar.set_postfix(loss=f"{tot / n:.4f}")
        bar.close()
        rec = {"epoch": epoch + 1, "loss": tot / max(n, 1), "accuracy": correct / max(n, 1)}
        if n_val:
            net.eval()
            vt, vc, vn = 0.0, 0, 0
            with torch.no_grad():
                for batch in loader(val_ds):
                    logits = net(_inputs(batch, params.use_mask))
                    b = len(batch["y"])
                    vt += float(_loss_fn(logits, batch["y"])) * b
                    vc, vn = vc + _correct(logits, batch["y"]), vn + b
            rec.update(val_loss=vt / max(vn, 1), val_accuracy=vc / max(vn, 1))
        rec["seconds"] = time.perf_counter() - t0
        history.append(rec)
        echo("epoch {epoch}: loss {loss:.4f} accuracy {accuracy:.3f}".format(**rec)
             + (" val_loss {val_loss:.4f} val_accuracy {val_accuracy:.3f}".format(**rec) if n_val else ""))
    gen.close()
    if gen.preprocessing.truncated:
        echo(f"root-train: truncated to the jdim cap: {gen.preprocessing.truncation_summary()}")
    classes = sorted({int(v) for v in labels}) if not isinstance(labels, str) else sorted(seen)
    prep = dataclasses.replace(gen.preprocessing, use_mask=params.use_mask)
    k = _outputs(net, idim)
    serving = {
        "name": _model_name(out), "description": f"tpcflow root-train model on {prep.specs.tree or 'a TTree'}",
        "model": "model.pt", "labels": "labels.txt", "input_shape": [idim], "datatype": "FP32",
        "keys": prep.columns, "probabilities": "sigmoid" if k == 1 else "softmax",
        "output_transform": "sigmoid" if k == 1 else "softmax", "preprocessing": prep.to_dict(),
    }
    written = {
        "model": save_torchscript(net, torch.zeros(2, idim), out / "model.pt"),
        "state": atomic_write(out / "model_state.pt", lambda tmp: torch.save(net.state_dict(), tmp)),
        "specs": save_specs(gen.specs, out / "specs.json"),
        "params": write_json(out / "params.json", serving),
        "train_params": write_json(out / "train_params.json", {**dataclasses.asdict(params), "idim": idim,
                                                                "columns": gen.columns, "labels": labels}),
        "upload": write_json(out / "upload.json", {"name": serving["name"], "model": "model.pt",
                                                   "params": "params.json", "labels": "labels.txt"}),
        "history": write_json(out / "history.json", history),
    }
    text = "".join(f"{c}\n" for c in classes)
    written["labels"] = atomic_write(out / "labels.txt", lambda tmp: Path(tmp).write_text(text))
    return {"history": history, "idim": idim, "files": {k: str(v) for k, v in written.items()},
            "events": {"train": n_train, "validation": n_val}, "truncated": dict(gen.preprocessing.truncated)}


def _outputs(net: torch.nn.Module, idim: int) -> int:
    """Outputs per event of the trained network (1: a binary logit)."""
    net.eval()
    with torch.no_grad():
        y = net(torch.zeros(1, idim))
    return 1 if y.ndim == 1 else int(y.shape[-1])


def _model_name(out: Path) -> str:
    """A valid model name from the output folder's name (letters, digits, ``_.-``)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", out.resolve().name).strip(".-_")[:64] or "model"
    return name.replace("..", ".")
