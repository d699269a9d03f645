"""hep_resnet: train a small ResNet to classify HEP images (MLaaS4HEP ``hep_resnet.py``).

Two inputs:

* a folder of image files (PNG/JPEG, read with matplotlib/Pillow) plus ``labels.csv``
  (header ``file,label``; labels may be names or integers, names are sorted to class ids);
  images may also sit in ``<folder>/train/`` as in MLaaS4HEP;
* larcv2 ROOT files, one label per file (``image2d`` trees: (E, P, R, C) per file).

Preprocessing (stored with the model in ``params.json``, applied by the server to the images
it receives): negative values -> 0, ``log1p``, then divide by the training set's maximum, so
inputs lie in [0, 1] (:mod:`tpcflow.loader.image_preprocess`).  8-bit image files are read as
``pixel / 255``.
"""

from __future__ import annotations

import csv
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from tpcflow.atomic import atomic_write
from tpcflow.errors import ConfigError, DataFormatError
from tpcflow.loader.image_preprocess import ImagePreprocessing
from tpcflow.models.resnet import ResNetClassifier
from tpcflow.workflows.export import save_torchscript, write_json

__all__ = ["ImageTrainResult", "load_image_folder", "load_larcv2_images", "preprocess", "save_image_model",
           "train_image_classifier"]


def _read_larcv2(path, producer):
    from tpcflow.io.larcv_root import list_larcv2_trees, read_larcv2_images

    if producer is None:
        trees = [t for t in list_larcv2_trees(path) if t.startswith("image2d_") and t.endswith("_tree")]
        if len(trees) != 1:
            raise DataFormatError(f"found image2d trees {trees}; name the producer", file_path=path)
        producer = trees[0][len("image2d_"):-len("_tree")]
    images, _metas = read_larcv2_images(path, producer=producer)
    return np.asarray(images, dtype=np.float32)


