"""``tpcflow export``: a trained cosmic tagger for another server (argument parsing only)."""

from __future__ import annotations

HELP = "export a cosmic-tagger checkpoint as a Triton model repository entry (also served by tpcflow serve-http)"
DESCRIPTION = (
    "Write <DIR>/<name>/config.pbtxt (Triton's schema: TorchScript platform, dynamic batching, max batch size) and "
    "<DIR>/<name>/<version>/model.pt (the network traced at its training resolution: [B, 3, H, W] float32 "
    "pooled charge in, logits [B, 3, 3, H, W] out) with params.json for tpcflow serve-http --models DIR. "
    "Send events to it with tpcflow submit --kserve URL --service <name>."
)


def add_arguments(parser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="tpcflow checkpoint of a dense cosmic tagger")
    parser.add_argument("--triton", required=True, metavar="DIR", help="model repository folder (created if missing)")
    parser.add_argument("--name", default="cosmic_tagger", help="model name")
    parser.add_argument("--version", type=int, default=1, help="model version (a new folder under the model)")
    parser.add_argument("--max-batch", type=int, default=8, help="Triton max_batch_size (dynamic batching)")


def run(args) -> int:
    from tpcflow.workflows.triton_export import export_triton

    folder = export_triton(args.checkpoint, args.triton, name=args.name, version=args.version,
                           max_batch_size=args.max_batch)
    print(f"tpcflow export: wrote {folder}/config.pbtxt and {folder}/{args.version}/model.pt")
    return 0
