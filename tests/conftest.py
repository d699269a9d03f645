"""Shared test fixtures: the one helper that finds the real data files in ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


#: ``network.*`` overrides of a UResNet small enough for tests (a few thousand parameters)
TINY_NETWORK = (
    "network.n_initial_filters=4",
    "network.network_depth=3",
    "network.blocks_per_layer=1",
    "network.blocks_deepest_layer=1",
    "network.blocks_final=1",
    "network.bottleneck_deepest=16",
)


def data_dir() -> Path:
    """Directory of the real data files: $TPCFLOW_DATA, else ../shared/data beside the checkout."""
    return Path(os.environ.get("TPCFLOW_DATA", REPO.parent / "shared" / "data"))


def data_path(relpath: str) -> Path:
    """Path of a real data file; skip if it is missing, but fail under CI=true."""
    path = data_dir() / relpath
    if not path.exists():
        msg = f"real data file {relpath} not found under {data_dir()} (set TPCFLOW_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture
def shared_data():
    """Fixture form of :func:`data_path`: ``shared_data("larcv3/cosmic_tagging_light.h5")``."""
    return data_path


@pytest.fixture
def one_torch_thread():
    """Run the test on one torch thread (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``).

    For tiny networks: one thread avoids OpenMP barrier waits when the CPU is shared (CI runs on 2
    cores).
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def ctx():
    """A fresh ZeroMQ context, destroyed (linger 0) after the test."""
    import zmq

    c = zmq.Context()
    yield c
    c.destroy(linger=0)


def png_image_folder(tmp_path: Path, count: int) -> tuple[Path, Path]:
    """``count`` 32x32 crops of real larcv2 electron images saved as PNG (matplotlib, gray colour map, RGBA)
    in ``tmp_path/hep_images/train`` with a ``labels.csv`` (background, signal alternating); returns both."""
    import matplotlib.image as mpimg

    from tpcflow.io.larcv_root import read_larcv2_images

    imgs = read_larcv2_images(data_path("larcv2/electron.root"), producer="data")[0][:count, 0, :32, :32]
    folder = tmp_path / "hep_images" / "train"
    folder.mkdir(parents=True)
    rows = ["file,label"]
    for i, img in enumerate(imgs):
        mpimg.imsave(folder / f"ev{i}.png", img, cmap="gray")
        rows.append(f"ev{i}.png,{'signal' if i % 2 else 'background'}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "hep_images", tmp_path / "labels.csv"
