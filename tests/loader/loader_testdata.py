"""Small larcv3 files for the loader tests, written with tpcflow's own writer (not a test module)."""

from __future__ import annotations

import numpy as np

from tpcflow.io import ClusterProjection, DenseImage, Event, EventID, ImageMeta, ParticleSet, SparseProjection
from tpcflow.io.larcv3.schema import PARTICLE_DTYPE
from tpcflow.io import write_larcv3

NV = (64, 40)  # number_of_voxels of the 2D test grid
PDGS = [11, 13, 22, 211, 2212]


def _meta(p, nv=NV):
    return ImageMeta(projection_id=p, number_of_voxels=nv, image_sizes=tuple(float(n) for n in nv), origin=(0.0, 0.0))


def make_event(rng: np.random.Generator, i: int, *, n_proj: int = 3) -> Event:
    """An event with sparse2d charge/labels (same ids), cluster2d, particle and image2d products."""
    total = NV[0] * NV[1]
    charge, labels, clusters, images_d, images_s = [], [], [], [], []
    for p in range(n_proj):
        n = int(rng.integers(0, 120)) if i % 5 else int(rng.integers(60, 160))
        idx = np.sort(rng.choice(total, size=n, replace=False)).astype(np.uint64)
        charge.append(SparseProjection(_meta(p), idx, rng.uniform(1, 100, n).astype(np.float32)))
        labels.append(SparseProjection(_meta(p), idx, rng.integers(0, 3, n).astype(np.float32)))
        cuts = np.sort(rng.choice(np.arange(1, max(n, 2)), size=min(2, max(n - 1, 0)), replace=False)) if n > 2 else []
        parts = np.split(np.arange(n), cuts)
        clusters.append(
            ClusterProjection(
                _meta(p),
                [SparseProjection(_meta(p), idx[s], np.ones(len(s), np.float32)) for s in parts],
                np.arange(len(parts), dtype=np.uint32),
            )
        )
        images_d.append(DenseImage(_meta(p, (8, 6)), rng.normal(size=(8, 6)).astype(np.float32)))
        images_s.append(DenseImage(_meta(p, (8, 6)), rng.integers(0, 3, (8, 6)).astype(np.float32)))
    parts = np.zeros(int(rng.integers(1, 4)), dtype=PARTICLE_DTYPE)
    parts["pdg"] = rng.choice(PDGS, size=len(parts))
    return Event(
        EventID(7, 1, 100 + i),
        {
            "sparse2d/sbndwire": charge,
            "sparse2d/sbnd_cosmicseg": labels,
            "cluster2d/sbndseg": clusters,
            "particle/sbndneutrino": ParticleSet(parts),
            "image2d/data": images_d,
            "image2d/segment": images_s,
        },
    )


def write_file(path, n: int, seed: int, start: int = 0):
    rng = np.random.default_rng(seed)
    write_larcv3(path, [make_event(rng, start + i) for i in range(n)])
    return path


def dense_reference(reader, entry: int, key: str, *, downsample: int = 0, pooling: str = "mean", transpose=True):
    """[P, H, W] dense planes of one entry computed from the reader with numpy pooling."""
    ev = reader.read(entry, products=[key])
    planes = []
    for sp in ev.products[key]:
        d = sp.to_dense(np.float64)
        if downsample:
            k = 2**downsample
            a, b = d.shape[0] // k, d.shape[1] // k
            w = d[: a * k, : b * k].reshape(a, k, b, k)
            d = w.mean(axis=(1, 3)) if pooling == "mean" else w.max(axis=(1, 3))
        planes.append(d.T if transpose else d)
    return np.stack(planes)
