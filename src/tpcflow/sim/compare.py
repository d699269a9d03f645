"""Compare the statistics of synthetic events with a real larcv3 file (the tables in ``docs/synthetic.md``).

Run ``python -m tpcflow.sim.compare REAL.h5 [--events N] [--seed S]``; it prints two
Markdown tables, for the real file and for ``N`` synthetic events:

* per plane and over all planes (:func:`stats_from_events`): voxels per event, occupancy,
  charge min / median / p90 / max and the label fractions (background / cosmic / neutrino);
* per plane, the structure around the tracks (:func:`structure_from_events`): the halo of
  background voxels around labelled ones and its direction, the charge per class, the
  clusters of each class, the neutrino voxels far from the neutrino's main clusters, and the
  noise hits far from any track.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

import numpy as np

from tpcflow.io.products import Event

__all__ = ["file_events", "format_structure", "format_table", "stats_from_events", "stats_from_file",
           "structure_from_events"]

CHARGE_KEY = "sparse2d/sbndwire"
LABEL_KEY = "sparse2d/sbnd_cosmicseg"


def _stats(nvox: np.ndarray, total_voxels: int, q: np.ndarray, lab: np.ndarray) -> dict:
    return {
        "events": int(nvox.shape[0]),
        "voxels": float(nvox.mean()) if nvox.size else 0.0,
        "occupancy": float(nvox.mean() / total_voxels) if nvox.size else 0.0,
        "charge_min": float(q.min()) if q.size else 0.0,
        "charge_median": float(np.median(q)) if q.size else 0.0,
        "charge_p90": float(np.percentile(q, 90)) if q.size else 0.0,
        "charge_max": float(q.max()) if q.size else 0.0,
        "background": float((lab == 0).mean()) if lab.size else 0.0,
        "cosmic": float((lab == 1).mean()) if lab.size else 0.0,
        "neutrino": float((lab == 2).mean()) if lab.size else 0.0,
    }


def _summarise(counts: np.ndarray, plane_size: int, charge: list, labels: list) -> dict:
    """counts (E, P); charge/labels: per plane lists of 1-D arrays."""
    P = counts.shape[1]
    out = {}
    for p in range(P):
        out[f"plane {p}"] = _stats(counts[:, p], plane_size, np.concatenate(charge[p]), np.concatenate(labels[p]))
    out["all"] = _stats(
        counts.sum(axis=1) / P,
        plane_size,
        np.concatenate([np.concatenate(c) for c in charge]),
        np.concatenate([np.concatenate(lb) for lb in labels]),
    )
    return out


def stats_from_events(events: Iterable[Event]) -> dict:
    """Statistics of the charge/label products of in-memory events.

    Returns
    -------
    dict
        ``{"plane 0": {...}, "plane 1": ..., "plane 2": ..., "all": {...}}``; each holds
        ``events, voxels, occupancy, charge_min, charge_median, charge_p90, charge_max,
        background, cosmic, neutrino`` (fractions of voxels).
    """
    counts, charge, labels, plane_size = [], None, None, 1
    for ev in events:
        cp, lp = ev.products[CHARGE_KEY], ev.products[LABEL_KEY]
        if charge is None:
            charge, labels = [[] for _ in cp], [[] for _ in cp]
            plane_size = cp[0].meta.total_voxels
        counts.append([len(c) for c in cp])
        for p, (c, lb) in enumerate(zip(cp, lp)):
            charge[p].append(c.values)
            labels[p].append(lb.values)
    if charge is None:
        raise ValueError("no events to summarise")
    return _summarise(np.asarray(counts, np.int64), plane_size, charge, labels)


def stats_from_file(path) -> dict:
    """Statistics of ``sparse2d/sbndwire`` and ``sparse2d/sbnd_cosmicseg`` in a larcv3 file (see :func:`stats_from_events`)."""
    from tpcflow.io import open_larcv3

    with open_larcv3(path, products=[CHARGE_KEY, LABEL_KEY]) as r:
        n = len(r)
        cb = r.read_sparse_block(CHARGE_KEY, 0, n)
        lb = r.read_sparse_block(LABEL_KEY, 0, n)
    P = cb.counts.shape[1]
    off = np.concatenate([[0], np.cumsum(cb.counts.ravel())])
    charge = [[] for _ in range(P)]
    labels = [[] for _ in range(P)]
    for e in range(n):
        for p in range(P):
            s = slice(off[e * P + p], off[e * P + p + 1])
            charge[p].append(cb.values[s])
            labels[p].append(lb.values[s])
    return _summarise(cb.counts, cb.metas[0].total_voxels, charge, labels)


_ROWS = [
    ("voxels", "voxels / plane / event", "{:,.0f}"),
    ("occupancy", "occupancy", "{:.2%}"),
    ("charge_min", "charge min [ADC]", "{:.1f}"),
    ("charge_median", "charge median", "{:.1f}"),
    ("charge_p90", "charge p90", "{:.1f}"),
    ("charge_max", "charge max", "{:.0f}"),
    ("background", "background (label 0)", "{:.1%}"),
    ("cosmic", "cosmic (label 1)", "{:.1%}"),
    ("neutrino", "neutrino (label 2)", "{:.1%}"),
]


def format_table(real: dict, synthetic: dict, rows=None) -> str:
    """Render the Markdown comparison table (columns: per plane and all planes, real | synthetic)."""
    groups = list(real)
    head = "| statistic | " + " | ".join(f"{g} real | {g} synth" for g in groups) + " |"
    sep = "|---|" + "---:|---:|" * len(groups)
    lines = [head, sep]
    for key, name, fmt in rows or _ROWS:
        cells = []
        for g in groups:
            cells += [fmt.format(real[g][key]), fmt.format(synthetic[g][key])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: clusters of at least this many voxels (8-connected, one class) are a class's main tracks
MAIN_CLUSTER = 50
#: clusters of fewer voxels are "small" (blips, delta-ray fragments)
SMALL_CLUSTER = 10


def file_events(path) -> Iterable[Event]:
    """The events of a larcv3 file with the charge and label products, one at a time."""
    from tpcflow.io import open_larcv3

    with open_larcv3(path, products=[CHARGE_KEY, LABEL_KEY]) as r:
        for entry in range(len(r)):
            yield r.read(entry)


def _plane_structure(charge: np.ndarray, label: np.ndarray) -> dict:
    """Sums and samples of one dense plane (wire x tick); see :func:`structure_from_events`."""
    from scipy import ndimage

    occ = charge > 0
    tagged = occ & (label > 0)
    bg = occ & (label == 0)
    near = ndimage.distance_transform_edt(~tagged) if tagged.any() else np.full(charge.shape, np.inf)
    wire_nb = np.zeros_like(tagged)
    wire_nb[1:] |= tagged[:-1]
    wire_nb[:-1] |= tagged[1:]
    tick_nb = np.zeros_like(tagged)
    tick_nb[:, 1:] |= tagged[:, :-1]
    tick_nb[:, :-1] |= tagged[:, 1:]
    out = {"bg": int(bg.sum()), "halo": int((bg & (near <= 2)).sum()), "adjacent": int((bg & (wire_nb | tick_nb)).sum()),
           "tick_only": int((bg & tick_nb & ~wire_nb).sum()), "wire_only": int((bg & wire_nb & ~tick_nb).sum()),
           "halo_q": charge[bg & (near <= 2)]}
    noise = bg & (near > 5)
    half = charge.shape[1] // 2
    out["noise"] = (int(noise[:, :half].sum()), int(noise[:, half:].sum()))
    runs = np.diff(np.pad(noise, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    out["noise_streaks"] = int((runs == 1).sum())
    eight = np.ones((3, 3), bool)
    for cls, name in ((1, "cosmic"), (2, "neutrino")):
        mask = occ & (label == cls)
        out[f"{name}_q"] = charge[mask]
        lbl, n = ndimage.label(mask, structure=eight)
        sizes = np.bincount(lbl.ravel())[1:]
        out[f"{name}_clusters"] = int(n)
        out[f"{name}_small"] = int(sizes[sizes < SMALL_CLUSTER].sum())
        out[f"{name}_voxels"] = int(mask.sum())
        if cls == 2:
            main = np.isin(lbl, 1 + np.flatnonzero(sizes >= MAIN_CLUSTER))
            d = ndimage.distance_transform_edt(~main)[mask] if main.any() else np.full(int(mask.sum()), np.inf)
            out["nu_far5"], out["nu_far20"] = int((d > 5).sum()), int((d > 20).sum())
    return out


def structure_from_events(events: Iterable[Event]) -> dict:
    """Per-plane structure statistics of full-resolution events (the second table of ``docs/synthetic.md``).

    Returns
    -------
    dict
        ``{"plane 0": {...}, ...}`` with, per plane: ``halo`` (share of the background voxels that lie
        within 2 voxels of a labelled one), ``halo_tick`` / ``halo_wire`` (of the background voxels next
        to a labelled one, the share whose labelled neighbours are only along the tick / only along the
        wire axis), ``halo_charge`` (their median charge [ADC]), ``cosmic_charge`` / ``neutrino_charge``
        (median charge [ADC]), ``cosmic_clusters`` / ``neutrino_clusters`` (8-connected clusters of the
        class per event), ``cosmic_small`` / ``neutrino_small`` (share of the class's voxels in clusters
        of fewer than :data:`SMALL_CLUSTER` voxels), ``neutrino_far5`` / ``neutrino_far20`` (share of the
        neutrino voxels more than 5 / 20 voxels from a neutrino cluster of at least :data:`MAIN_CLUSTER`
        voxels), ``noise_low`` / ``noise_high`` (background voxels more than 5 voxels from any labelled
        one, per event, in ticks below / above the middle of the readout: the two TPCs) and
        ``noise_streak`` (their mean run length along the tick axis).

    Raises
    ------
    ValueError
        If there are no events.
    """
    acc: dict[int, list[dict]] = {}
    for ev in events:
        for p, (c, lb) in enumerate(zip(ev.products[CHARGE_KEY], ev.products[LABEL_KEY])):
            acc.setdefault(p, []).append(_plane_structure(c.to_dense(), lb.to_dense()))
    if not acc:
        raise ValueError("no events to summarise")

    def tot(rows, key):
        return sum(r[key] for r in rows)

    def share(a, b):
        return a / b if b else 0.0

    def median(rows, key):
        v = np.concatenate([r[key] for r in rows])
        return float(np.median(v)) if v.size else 0.0

    out = {}
    for p, rows in acc.items():
        n = len(rows)
        noise = np.array([r["noise"] for r in rows]).sum(axis=0)
        out[f"plane {p}"] = {
            "events": n,
            "halo": share(tot(rows, "halo"), tot(rows, "bg")),
            "halo_tick": share(tot(rows, "tick_only"), tot(rows, "adjacent")),
            "halo_wire": share(tot(rows, "wire_only"), tot(rows, "adjacent")),
            "halo_charge": median(rows, "halo_q"),
            **{f"{c}_charge": median(rows, f"{c}_q") for c in ("cosmic", "neutrino")},
            **{f"{c}_clusters": tot(rows, f"{c}_clusters") / n for c in ("cosmic", "neutrino")},
            **{f"{c}_small": share(tot(rows, f"{c}_small"), tot(rows, f"{c}_voxels")) for c in ("cosmic", "neutrino")},
            "neutrino_far5": share(tot(rows, "nu_far5"), tot(rows, "neutrino_voxels")),
            "neutrino_far20": share(tot(rows, "nu_far20"), tot(rows, "neutrino_voxels")),
            "noise_low": noise[0] / n,
            "noise_high": noise[1] / n,
            "noise_streak": share(int(noise.sum()), tot(rows, "noise_streaks")),
        }
    return out


_STRUCTURE_ROWS = [
    ("halo", "background within 2 voxels of a track", "{:.0%}"),
    ("halo_tick", "track-adjacent background: tick neighbours only", "{:.0%}"),
    ("halo_wire", "track-adjacent background: wire neighbours only", "{:.0%}"),
    ("halo_charge", "halo charge median [ADC]", "{:.1f}"),
    ("cosmic_charge", "cosmic charge median [ADC]", "{:.1f}"),
    ("neutrino_charge", "neutrino charge median [ADC]", "{:.1f}"),
    ("cosmic_clusters", "cosmic clusters / event", "{:.0f}"),
    ("neutrino_clusters", "neutrino clusters / event", "{:.0f}"),
    ("cosmic_small", f"cosmic voxels in clusters < {SMALL_CLUSTER}", "{:.1%}"),
    ("neutrino_small", f"neutrino voxels in clusters < {SMALL_CLUSTER}", "{:.1%}"),
    ("neutrino_far5", "neutrino voxels > 5 from its main tracks", "{:.1%}"),
    ("neutrino_far20", "neutrino voxels > 20 from its main tracks", "{:.1%}"),
    ("noise_low", "noise voxels / event, ticks < half", "{:,.0f}"),
    ("noise_high", "noise voxels / event, ticks >= half", "{:,.0f}"),
    ("noise_streak", "noise streak length along ticks", "{:.2f}"),
]


def format_structure(real: dict, synthetic: dict) -> str:
    """Render the Markdown table of :func:`structure_from_events` (columns: per plane, real | synthetic)."""
    return format_table(real, synthetic, rows=_STRUCTURE_ROWS)


def main(argv: list[str] | None = None) -> int:
    """Print the comparison table of a real file against freshly generated events."""
    from tpcflow.sim.sbnd import generate_events

    parser = argparse.ArgumentParser(prog="python -m tpcflow.sim.compare", description=__doc__.splitlines()[0])
    parser.add_argument("real", help="real larcv3 file with sparse2d_sbndwire and sparse2d_sbnd_cosmicseg")
    parser.add_argument("--events", type=int, default=50, help="synthetic events to generate (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    args = parser.parse_args(argv)
    real = stats_from_file(args.real)
    events = list(generate_events(args.events, args.seed))  # both tables, generated once
    synth = stats_from_events(events)
    print(f"real: {args.real} ({real['all']['events']} events); synthetic: {args.events} events, seed {args.seed}\n")
    print(format_table(real, synth))
    print()
    print(format_structure(structure_from_events(file_events(args.real)),
                           structure_from_events(events)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
