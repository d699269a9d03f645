"""Charged-particle trajectories as sets of straight segments, and their sampling into charge points.

Every particle of the synthetic event (cosmic muon, delta ray, proton, pion,
shower electron) becomes a few straight :class:`Segments`.  Sampling turns the
segments into points every ``step`` cm carrying ionisation charge:

* minimum-ionising dQ/dx = 1 (in MIP units) per cm,
* the Bragg rise of stopping particles, ``dE/dx = A * r**-0.42`` with ``r``
  the residual range [cm] (A = 17 MeV/cm**0.58 for protons; Bethe-Bloch
  power-law fit, PDG "Passage of particles through matter"),
* recombination-like saturation ``q = (dE/dx / 2.1 MeV/cm)**0.75``,
* Landau-like fluctuations per point from a Moyal variate (``-ln(Z**2)``,
  Z standard normal; Moyal 1955, a closed-form Landau approximation).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MIP_DEDX", "Segments", "blips", "concat", "polylines", "random_directions", "sample_points", "unit"]

#: minimum-ionising dE/dx in liquid argon [MeV/cm] (PDG)
MIP_DEDX = 2.1


def unit(v: np.ndarray) -> np.ndarray:
    """Normalise rows of ``v`` (N, 3) to unit length."""
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.where(n > 0, n, 1.0)


def random_directions(rng: np.random.Generator, n: int) -> np.ndarray:
    """Return (n, 3) isotropic unit vectors."""
    return unit(rng.normal(size=(n, 3)))


@dataclass
class Segments:
    """Straight pieces of trajectories.

    Attributes
    ----------
    start, end : (S, 3) float64, end points [cm]
    dqdx : (S,) float64, mean charge per cm in MIP units (1 = minimum ionising)
    residual_end : (S,) float64, residual range at ``end`` [cm] of a stopping
        particle, ``inf`` for no Bragg rise
    bragg_a : (S,) float64, Bragg constant A [MeV/cm**0.58] (17 proton, 8 pion/muon)
    label : (S,) int8, 1 cosmic or 2 neutrino
    t0_cm : (S,) float64, time offset as extra drift distance [cm]
    """

    start: np.ndarray
    end: np.ndarray
    dqdx: np.ndarray
    residual_end: np.ndarray
    bragg_a: np.ndarray
    label: np.ndarray
    t0_cm: np.ndarray

    def __len__(self) -> int:
        return int(self.start.shape[0])

    @classmethod
    def empty(cls) -> Segments:
        z3 = np.zeros((0, 3))
        z = np.zeros(0)
        return cls(z3, z3.copy(), z, z.copy(), z.copy(), np.zeros(0, np.int8), z.copy())

    @classmethod
    def make(cls, start, end, *, dqdx=1.0, residual_end=np.inf, bragg_a=17.0, label=1, t0_cm=0.0) -> Segments:
        """Build segments, broadcasting the scalar or per-segment attributes."""
        start = np.asarray(start, np.float64).reshape(-1, 3)
        end = np.asarray(end, np.float64).reshape(-1, 3)
        n = start.shape[0]

        def b(v, dt=np.float64):
            return np.broadcast_to(np.asarray(v, dt), (n,)).copy()

        return cls(start, end, b(dqdx), b(residual_end), b(bragg_a), b(label, np.int8), b(t0_cm))


def concat(parts: list[Segments]) -> Segments:
    """Concatenate segment sets."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Segments.empty()
    return Segments(
        *(np.concatenate([getattr(p, f) for p in parts]) for f in Segments.__dataclass_fields__)  # type: ignore[arg-type]
    )


def blips(rng: np.random.Generator, origin: np.ndarray, mean_distance: float, *, label, t0_cm=0.0) -> Segments:
    """Short stopping electrons ("blips") at isotropic, exponentially distributed distances from ``origin``.

    They stand for the Compton electrons of MeV photons (nuclear de-excitation, neutron capture,
    bremsstrahlung) that scatter small deposits far from the tracks in real events.

    Parameters
    ----------
    origin : (B, 3) float64, one point per blip [cm]
    mean_distance : float, mean of the exponential distance from ``origin`` [cm]
        (the attenuation length of MeV photons in liquid argon is about 20-30 cm, PDG)
    label, t0_cm : scalar or (B,), as in :meth:`Segments.make`

    Returns
    -------
    Segments
        One straight, stopping piece per blip, 0.1-3 cm long (exponential, mean 0.4 cm).
    """
    n = origin.shape[0]
    if n == 0:
        return Segments.empty()
    start = origin + random_directions(rng, n) * rng.exponential(mean_distance, n)[:, None]
    end = start + random_directions(rng, n) * np.minimum(rng.exponential(0.3, n) + 0.1, 3.0)[:, None]
    return Segments.make(start, end, residual_end=0.0, bragg_a=4.0, label=label, t0_cm=t0_cm)


