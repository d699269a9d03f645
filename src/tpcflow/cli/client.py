"""``tpcflow client``: the TFaaS client commands (upload, models, delete, predict, image) on Python 3."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "talk to an HTTP model server: upload, models, delete, predict, image"
DESCRIPTION = (
    "Client of `tpcflow serve-http` (TFaaS-compatible routes). The API token for upload and delete "
    "is read from $TPCFLOW_API_TOKEN. Results are printed as JSON. The TFaaS client's flags work "
    "unchanged in place of ACTION: --upload=upload.json, --models, --delete=NAME, --predict=input.json, "
    "--image=FILE --model=NAME."
)

#: TFaaS client flag -> action (tfaas_client.py of vkuznet/TFaaS)
_TFAAS_FLAGS = ("upload", "models", "delete", "predict", "image")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8083", help="server address")
    parser.add_argument("--timeout", type=float, default=60.0, help="per-request timeout [s]")
    tfaas = parser.add_argument_group("TFaaS client flags (instead of ACTION)")
    tfaas.add_argument("--upload", dest="tfaas_upload", metavar="UPLOAD_JSON", help="upload the model of upload.json")
    tfaas.add_argument("--models", dest="tfaas_models", action="store_true", help="list the models")
    tfaas.add_argument("--delete", dest="tfaas_delete", metavar="NAME", help="delete a model")
    tfaas.add_argument("--predict", dest="tfaas_predict", metavar="INPUT_JSON", help="predict from input.json")
    tfaas.add_argument("--image", dest="tfaas_image", metavar="FILE", help="classify an image (with --model)")
    tfaas.add_argument("--model", dest="tfaas_model", metavar="NAME", help="model of --image")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=False)
    p = sub.add_parser("upload", help="upload a model described by an upload.json "
                       '({"name", "model", "params", "labels"}; paths relative to the file)')
    p.add_argument("spec", help="upload.json")
    sub.add_parser("models", help="list the models")
    p = sub.add_parser("delete", help="delete a model")
    p.add_argument("name", help="model name")
    p.add_argument("--version", type=int, default=None, help="delete only this version")
    p = sub.add_parser("predict", help='predict from an input.json ({"keys", "values"}, and "model" unless the '
                       "server has a default model)")
    p.add_argument("input", help="input.json")
    p = sub.add_parser("image", help="classify a PNG or JPEG image")
    p.add_argument("file", help="image file")
    p.add_argument("--model", default=None, help="model name (default: the server's default or only model)")


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


def _tfaas_action(args: argparse.Namespace) -> None:
    """Turn the TFaaS client's flags into ``args.action`` and its arguments."""
    from tpcflow.errors import ConfigError

    given = [f for f in _TFAAS_FLAGS if getattr(args, f"tfaas_{f}")]
    if args.action is not None:
        if given:
            raise ConfigError(f"give an ACTION or a TFaaS flag (--{given[0]}), not both")
        return
    if len(given) != 1:
        raise ConfigError("give one ACTION (upload, models, delete, predict, image) or one TFaaS flag "
                          "(--upload=F, --models, --delete=NAME, --predict=F, --image=F --model=NAME)"
                          + (f"; got {['--' + f for f in given]}" if given else ""))
    args.action = given[0]
    args.spec, args.input, args.name, args.version = args.tfaas_upload, args.tfaas_predict, args.tfaas_delete, None
    args.file, args.model = args.tfaas_image, args.tfaas_model
    if args.action == "image" and not args.model:
        args.model = None  # the server's default (or only) model


def run(args: argparse.Namespace) -> int:
    from tpcflow.serve.http.client import TFaaSClient

    _tfaas_action(args)
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
