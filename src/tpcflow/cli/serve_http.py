"""``tpcflow serve-http``: run the HTTP model server (TFaaS routes and KServe v2) with uvicorn."""

from __future__ import annotations

import argparse

HELP = "serve models over HTTP (TFaaS-compatible routes and KServe v2), with dynamic batching"
DESCRIPTION = (
    "Serve the models of an on-disk repository (<DIR>/<name>/<version>/) over HTTP. "
    "Upload and delete need the API token from --config (api_token) or $TPCFLOW_API_TOKEN. "
    "OpenAPI docs at /docs, Prometheus metrics at /metrics."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="models", help="model repository directory (created if missing)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=int, default=8083, help="TCP port to bind (TFaaS default 8083)")
    parser.add_argument("--config", default=None, help="YAML/JSON file with server settings (see docs/http.md)")
    parser.add_argument("--max-batch-size", type=int, default=None, help="most rows per model call (default 64)")
    parser.add_argument("--max-delay-ms", type=float, default=None,
                        help="extra wait for more requests to batch [ms] (default 0: batch what is queued)")
    parser.add_argument("--no-batching", action="store_true", help="one model call per request")
    parser.add_argument("--max-request-mb", type=float, default=None, help="largest request body [MiB] (default 16)")
    parser.add_argument("--max-upload-mb", type=float, default=None, help="largest upload [MiB] (default 512)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch intra-op threads per server process")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                        help="uvicorn log level")
    parser.add_argument("--access-log", action="store_true", help="log every request (slower)")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from tpcflow.serve.http.app import create_app
    from tpcflow.serve.http.settings import TOKEN_ENV, Settings

    mib = 1024 * 1024
    settings = Settings.load(
        args.config,
        models_dir=args.models,
        max_batch_size=args.max_batch_size,
        max_batch_delay_ms=args.max_delay_ms,
        batching=False if args.no_batching else None,
        max_request_bytes=int(args.max_request_mb * mib) if args.max_request_mb else None,
        max_upload_bytes=int(args.max_upload_mb * mib) if args.max_upload_mb else None,
        torch_threads=args.torch_threads,
    )
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    if settings.api_token is None:
        print(f"tpcflow serve-http: no API token (${TOKEN_ENV}): upload and delete are disabled")
    app = create_app(settings)
    app.state.tpcflow.parser.warm()  # the first large body is not kept waiting for a process start
    import gc

    # torch and friends leave ~10^6 long-lived objects; freezing them keeps full
    # garbage collections (latency spikes of 100+ ms) from walking them again
    gc.collect()
    gc.freeze()
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=args.access_log)
    return 0
