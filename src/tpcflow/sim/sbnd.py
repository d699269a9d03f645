"""Synthetic SBND-like events: cosmic muons, one neutrino interaction and noise, seen by 3 wire planes.

Every event is built in 3D (:mod:`tpcflow.sim.cosmics`, :mod:`tpcflow.sim.neutrino`),
sampled into charge points (:mod:`tpcflow.sim.tracks`) and projected onto the
U, V and Y planes (:mod:`tpcflow.sim.geometry`), so the three planes are views
of one event.  Each point's charge is spread over 3 wires x 7 ticks with a
Gaussian response (:data:`SIGMA_WIRE`, :data:`SIGMA_TICK` per plane), electronics noise is added,
noise hits (short streaks along the time axis) are laid over the planes, and
voxels below the 5 ADC threshold are dropped (zero suppression).

Products (as in CosmicTagger's ``cosmic_tagging_light.h5``):

* ``sparse2d/sbndwire``: charge [ADC], 3 projections, meta ``number_of_voxels
  = (2048 >> k, 1280 >> k)`` (axis 0 wire, axis 1 tick).
* ``sparse2d/sbnd_cosmicseg``: labels 0 background, 1 cosmic, 2 neutrino as
  float32, with exactly the voxel ids of the charge.  A voxel takes the label
  of the class that deposited most charge in it; noise-dominated voxels and
  the time-direction halo of the response (voxels with less than
  :data:`LABEL_SHARE` of their charge under the narrower :data:`LABEL_SIGMA_TICK`
  spread) are background, as in the real file.

``downsample=k`` generates at full resolution and pools ``2**k x 2**k``
blocks: the charge is average-pooled (block sum / 4**k, empty voxels counting
as zero, no new threshold), the label is max-pooled (neutrino > cosmic >
background), like larcv's ``kPoolAverage`` / ``kPoolMax`` downsampling.

The same seed always gives the same events: :func:`generate_events` derives
event ``i``'s generator from ``SeedSequence(seed).spawn``, so an event does not
depend on how many were generated before it.  See ``docs/synthetic.md`` for
the comparison with the real file.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from tpcflow.io.products import Event, EventID, SparseProjection
from tpcflow.sim import geometry as geo
from tpcflow.sim.cosmics import cosmic_muons
from tpcflow.sim.neutrino import neutrino_interaction
from tpcflow.sim.tracks import concat, sample_points

__all__ = ["CHARGE_PRODUCER", "LABEL_PRODUCER", "generate_event", "generate_events", "generate_file"]

CHARGE_PRODUCER = "sbndwire"
LABEL_PRODUCER = "sbnd_cosmicseg"
THRESHOLD = 5.0  # ADC, zero suppression
ADC_PER_MIP_CM = 330.0  # ADC of 1 cm of minimum-ionising track, before the spread
PLANE_GAIN = (1.0, 1.0, 1.12)  # relative gain U, V, Y (collection signals are larger)
ELECTRONICS_SIGMA = 1.2  # ADC, per voxel
SIGMA_WIRE = (0.45, 0.45, 0.5)  # per plane U, V, Y [wires]
SIGMA_TICK = (0.9, 0.9, 1.2)  # per plane [ticks]; collection signals are longer
#: the labels' footprint: each point's charge deposited with this narrower time spread [ticks]...
LABEL_SIGMA_TICK = (0.6, 0.6, 0.8)
#: ...a voxel with less than this share of its charge so deposited is background (the tick-direction halo)
LABEL_SHARE = 0.2
#: noise hit voxels per plane in (ticks < 640, ticks >= 640); induction planes are noisy on one TPC side
NOISE_VOXELS = ((1000, 10700), (11300, 900), (220, 180))
NOISE_STREAK_P = (0.75, 0.75, 0.95)  # per plane: geometric streak length along the tick axis, mean 1/p
_NV = geo.N_WIRES * geo.N_TICKS
_W_OFF = np.arange(-1, 2)
_T_OFF = np.arange(-3, 4)


def _gauss_weights(frac: np.ndarray, offsets: np.ndarray, sigma: float) -> np.ndarray:
    w = np.exp(-0.5 * ((offsets[None, :] - frac[:, None]) / sigma) ** 2)
    return w / w.sum(axis=1, keepdims=True)


def _render_particles(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return dense (3 * NV,) particle charge, cosmic share of the labelled charge and labelled charge [ADC].

    The labelled charge is the same deposit with the narrower time spread :data:`LABEL_SIGMA_TICK`: the
    labels of the real file follow the deposits, while its charge is spread further along the time
    axis (there 30-47% of the background voxels next to a labelled one are its time neighbours, 1% its
    wire neighbours; ``docs/synthetic.md``).
    """
    seg = concat([cosmic_muons(rng), neutrino_interaction(rng)])
    pts, q, lab, t0 = sample_points(rng, seg)
    inside = np.all((pts >= geo.BOX_LO) & (pts < geo.BOX_HI), axis=1)
    pts, q, lab, t0 = pts[inside], q[inside], lab[inside], t0[inside]
    wire, tick = geo.project(pts, t0)
    ok = ~np.isnan(tick)
    wire, tick, q, lab = wire[:, ok], tick[ok], q[ok] * ADC_PER_MIP_CM, lab[ok]
    it = np.floor(tick).astype(np.int64)
    ids, qs, truth, cos = [], [], [], []
    for p in range(geo.N_PLANES):
        iw = np.floor(wire[p]).astype(np.int64)
        ww = _gauss_weights(wire[p] - iw - 0.5, _W_OFF, SIGMA_WIRE[p])  # (N, 3)
        wt = _gauss_weights(tick - it - 0.5, _T_OFF, SIGMA_TICK[p])  # (N, 7)
        wl = _gauss_weights(tick - it - 0.5, _T_OFF, LABEL_SIGMA_TICK[p])
        wires = iw[:, None, None] + _W_OFF[None, :, None]
        ticks = it[:, None, None] + _T_OFF[None, None, :]
        lo, hi = geo.ACTIVE_WIRES[p]
        keep = (wires >= lo) & (wires < hi) & (ticks >= 0) & (ticks < geo.N_TICKS)
        qp = (q * PLANE_GAIN[p])[:, None, None]
        w = (ww[:, :, None] * wt[:, None, :]) * qp
        t = (ww[:, :, None] * wl[:, None, :]) * qp
        idx = p * _NV + wires * geo.N_TICKS + ticks
        ids.append(idx[keep])
        qs.append(w[keep])
        truth.append(t[keep])
        cos.append((t * (lab == 1)[:, None, None])[keep])
    ids_a = np.concatenate(ids)
    part = np.bincount(ids_a, np.concatenate(qs), minlength=3 * _NV)
    labelled = np.bincount(ids_a, np.concatenate(truth), minlength=3 * _NV)
    cosmic = np.bincount(ids_a, np.concatenate(cos), minlength=3 * _NV)
    return part, cosmic, labelled


