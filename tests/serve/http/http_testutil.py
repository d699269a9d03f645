"""Helpers for the HTTP server tests: a real uvicorn server in a thread, small models."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import uvicorn

from tpcflow.serve.http.app import create_app
from tpcflow.serve.http.settings import Settings

TOKEN = "test-token-3f9a"
FEATURES = ["px", "py", "pz", "energy"]


@contextmanager
def running_server(settings: Settings, startup_timeout: float = 15.0):
    """Run ``create_app(settings)`` with uvicorn on 127.0.0.1, an ephemeral port; yield (url, app)."""
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("uvicorn did not start within the timeout")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        if thread.is_alive():
            raise RuntimeError("uvicorn did not stop within 10 s")


class Mlp(torch.nn.Module):
    def __init__(self, n_in: int = 4, n_out: int = 3):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(n_in, 16), torch.nn.ReLU(), torch.nn.Linear(16, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_mlp(path: Path, seed: int = 0, n_in: int = 4, n_out: int = 3) -> torch.nn.Module:
    """Save a scripted MLP to ``path``; return the eager module (reference)."""
    torch.manual_seed(seed)
    model = Mlp(n_in, n_out).eval()
    torch.jit.save(torch.jit.script(model), str(path))
    return model


class TinyImageNet(torch.nn.Module):
    """[B, C, H, W] -> [B, 3] mean-pooled logits (an image classifier)."""

    def __init__(self, channels: int = 3):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


def make_image_model(path: Path, channels: int = 3, seed: int = 1) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = TinyImageNet(channels).eval()
    torch.jit.save(torch.jit.script(model), str(path))
    return model


def mlp_params(name: str = "mlp") -> dict:
    return {"name": name, "description": "4 -> 3 MLP", "keys": FEATURES, "input_shape": [4],
            "inputNode": "input0", "outputNode": "logits", "labels": "labels.txt"}
