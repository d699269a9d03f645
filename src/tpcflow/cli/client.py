"""``tpcflow client``: the TFaaS client commands (upload, models, delete, predict, image) on Python 3."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "talk to an HTTP model server: upload, models, delete, predict, image"
DESCRIPTION = (
    "Client of `tpcflow serve-http` (TFaaS-compatible routes). The API token for upload and delete "
    "is read from $TPCFLOW_API_TOKEN. Results are printed as JSON."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8083", help="server address")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout [s]")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("upload", help="upload a model described by an upload.json "
                       '({"name", "model", "params", "labels"}; paths relative to the file)')
    p.add_argument("spec", help="upload.json")
    sub.add_parser("models", help="list the models")
    p = sub.add_parser("delete", help="delete a model")
    p.add_argument("name", help="model name")
    p.add_argument("--version", type=int, default=None, help="delete only this version")
    p = sub.add_parser("predict", help='predict from an input.json ({"model", "keys", "values"})')
    p.add_argument("input", help="input.json")
    p = sub.add_parser("image", help="classify a PNG or JPEG image")
    p.add_argument("file", help="image file")
    p.add_argument("--model", required=True, help="model name")


def _read_json(path: str | Path, what: str) -> object:
    from tpcflow.errors import ConfigError

    try:
        return json.loads(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"cannot read {what}: {err}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{what} is not valid JSON: {err}\nin file {path}") from None


def _upload(client, spec_path: str) -> object:
    from tpcflow.errors import ConfigError

    spec = _read_json(spec_path, "upload spec")
    if not isinstance(spec, dict) or not {"name", "model", "params"} <= set(spec):
        raise ConfigError(f'upload spec must be an object with "name", "model", "params" (and "labels")'
                          f"\nin file {spec_path}")
    base = Path(spec_path).resolve().parent
    params = spec["params"]
    if isinstance(params, str):
        params = _read_json(base / params, "params file")
    labels = base / spec["labels"] if spec.get("labels") else None
    return client.upload(spec["name"], params, base / spec["model"], labels)


def run(args: argparse.Namespace) -> int:
    from tpcflow.serve.http.client import TFaaSClient

    with TFaaSClient(args.url, timeout=args.timeout) as client:
        if args.action == "upload":
            result = _upload(client, args.spec)
        elif args.action == "models":
            result = client.models()
        elif args.action == "delete":
            result = client.delete(args.name, args.version)
        elif args.action == "predict":
            result = client.predict(_read_json(args.input, "input file"))
        else:
            result = client.image(args.file, args.model)
    json.dump(result, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0
