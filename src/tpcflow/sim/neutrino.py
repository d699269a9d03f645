"""A neutrino interaction: a vertex with tracks and electromagnetic showers.

A toy event generator, not a physics simulation.  Topologies (fractions are
rough BNB-like values): 70% nu_mu CC (a muon), 15% nu_e CC (an electron
shower), 15% NC.  Each adds 0-4 protons (short, dense, Bragg rise), 0-2
charged pions, and a pi0 (two photon showers, each converting after an
exponential gap of mean 18 cm = 9/7 X0 of liquid argon) in 35% of events, and
Poisson(60) blips (:func:`tpcflow.sim.tracks.blips`) within about 25 cm of the
vertex: the small deposits that make 12-14% of the real file's neutrino voxels.

Showers are a vectorised branching process: each electron generation travels
an exponential path (mean 5 cm), radiates a photon carrying 20-70% of its
energy that converts after an undrawn gap into an e+e- pair, and continues;
below the critical energy (30 MeV in argon) an electron stops after
``E / 2.1 MeV/cm``.  This gives the branchy, gapped look of real showers.
Source for X0 = 14 cm and Ec = 30 MeV: PDG atomic and nuclear properties (liquid argon).
"""

from __future__ import annotations

import numpy as np

from tpcflow.sim import geometry as geo
from tpcflow.sim.tracks import MIP_DEDX, Segments, blips, concat, polylines, random_directions, unit

__all__ = ["neutrino_interaction", "shower"]

NEUTRINO_LABEL = 2
X0 = 14.0  # cm
EC = 30.0  # MeV
#: blips (MeV photons' Compton electrons) per interaction, and their mean distance from the vertex [cm]
BLIPS, BLIP_DISTANCE = 45.0, 25.0


def _tracks(rng, vertex, dirs, lengths, *, sigma, dqdx, bragg_a, stopping) -> Segments:
    n = lengths.shape[0]
    if n == 0:
        return Segments.empty()
    s0, s1, trk, res = polylines(rng, np.repeat(vertex[None], n, 0), dirs, lengths, piece=2.0, sigma=sigma)
    res = np.where(stopping[trk], res, np.inf)
    return Segments.make(s0, s1, dqdx=dqdx, residual_end=res, bragg_a=bragg_a[trk], label=NEUTRINO_LABEL)


def shower(rng: np.random.Generator, origin: np.ndarray, direction: np.ndarray, energy: float, gap: bool = True) -> Segments:
    """Generate an EM shower of ``energy`` [MeV] starting at ``origin`` along ``direction``.

    With ``gap`` the shower starts as a photon: the first electrons appear after an
    exponential conversion distance (mean 9/7 X0).
    """
    pos = origin[None].astype(np.float64)
    d = unit(direction[None].astype(np.float64))
    if gap:
        pos = pos + d * rng.exponential(9.0 / 7.0 * X0)
    e = np.array([float(energy)])
    parts: list[Segments] = []
    for _ in range(14):
        if e.shape[0] == 0:
            break
        low = e < EC
        if low.any():  # stopping electrons wander to the end of their range
            L = np.minimum(e[low] / MIP_DEDX, 40.0)
            s0, s1, trk, res = polylines(rng, pos[low], d[low], L, piece=0.7, sigma=0.35)
            parts.append(Segments.make(s0, s1, residual_end=res, bragg_a=4.0, label=NEUTRINO_LABEL))
        pos, d, e = pos[~low], d[~low], e[~low]
        n = e.shape[0]
        if n == 0:
            break
        L = np.minimum(rng.exponential(5.0, n) + 0.5, 20.0)
        s0, s1, trk, _ = polylines(rng, pos, d, L, piece=1.0, sigma=0.08)
        parts.append(Segments.make(s0, s1, label=NEUTRINO_LABEL))
        end = pos + d * L[:, None]
        # radiate: photon with fraction y, converting after a gap into a pair
        y = rng.uniform(0.2, 0.7, n)
        open_ang = 0.25 * np.sqrt(EC / e)
        gdir = unit(d + open_ang[:, None] * rng.normal(size=(n, 3)))
        conv = end + gdir * rng.exponential(9.0 / 7.0 * X0 * 0.5, n)[:, None]
        pair = np.repeat(conv, 2, axis=0)
        pdir = unit(np.repeat(gdir, 2, axis=0) + 0.5 * np.repeat(open_ang, 2)[:, None] * rng.normal(size=(2 * n, 3)))
        pe = np.repeat(y * e / 2.0, 2)
        cdir = unit(d + 0.3 * open_ang[:, None] * rng.normal(size=(n, 3)))
        pos = np.concatenate([end, pair])
        d = np.concatenate([cdir, pdir])
        e = np.concatenate([(1.0 - y) * e, pe])
    return concat(parts)


def neutrino_interaction(rng: np.random.Generator) -> Segments:
    """Generate one neutrino interaction (label 2, in time: ``t0_cm = 0``) at a random vertex."""
    margin = np.array([15.0, 15.0, 15.0])
    vertex = rng.uniform(geo.BOX_LO + margin, geo.BOX_HI - margin)
    kind = rng.choice(3, p=[0.70, 0.15, 0.15])  # numu CC, nue CC, NC
    parts: list[Segments] = []
    # protons: short, dense, stopping (Bragg A = 17)
    npr = int(min(rng.poisson(1.3), 4))
    plen = np.minimum(rng.exponential(6.0, npr) + 1.0, 60.0)
    # charged pions: medium length, some stopping
    npi = int(min(rng.poisson(0.5 if kind != 2 else 0.9), 2))
    pilen = rng.uniform(10.0, 120.0, npi)
    lengths = [plen, pilen]
    dirs = [random_directions(rng, npr), random_directions(rng, npi)]
    bragg = [np.full(npr, 17.0), np.full(npi, 8.0)]
    stop = [np.ones(npr, bool), rng.random(npi) < 0.6]
    sig = [np.full(npr, 0.03), np.full(npi, 0.04)]
    if kind == 0:  # muon, forward-ish
        mdir = unit(np.array([[0.0, 0.0, 1.0]]) + 0.8 * random_directions(rng, 1))
        lengths.append(np.array([rng.uniform(30.0, 400.0)]))
        dirs.append(mdir)
        bragg.append(np.array([8.0]))
        stop.append(np.array([True]))
        sig.append(np.array([0.01]))
    L = np.concatenate(lengths)
    D = np.concatenate(dirs)
    # clip straight lengths to the box so stopping tracks do not end outside
    s_in, s_out = geo.clip_to_box(np.repeat(vertex[None], L.shape[0], 0), D)
    L = np.minimum(L, np.maximum(s_out, 0.5))
    parts.append(
        _tracks(rng, vertex, D, L, sigma=np.concatenate(sig), dqdx=1.0, bragg_a=np.concatenate(bragg), stopping=np.concatenate(stop))
    )
    if kind == 1:  # electron shower from the vertex, no gap
        edir = unit(np.array([0.0, 0.0, 1.0]) + 0.7 * random_directions(rng, 1)[0])
        parts.append(shower(rng, vertex, edir, rng.uniform(100.0, 1000.0), gap=False))
    if rng.random() < 0.3:  # pi0 -> two photons
        epi = rng.uniform(140.0, 500.0)
        for g in random_directions(rng, 2):
            parts.append(shower(rng, vertex, g, epi / 2.0, gap=True))
    nb = int(rng.poisson(BLIPS))
    parts.append(blips(rng, np.repeat(vertex[None], nb, 0), BLIP_DISTANCE, label=NEUTRINO_LABEL))
    return concat(parts)