def _noise_hits(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Return noise voxel ids (into 3 * NV) and charges [ADC above 0]."""
    scale = float(np.exp(rng.normal(0.0, 0.2)))
    ids, qs = [], []
    for p, per_half in enumerate(NOISE_VOXELS):
        lo, hi = geo.ACTIVE_WIRES[p]
        for h, nvox in enumerate(per_half):
            nseed = int(rng.poisson(nvox * scale * NOISE_STREAK_P[p]))
            length = np.minimum(rng.geometric(NOISE_STREAK_P[p], nseed), 12)
            w = rng.integers(lo, hi, nseed)
            t = rng.integers(h * geo.HALF_TICKS, (h + 1) * geo.HALF_TICKS, nseed)
            src = np.repeat(np.arange(nseed), length)
            k = np.arange(src.shape[0]) - (np.cumsum(length) - length)[src]
            tt = np.minimum(t[src] + k, geo.N_TICKS - 1)
            ids.append(p * _NV + w[src] * geo.N_TICKS + tt)
            # mostly just above threshold, with a tail of larger pulses
            big = rng.random(src.shape[0]) < 0.1
            qs.append(THRESHOLD + np.where(big, rng.exponential(14.0, src.shape[0]), rng.exponential(0.75, src.shape[0])))
    return np.concatenate(ids), np.concatenate(qs)


def _pool(index: np.ndarray, charge: np.ndarray, label: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Average-pool charge and max-pool labels over 2**k x 2**k blocks of one plane."""
    w, t = np.divmod(index, geo.N_TICKS)
    coarse = (w >> k) * (geo.N_TICKS >> k) + (t >> k)
    uniq, inv = np.unique(coarse, return_inverse=True)
    q = np.bincount(inv, charge, minlength=uniq.shape[0]) / float(4**k)
    lab = np.zeros(uniq.shape[0], np.float64)
    np.maximum.at(lab, inv, label)
    return uniq, q, lab


def generate_event(rng: np.random.Generator, *, downsample: int = 0, event_id: EventID | None = None) -> Event:
    """Generate one synthetic SBND-like event.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness; the event is a pure function of its state.
    downsample : int
        k >= 0: planes of ``(2048 >> k, 1280 >> k)`` voxels (charge average-pooled,
        labels max-pooled over ``2**k x 2**k`` blocks).
    event_id : EventID, optional
        Defaults to run 1, subrun 0, event 0.

    Returns
    -------
    Event
        ``products["sparse2d/sbndwire"]``: 3 :class:`SparseProjection`, charge [ADC]
        float32, ids uint64 ascending; ``products["sparse2d/sbnd_cosmicseg"]``: the
        same ids with labels 0/1/2 as float32.

    Raises
    ------
    ValueError
        If ``downsample`` is negative or leaves less than one voxel per axis.
    """
    downsample = _check_downsample(downsample)
    part, cosmic, labelled = _render_particles(rng)
    nz = np.flatnonzero(part > 0.5)
    charge = part[nz] + rng.normal(0.0, ELECTRONICS_SIGMA, nz.shape[0])
    cos_q = cosmic[nz]
    nu_q = labelled[nz] - cos_q
    label = np.where(cos_q >= nu_q, 1.0, 2.0)
    label[labelled[nz] < LABEL_SHARE * part[nz]] = 0.0  # the time-direction halo of the charge response
    # noise hits: add to the particle charge; noise-dominated voxels are background
    nid, nq = _noise_hits(rng)
    nid, inv = np.unique(nid, return_inverse=True)
    nq = np.bincount(inv, nq)
    allid = np.concatenate([nz, nid])
    uid, inv = np.unique(allid, return_inverse=True)
    tot = np.bincount(inv, np.concatenate([charge, nq]))
    pq = np.bincount(inv[: nz.shape[0]], part[nz], minlength=uid.shape[0])
    lab = np.zeros(uid.shape[0])
    lab[inv[: nz.shape[0]]] = label
    noise_q = np.bincount(inv[nz.shape[0] :], nq, minlength=uid.shape[0])
    lab[noise_q > pq] = 0.0
    keep = tot >= THRESHOLD
    uid, tot, lab = uid[keep], tot[keep], lab[keep]

    metas = geo.image_metas(downsample)
    plane = uid // _NV
    bounds = np.searchsorted(plane, np.arange(geo.N_PLANES + 1))
    charge_proj, label_proj = [], []
    for p in range(geo.N_PLANES):
        s = slice(bounds[p], bounds[p + 1])
        idx, q, lb = uid[s] - p * _NV, tot[s], lab[s]
        if downsample:
            idx, q, lb = _pool(idx, q, lb, downsample)
        idx = idx.astype(np.uint64)
        charge_proj.append(SparseProjection(metas[p], idx, q.astype(np.float32)))
        label_proj.append(SparseProjection(metas[p], idx.copy(), lb.astype(np.float32)))
    return Event(
        event_id=event_id or EventID(1, 0, 0),
        products={f"sparse2d/{CHARGE_PRODUCER}": charge_proj, f"sparse2d/{LABEL_PRODUCER}": label_proj},
    )


def _check_downsample(k: int) -> int:
    k = int(k)
    if k < 0 or (geo.N_TICKS >> k) < 1:
        raise ValueError(f"downsample must be in [0, 10], but got downsample={k}")
    return k


def _event_at(entropy, i: int, downsample: int) -> Event:
    """Event ``i`` of the seed whose ``SeedSequence`` entropy is ``entropy`` (the unit of work of a worker)."""
    child = np.random.SeedSequence(entropy, spawn_key=(i,))
    return generate_event(np.random.default_rng(child), downsample=downsample, event_id=EventID(1, 0, i))


def default_workers(n: int) -> int:
    """Processes for ``n`` events: one per usable core, and one per 32 events at most (a worker costs ~1 s to start)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores, n // 32))


def generate_events(n: int, seed: int, downsample: int = 0, workers: int | None = None) -> Iterator[Event]:
    """Yield ``n`` events; event ``i`` has id (run 1, subrun 0, event i) and generator ``SeedSequence(seed).spawn``'s i-th child.

    The events do not depend on ``workers``: with ``workers > 1`` they are generated in that many
    ``spawn``-started processes (a script calling this needs the ``if __name__ == "__main__":`` guard)
    and yielded in order, with at most ``4 * workers`` generated ahead of the consumer.
    ``workers=None`` takes :func:`default_workers`.

    Raises
    ------
    ValueError
        If ``n < 0``, ``downsample`` is invalid or ``workers < 1``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, but got n={n}")
    downsample = _check_downsample(downsample)
    workers = default_workers(n) if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, but got workers={workers}")
    entropy = np.random.SeedSequence(seed).entropy
    if workers == 1:
        for i in range(n):
            yield _event_at(entropy, i, downsample)
        return
    pool = ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"))
    try:
        pending, following = deque(), iter(range(n))
        for i in itertools.islice(following, 4 * workers):
            pending.append(pool.submit(_event_at, entropy, i, downsample))
        while pending:
            event = pending.popleft().result()
            i = next(following, None)
            if i is not None:
                pending.append(pool.submit(_event_at, entropy, i, downsample))
            yield event
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def generate_file(
    path: str | Path,
    n: int,
    seed: int,
    downsample: int = 0,
    compression: int = 1,
    callback: Callable[[int], None] | None = None,
    workers: int | None = None,
) -> Path:
    """Write ``n`` synthetic events to a larcv3 file (atomically) and return its path.

    Parameters
    ----------
    path : str or Path
        Output ``.h5`` file.
    n, seed, downsample, workers
        As in :func:`generate_events` (the file does not depend on ``workers``).
    compression : int
        gzip level of the product datasets (larcv ``Output.Compression``, 0-9).
    callback : callable, optional
        Called with the number of events written so far after each event (progress bars).
    """
    from tpcflow.io import Larcv3Writer

    path = Path(path)
    with Larcv3Writer(path, compression=compression) as writer:
        for i, ev in enumerate(generate_events(n, seed, downsample, workers)):
            writer.write(ev)
            if callback is not None:
                callback(i + 1)
    return path