def polylines(
    rng: np.random.Generator,
    start: np.ndarray,
    direction: np.ndarray,
    length: np.ndarray,
    piece: float,
    sigma: np.ndarray | float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bend straight tracks into random-walk polylines (multiple scattering), vectorised over tracks.

    Parameters
    ----------
    start, direction : (T, 3) float64; direction is normalised here
    length : (T,) float64, track lengths [cm]
    piece : float, length of each straight piece [cm]
    sigma : float or (T,), r.m.s. direction change per piece [rad]

    Returns
    -------
    seg_start, seg_end : (S, 3) float64
    track : (S,) int64, index of the track each piece belongs to
    residual_end : (S,) float64, remaining track length after each piece [cm]
    """
    length = np.asarray(length, np.float64)
    T = length.shape[0]
    if T == 0:
        z3 = np.zeros((0, 3))
        return z3, z3.copy(), np.zeros(0, np.int64), np.zeros(0)
    npieces = np.maximum(1, np.ceil(length / piece).astype(np.int64))
    track = np.repeat(np.arange(T), npieces)
    first = np.cumsum(npieces) - npieces
    k = np.arange(track.shape[0]) - first[track]  # piece number within its track
    plen = np.where(k == npieces[track] - 1, length[track] - piece * (npieces[track] - 1), piece)
    sig = np.broadcast_to(np.asarray(sigma, np.float64), (T,))[track]
    kick = rng.normal(size=(track.shape[0], 3)) * sig[:, None]
    kick[k == 0] = 0.0
    walk = np.cumsum(kick, axis=0)
    walk -= (walk[first] - kick[first])[track]  # restart the cumulative sum at each track
    dirs = unit(unit(direction)[track] + walk)
    step = dirs * plen[:, None]
    pos = np.cumsum(step, axis=0)
    pos -= (pos[first] - step[first])[track]
    seg_end = start[track] + pos
    seg_start = seg_end - step
    residual_end = length[track] - (np.cumsum(plen) - (np.cumsum(plen)[first] - plen[first])[track])
    return seg_start, seg_end, track, np.maximum(residual_end, 0.0)


def sample_points(rng: np.random.Generator, seg: Segments, step: float = 0.15, landau: float = 0.12):
    """Sample segments into charge points.

    Parameters
    ----------
    rng : numpy Generator
    seg : Segments
    step : float, point spacing [cm]
    landau : float, width of the Moyal fluctuation of each point's charge

    Returns
    -------
    points : (N, 3) float64 [cm]
    charge : (N,) float64, charge in MIP-cm units
    label : (N,) int8
    t0_cm : (N,) float64
    """
    d = seg.end - seg.start
    L = np.linalg.norm(d, axis=1)
    n = np.maximum(1, np.ceil(L / step).astype(np.int64))
    idx = np.repeat(np.arange(len(seg)), n)
    first = np.cumsum(n) - n
    k = np.arange(idx.shape[0]) - first[idx]
    frac = (k + 0.5) / n[idx]
    points = seg.start[idx] + d[idx] * frac[:, None]
    ds = (L / n)[idx]
    residual = seg.residual_end[idx] + (1.0 - frac) * L[idx]
    with np.errstate(divide="ignore"):
        bragg = seg.bragg_a[idx] * np.maximum(residual, 0.05) ** -0.42 / MIP_DEDX
    dedx = np.maximum(seg.dqdx[idx], np.where(np.isfinite(residual), bragg, 0.0))
    q = np.minimum(dedx, 30.0) ** 0.75
    z = rng.standard_normal(idx.shape[0])
    moyal = -np.log(np.maximum(z * z, 1e-12))  # standard Moyal variate, mode 0
    fluct = np.clip(1.0 + landau * moyal, 0.2, 6.0)
    charge = q * ds * fluct
    return points, charge, seg.label[idx], seg.t0_cm[idx]