def load_larcv2_images(files, labels, producer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read larcv2 image2d entries of several files, one label per file.

    Returns ``images`` (N, P, R, C) float32 and ``labels`` (N,) int64.  Raises ConfigError if
    the counts differ and DataFormatError if files hold images of different shapes.
    """
    files, labels = list(files), [int(v) for v in labels]
    if len(files) != len(labels):
        raise ConfigError(f"got {len(labels)} labels for {len(files)} larcv2 files; give one label per file")
    xs = [_read_larcv2(f, producer) for f in files]
    shapes = {x.shape[1:] for x in xs}
    if len(shapes) != 1:
        raise DataFormatError(f"larcv2 files hold images of different shapes {sorted(shapes)}", file_path=files)
    y = np.concatenate([np.full(len(x), lab, dtype=np.int64) for x, lab in zip(xs, labels)])
    return np.concatenate(xs).astype(np.float32), y


def load_image_folder(folder, labels_csv) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read images named in ``labels_csv`` (``file,label``) from ``folder`` (or ``folder/train``).

    Returns ``images`` (N, C, H, W) float32, ``labels`` (N,) int64 and the class names
    (index = class id).  Raises DataFormatError naming the file for a missing or
    differently-sized image, or a malformed CSV row.
    """
    import matplotlib.image as mpimg

    folder, labels_csv = Path(folder), Path(labels_csv)
    base = folder / "train" if (folder / "train").is_dir() else folder
    with open(labels_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise DataFormatError("labels CSV needs a header with columns 'file' and 'label'", file_path=labels_csv)
    raw = [r["label"].strip() for r in rows]
    names = sorted(set(raw), key=lambda v: (not v.lstrip("-").isdigit(), int(v) if v.lstrip("-").isdigit() else 0, v))
    images = []
    for i, r in enumerate(rows):
        p = base / r["file"].strip()
        if not p.is_file():
            raise DataFormatError("image file listed in labels CSV does not exist", file_path=p, entry=i)
        img = mpimg.imread(p)
        # 8-bit files as pixel / 255, as matplotlib reads PNG and as POST /image decodes every image
        img = img.astype(np.float32) / 255.0 if img.dtype == np.uint8 else np.asarray(img, dtype=np.float32)
        img = img[None] if img.ndim == 2 else np.moveaxis(img, -1, 0)
        if images and img.shape != images[0].shape:
            raise DataFormatError(f"image shape {img.shape} differs from {images[0].shape}", file_path=p, entry=i)
        images.append(img)
    return np.stack(images), np.array([names.index(v) for v in raw], dtype=np.int64), names


def preprocess(images: np.ndarray, scale: float | None = None) -> tuple[np.ndarray, float]:
    """Return ``log1p(max(x, 0)) / scale`` as float32 and the scale (default: the max of the log).

    The transform is :class:`tpcflow.loader.image_preprocess.ImagePreprocessing`, the one the
    server applies to the images it receives.
    """
    prep = ImagePreprocessing.fit(images) if scale is None else ImagePreprocessing(scale)
    return prep.apply(images), prep.scale


@dataclass
class ImageTrainResult:
    """A trained classifier with its preprocessing scale, class names and per-epoch history."""

    model: torch.nn.Module
    scale: float
    classes: list[str]
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)


def train_image_classifier(images: np.ndarray, labels: np.ndarray, *, classes=None, epochs: int = 5,
                           batch_size: int = 8, lr: float = 1e-3, validation_split: float = 0.0, seed: int = 0,
                           widths=(8, 16, 32), input_pool: int = 4, progress: bool = False,
                           echo=None) -> ImageTrainResult:
    """Train a :class:`~tpcflow.models.resnet.ResNetClassifier` with Adam and cross-entropy.

    Parameters
    ----------
    images : (N, C, H, W) array
        Raw images (any positive scale; see :func:`preprocess`).
    labels : (N,) int
        Class ids 0..K-1.
    validation_split : float
        Fraction held out at random (seeded) for ``val_loss`` / ``val_accuracy``.
    input_pool : int
        Average-pool factor applied inside the model (4: 256x256 -> 64x64).

    Returns
    -------
    ImageTrainResult
        ``history``: per epoch ``loss`` (mean training loss), ``accuracy``, optional
        ``val_loss``, ``val_accuracy``, ``seconds``.
    """
    images, labels = np.asarray(images), np.asarray(labels, dtype=np.int64)
    if images.ndim != 4 or len(images) != len(labels) or len(labels) == 0:
        raise ConfigError(f"need images (N, C, H, W) and labels (N,), got {images.shape} and {labels.shape}")
    if not 0.0 <= validation_split < 1.0:
        raise ConfigError(f"validation_split must be in [0, 1), but got {validation_split}")
    k = int(labels.max()) + 1
    classes = list(classes) if classes is not None else [str(i) for i in range(k)]
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    is_val = rng.random(len(labels)) < validation_split
    x, scale = preprocess(images[~is_val])
    xv, _ = preprocess(images[is_val], scale)
    y, yv = labels[~is_val], labels[is_val]
    config = {"in_channels": int(images.shape[1]), "num_classes": max(k, len(classes)), "widths": list(widths),
              "input_pool": int(input_pool)}
    net = ResNetClassifier(**config)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    history = []
    for epoch in range(epochs):
        t0 = time.perf_counter()
        net.train()
        perm = torch.from_numpy(rng.permutation(len(yt)))
        tot, correct = 0.0, 0
        for s in tqdm(range(0, len(yt), batch_size), desc=f"epoch {epoch + 1}/{epochs}", disable=not progress,
                      file=sys.stderr, leave=False):
            idx = perm[s:s + batch_size]
            logits = net(xt[idx])
            loss = torch.nn.functional.cross_entropy(logits, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yt[idx]).sum())
        rec = {"epoch": epoch + 1, "loss": tot / len(yt), "accuracy": correct / len(yt)}
        if len(yv):
            net.eval()
            with torch.no_grad():
                lv = net(torch.from_numpy(xv))
                rec.update(val_loss=float(torch.nn.functional.cross_entropy(lv, torch.from_numpy(yv))),
                           val_accuracy=float((lv.argmax(1).numpy() == yv).mean()))
        rec["seconds"] = time.perf_counter() - t0
        history.append(rec)
        if echo:
            echo(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items()))
    net.eval()
    return ImageTrainResult(model=net, scale=scale, classes=classes, history=history, config=config)


def save_image_model(result: ImageTrainResult, out_dir, example_shape) -> dict:
    """Write ``model.pt`` (TorchScript), ``model_state.pt``, ``params.json`` and ``labels.txt``.

    ``example_shape`` is one input's (C, H, W).  Returns {name: path}.
    """
    out = Path(out_dir)
    example = torch.zeros((1, *example_shape))
    params = {"model": "hep_resnet", **result.config, "input_shape": list(example_shape),
              "preprocess": "log1p(max(x,0))/scale", "scale": result.scale, "history": result.history,
              "preprocessing": ImagePreprocessing(result.scale).to_dict()}
    text = "".join(f"{c}\n" for c in result.classes)
    return {
        "model": str(save_torchscript(result.model, example, out / "model.pt")),
        "state": str(atomic_write(out / "model_state.pt", lambda t: torch.save(result.model.state_dict(), t))),
        "params": str(write_json(out / "params.json", params)),
        "labels": str(atomic_write(out / "labels.txt", lambda t: Path(t).write_text(text))),
    }
