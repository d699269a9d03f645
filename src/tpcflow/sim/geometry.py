"""SBND-like detector geometry: a two-TPC box read out by three wire planes.

Coordinates are in cm.  ``x`` is the drift coordinate (cathode at ``x = 0``,
anodes at ``x = +-200``), ``y`` is vertical (up), ``z`` runs along the beam.
Each TPC is read out by three planes: two induction planes with wires at +-60
degrees to the vertical (U, V) and a collection plane with vertical wires (Y).
The second TPC is the mirror image of the first, so its U and V wires swap
orientation; a straight track crossing the cathode therefore shows a kink in
the induction views, as in the real SBND images.

Image layout (larcv3 ImageMeta of ``cosmic_tagging_light.h5``): axis 0 is the
wire number (2048), axis 1 the time tick (1280).  Ticks ``[0, 640)`` hold the
TPC at ``x < 0`` (anode at tick 0, cathode at tick 640) and ticks ``[640,
1280)`` the TPC at ``x > 0`` (cathode at 640, anode at 1280).  The drift scale
is 3.2 ticks per cm, so one full drift (200 cm) fills one half.  Active wires:
31..2016 for U/V (1986 wires) and 191..1856 for Y (1666 wires), as measured on
the real file.  Wire pitch is 0.3 cm.

Source: SBND TDR (2 x 2 m drift, 4 m x 5 m anode planes, 3 mm wire pitch,
+-60 degree induction wires); tick scale and wire ranges fitted to the real
``cosmic_tagging_light.h5`` voxel ranges.
"""

from __future__ import annotations

import numpy as np

from tpcflow.io.products import ImageMeta

__all__ = [
    "ACTIVE_WIRES",
    "BOX_HI",
    "BOX_LO",
    "DRIFT_TICKS_PER_CM",
    "N_PLANES",
    "N_TICKS",
    "N_WIRES",
    "WIRE_PITCH",
    "clip_to_box",
    "image_metas",
    "project",
]

N_PLANES = 3
N_WIRES = 2048
N_TICKS = 1280
HALF_TICKS = N_TICKS // 2
WIRE_PITCH = 0.3  # cm
DRIFT_TICKS_PER_CM = HALF_TICKS / 200.0  # 3.2 ticks/cm
BOX_LO = np.array([-200.0, -200.0, 0.0])
BOX_HI = np.array([200.0, 200.0, 500.0])

#: first and last+1 active wire per plane (measured on the real file)
ACTIVE_WIRES = ((31, 2017), (31, 2017), (191, 1857))

_SIN60 = np.sqrt(3.0) / 2.0
_U_MIN = -200.0 * _SIN60  # smallest z/2 +- y*sin60 over the box


def image_metas(downsample: int = 0) -> list[ImageMeta]:
    """Return the 3 ImageMeta of an SBND plane at ``2**downsample`` coarser binning.

    ``number_of_voxels = (2048 >> k, 1280 >> k)``; ``image_sizes`` stays
    ``(2048, 1280)`` and ``origin`` ``(0, 0)`` as in the real file, so each
    coarse voxel covers ``2**k`` wires by ``2**k`` ticks.
    """
    nv = (N_WIRES >> downsample, N_TICKS >> downsample)
    return [
        ImageMeta(projection_id=p, number_of_voxels=nv, image_sizes=(float(N_WIRES), float(N_TICKS)), origin=(0.0, 0.0))
        for p in range(N_PLANES)
    ]


def clip_to_box(start: np.ndarray, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Intersect lines ``start + s * direction`` with the detector box (slab method).

    Parameters
    ----------
    start, direction : (N, 3) float64 [cm], direction need not be normalised.

    Returns
    -------
    s_in, s_out : (N,) float64
        Line parameters of entry and exit; ``s_out <= s_in`` where the line misses.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / direction
        t1 = (BOX_LO - start) * inv
        t2 = (BOX_HI - start) * inv
    lo = np.where(np.isnan(t1), -np.inf, np.minimum(t1, t2))
    hi = np.where(np.isnan(t2), np.inf, np.maximum(t1, t2))
    # a zero direction component: inside the slab -> unbounded, outside -> miss
    zero = direction == 0
    inside = (start >= BOX_LO) & (start <= BOX_HI)
    lo = np.where(zero, np.where(inside, -np.inf, np.inf), lo)
    hi = np.where(zero, np.where(inside, np.inf, -np.inf), hi)
    return lo.max(axis=1), hi.min(axis=1)


def project(points: np.ndarray, t0_cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project 3D points onto the 3 planes.

    Parameters
    ----------
    points : (N, 3) float64
        Positions [cm] inside the box.
    t0_cm : (N,) float64
        Time offset of the particle expressed as extra drift distance [cm]
        (0 for the beam neutrino; out-of-time cosmics are shifted).

    Returns
    -------
    wire : (3, N) float64
        Continuous wire coordinate per plane (integer part = wire number).
    tick : (N,) float64
        Continuous tick; NaN where the shifted time leaves the TPC's half of
        the readout window.
    """
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    east = x < 0
    drift = np.where(east, x - BOX_LO[0], BOX_HI[0] - x) + t0_cm
    tick_half = drift * DRIFT_TICKS_PER_CM
    tick = np.where(east, tick_half, N_TICKS - tick_half)
    ok = (tick_half >= 0) & (tick_half < HALF_TICKS)
    tick = np.where(ok, tick, np.nan)
    # mirrored TPCs: the +60 degree wires of the east TPC are the -60 degree wires of the west TPC
    ys = np.where(east, y, -y) * _SIN60
    u = (0.5 * z + ys - _U_MIN) / WIRE_PITCH + ACTIVE_WIRES[0][0]
    v = (0.5 * z - ys - _U_MIN) / WIRE_PITCH + ACTIVE_WIRES[1][0]
    w = z / WIRE_PITCH + ACTIVE_WIRES[2][0]
    return np.stack([u, v, w]), tick
