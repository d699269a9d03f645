"""``tpcflow export --triton``: a cosmic-tagger checkpoint as a Triton model repository entry.

Writes ``<root>/<name>/config.pbtxt`` (:func:`tpcflow.serve.triton.cosmic_tagger_config`, checked
with Triton's schema) and ``<root>/<name>/<version>/model.pt``: the network traced to TorchScript
on images of the training resolution (the checkpoint's ``data`` entry), taking ``[B, 3, H, W]``
float32 pooled charge and returning logits ``[B, 3, 3, H, W]``.  Beside the model,
``params.json`` describes it for ``tpcflow serve-http --models <root>``, so the same folder is
served by Triton and by tpcflow.  Clients pool the charge as the trained network expects
(``tpcflow submit --kserve``).  The model folder appears atomically (written aside, then renamed).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from tpcflow.errors import ConfigError
from tpcflow.serve.triton import INPUT, OUTPUT, cosmic_tagger_config, parse_model_config
from tpcflow.workflows.export import save_torchscript

__all__ = ["export_triton"]


def export_triton(checkpoint, root, *, name: str = "cosmic_tagger", version: int = 1, max_batch_size: int = 8) -> Path:
    """Export ``checkpoint`` as model ``name`` version ``version`` of the Triton repository ``root``.

    Returns
    -------
    Path
        The model folder ``<root>/<name>``.

    Raises
    ------
    ConfigError
        A sparse network (its voxel lists depend on the data, so it does not trace: serve it with
        ``tpcflow worker``), a checkpoint without its training resolution, or a version that exists.
    DataFormatError
        Not a checkpoint.
    """
    from tpcflow.models.checkpoint import load_model

    data: dict = {}
    model, config = load_model(checkpoint, map_location="cpu", data=data)
    if config is None:
        raise ConfigError(f"{checkpoint}: a TorchScript file: export the tpcflow checkpoint it came from")
    if config.conv_mode == "sparse":
        raise ConfigError(f"{checkpoint}: the sparse network runs on voxel lists whose size depends on each event, "
                          "which TorchScript tracing freezes; serve it with tpcflow worker (MDP) or tpcflow "
                          "serve-http, or train a dense network (network.conv_mode=2D) for Triton")
    if not data.get("image_shape"):
        raise ConfigError(f"{checkpoint} stores no training resolution (data entry): retrain or re-save it")
    h, w = (int(v) for v in data["image_shape"])
    root = Path(root)
    folder = root / name
    if (folder / str(version)).exists():
        raise ConfigError(f"{folder / str(version)} exists: choose another --version or remove it")
    text = cosmic_tagger_config(name, (h, w), n_planes=config.n_planes, n_classes=config.n_classes,
                                max_batch_size=max_batch_size, data=data)
    parse_model_config(text, folder / "config.pbtxt")
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".export-") as tmp:
        stage = Path(tmp) / name
        (stage / str(version)).mkdir(parents=True)
        example = torch.zeros(1, config.n_planes, h, w)
        save_torchscript(model, example, stage / str(version) / "model.pt")
        params = {"name": name, "description": f"cosmic tagger exported from {Path(checkpoint).name}",
                  "input_names": [INPUT], "output_names": [OUTPUT], "input_shape": [config.n_planes, h, w],
                  "datatype": "FP32", "probabilities": "none", "format": "torchscript",
                  "options": {"downsample": int(data.get("downsample", 0)), "image_height": h, "image_width": w}}
        (stage / str(version) / "params.json").write_text(json.dumps(params, indent=1) + "\n")
        (stage / "config.pbtxt").write_text(text)
        if folder.exists():  # another version of the model: add this one, refresh the configuration
            (stage / str(version)).rename(folder / str(version))
            (stage / "config.pbtxt").replace(folder / "config.pbtxt")
        else:
            stage.rename(folder)
    return folder
