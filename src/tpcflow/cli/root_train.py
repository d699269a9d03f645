"""``tpcflow root-train``: train on ROOT TTrees (MLaaS4HEP workflow) or classify HEP images (hep_resnet)."""

from __future__ import annotations

import json
from pathlib import Path

HELP = "train a model on ROOT TTrees (MLaaS4HEP workflow) or a ResNet on HEP images; optional upload"
DESCRIPTION = (
    "Tabular mode: --files files.txt (one ROOT file or URL per line, optionally followed by an integer "
    "label) --model my_model.py (defines model(idim) -> torch module) --params params.json. "
    "Labels: in files.txt, or --labels as comma-separated per-file labels, a text file with one label per "
    "line, or the name of a label branch. "
    "Image mode (hep_resnet): --images DIR --labels labels.csv, or --larcv2 FILE:LABEL ... "
    "Writes model.pt (TorchScript), model_state.pt, params.json (serving params with the preprocessing), "
    "labels.txt, upload.json, train_params.json and specs.json into --out; "
    "--upload URL publishes them to a tpcflow/TFaaS HTTP model server."
)


def add_arguments(parser) -> None:
    """Add root-train options."""
    parser.add_argument("--files", help="files.txt: ROOT files/URLs, one per line, optional integer label after it")
    parser.add_argument("--labels", help="per-file labels 'a,b,...', a file with one label per line, a label "
                        "branch name; image mode: labels.csv (file,label)")
    parser.add_argument("--model", help="Python file defining model(idim) -> torch.nn.Module (tabular mode)")
    parser.add_argument("--params", help="params.json (see tpcflow.workflows.root_train.RootTrainParams; image "
                        "mode: epochs, batch_size, lr, validation_split, seed, widths, input_pool)")
    parser.add_argument("--tree", help="TTree name (overrides params.json)")
    parser.add_argument("--include", action="append", help="branch glob to include (repeatable; overrides params)")
    parser.add_argument("--exclude", action="append", help="branch glob to exclude (repeatable; overrides params)")
    parser.add_argument("--images", help="image mode: folder of images (or its train/ subfolder)")
    parser.add_argument("--larcv2", nargs="+", metavar="FILE:LABEL", help="image mode: larcv2 ROOT files with labels")
    parser.add_argument("--out", default="root-train-out", help="output folder")
    parser.add_argument("--upload", metavar="URL", help="publish the trained model to this HTTP model server")
    parser.add_argument("--name", help="model name for --upload (default: the output folder name)")
    parser.add_argument("--token", help="bearer token for --upload")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _labels(spec: str | None, per_line: list[int] | None, n: int):
    from tpcflow.errors import ConfigError

    if spec is None:
        if per_line is None:
            raise ConfigError("no labels: put one after each file in files.txt or give --labels")
        return per_line
    if Path(spec).is_file():
        values = [v.strip() for v in Path(spec).read_text().split()]
    elif "," in spec or spec.lstrip("-").isdigit():
        values = [v.strip() for v in spec.split(",") if v.strip()]
    else:
        return spec  # a label branch
    try:
        labels = [int(v) for v in values]
    except ValueError as err:
        raise ConfigError(f"--labels {spec!r}: labels must be integers") from err
    if len(labels) != n:
        raise ConfigError(f"--labels gives {len(labels)} labels for {n} files")
    return labels


def _read_params(path) -> dict:
    from tpcflow.errors import ConfigError

    if not path:
        return {}
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"cannot read params file {path}: {err}") from err
    if not isinstance(d, dict):
        raise ConfigError(f"params file {path} must hold a JSON object")
    return d


def _upload(args, model_path: Path, params: dict, labels_path: Path) -> None:
    name = args.name or Path(args.out).resolve().name
    from tpcflow.serve.http.client import TFaaSClient

    with TFaaSClient(args.upload, token=args.token) as client:
        reply = client.upload(name, params, model_path, labels_path)
    print(f"uploaded {name!r} to {args.upload}: {reply}")


def _run_images(args) -> int:
    import numpy as np

    from tpcflow.errors import ConfigError
    from tpcflow.workflows import image_classify as ic

    opts = _read_params(args.params)
    allowed = {"epochs", "batch_size", "lr", "validation_split", "seed", "widths", "input_pool"}
    if set(opts) - allowed:
        raise ConfigError(f"unknown image-mode params {sorted(set(opts) - allowed)}; allowed: {sorted(allowed)}")
    if args.images:
        if not args.labels:
            raise ConfigError("--images needs --labels labels.csv")
        x, y, classes = ic.load_image_folder(args.images, args.labels)
    else:
        pairs = [p.rsplit(":", 1) for p in args.larcv2]
        if any(len(p) != 2 for p in pairs):
            raise ConfigError("--larcv2 takes FILE:LABEL items")
        x, y = ic.load_larcv2_images([p[0] for p in pairs], [int(p[1]) for p in pairs])
        classes = [str(c) for c in range(int(np.max(y)) + 1)]
    result = ic.train_image_classifier(x, y, classes=classes, progress=not args.no_progress, echo=print, **opts)
    written = ic.save_image_model(result, args.out, x.shape[1:])
    print(f"wrote {', '.join(written.values())}")
    if args.upload:
        trained = json.loads(Path(written["params"]).read_text())
        _upload(args, Path(written["model"]), {"input_shape": list(x.shape[1:]), "datatype": "FP32",
                                               "img_channels": x.shape[1] if x.shape[1] in (1, 3, 4) else None,
                                               "probabilities": "softmax", "output_transform": "softmax",
                                               "labels": classes, "preprocessing": trained["preprocessing"],
                                               "description": "hep_resnet image classifier (tpcflow)"},
                Path(written["labels"]))
    return 0


def run(args) -> int:
    """Train, write the outputs, optionally upload; returns 0."""
    from tpcflow.errors import ConfigError

    if args.images or args.larcv2:
        return _run_images(args)
    if not (args.files and args.model):
        raise ConfigError("tabular mode needs --files and --model (or use --images / --larcv2)")
    from tpcflow.loader.root_generator import read_file_list
    from tpcflow.workflows.root_train import RootTrainParams, train_root

    files, per_line = read_file_list(args.files)
    labels = _labels(args.labels, per_line, len(files))
    opts = _read_params(args.params)
    for key in ("tree", "include", "exclude"):
        if getattr(args, key):
            opts[key] = getattr(args, key)
    params = RootTrainParams.from_dict(opts, origin=args.params or "command line")
    summary = train_root(files, labels, args.model, params, args.out, progress=not args.no_progress)
    print(f"wrote {', '.join(summary['files'].values())}")
    if args.upload:
        out = Path(args.out)
        _upload(args, out / "model.pt", json.loads((out / "params.json").read_text()), out / "labels.txt")
    return 0
