"""Cosmic muons crossing the detector, with delta rays.

Muons enter through a horizontal plane above the detector with the sea-level
zenith distribution ``dN/dcos(theta) ~ cos**3(theta)`` (``cos**2`` intensity
times the ``cos`` projection of a horizontal surface; PDG "Cosmic rays").
Each muon has a random arrival time within +-1 drift window (it reads out as a
shift along the drift axis, so many are cut by the readout window), a mild
multiple-scattering random walk, and delta rays (short electron tracks leaving
the muon at large angles, ~1.5 per metre, exponential lengths of mean 3 cm).
"""

from __future__ import annotations

import numpy as np

from tpcflow.sim import geometry as geo
from tpcflow.sim.tracks import Segments, blips, concat, polylines, random_directions, unit

__all__ = ["cosmic_muons"]

COSMIC_LABEL = 1


def _entry_lines(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw ``n`` muon lines that cross the box; return entry points, directions, lengths, ok mask."""
    cos_t = rng.random(4 * n) ** 0.25
    sin_t = np.sqrt(1.0 - cos_t**2)
    phi = rng.uniform(0, 2 * np.pi, 4 * n)
    d = np.stack([sin_t * np.cos(phi), -cos_t, sin_t * np.sin(phi)], axis=1)
    top = geo.BOX_HI[1] + 1.0
    # start on a plane above the box, large enough to let inclined muons clip corners
    x0 = rng.uniform(geo.BOX_LO[0] - 250, geo.BOX_HI[0] + 250, 4 * n)
    z0 = rng.uniform(geo.BOX_LO[2] - 250, geo.BOX_HI[2] + 250, 4 * n)
    start = np.stack([x0, np.full(4 * n, top), z0], axis=1)
    s_in, s_out = geo.clip_to_box(start, d)
    hit = np.flatnonzero(s_out - s_in > 5.0)[:n]
    entry = start[hit] + d[hit] * s_in[hit, None]
    return entry, d[hit], (s_out - s_in)[hit], hit


def cosmic_muons(rng: np.random.Generator, mean: float = 6.5) -> Segments:
    """Generate the cosmic muons of one readout window (Poisson count of mean ``mean``).

    Returns
    -------
    Segments
        Muon pieces (label 1) and their delta rays, with per-muon ``t0_cm``.
    """
    n = int(rng.poisson(mean))
    entry, d, length, _ = _entry_lines(rng, n)
    n = entry.shape[0]
    if n == 0:
        return Segments.empty()
    # arrival time within +-1 drift, expressed as drift distance [cm]
    t0 = rng.uniform(-200.0, 200.0, n)
    # scattering: most muons are stiff, a few low-energy ones bend visibly
    sigma = 0.004 * np.exp(rng.normal(0.0, 1.0, n))
    s0, s1, trk, _ = polylines(rng, entry, d, length, piece=10.0, sigma=sigma)
    muons = Segments.make(s0, s1, dqdx=1.0, label=COSMIC_LABEL, t0_cm=t0[trk])
    return concat([muons, delta_rays(rng, muons), _muon_blips(rng, muons)])


def _muon_blips(rng: np.random.Generator, muons: Segments, per_cm: float = 0.05, distance: float = 15.0) -> Segments:
    """Blips (Poisson ``per_cm`` per cm of muon) within about ``distance`` cm of the muons."""
    seglen = np.linalg.norm(muons.end - muons.start, axis=1)
    src = np.repeat(np.arange(len(muons)), rng.poisson(per_cm * seglen))
    at = muons.start[src] + rng.random(src.shape[0])[:, None] * (muons.end[src] - muons.start[src])
    return blips(rng, at, distance, label=COSMIC_LABEL, t0_cm=muons.t0_cm[src])


def delta_rays(rng: np.random.Generator, parent: Segments, per_cm: float = 0.015) -> Segments:
    """Attach delta-ray electrons to ``parent`` segments (Poisson ``per_cm`` per cm of track)."""
    seglen = np.linalg.norm(parent.end - parent.start, axis=1)
    counts = rng.poisson(per_cm * seglen)
    src = np.repeat(np.arange(len(parent)), counts)
    m = src.shape[0]
    if m == 0:
        return Segments.empty()
    f = rng.random(m)[:, None]
    origin = parent.start[src] + f * (parent.end[src] - parent.start[src])
    pdir = unit(parent.end[src] - parent.start[src])
    # emitted at large angle: mix the parent direction with an isotropic one
    d = unit(0.5 * pdir + random_directions(rng, m))
    length = np.minimum(rng.exponential(3.0, m) + 0.6, 25.0)
    s0, s1, trk, res = polylines(rng, origin, d, length, piece=1.0, sigma=0.25)
    return Segments.make(
        s0, s1, dqdx=1.1, residual_end=res, bragg_a=4.0, label=parent.label[src][trk], t0_cm=parent.t0_cm[src][trk]
    )
