"""Compare the statistics of synthetic events with a real larcv3 file (the table in ``docs/synthetic.md``).

Run ``python -m tpcflow.sim.compare REAL.h5 [--events N] [--seed S]``; it prints a
Markdown table of, per plane: voxels per event, occupancy, charge min / median /
p90 / max and the label fractions (background / cosmic / neutrino), for the real
file and for ``N`` synthetic events, plus the same over all planes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

import numpy as np

from tpcflow.io.products import Event

__all__ = ["format_table", "stats_from_events", "stats_from_file"]

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


def format_table(real: dict, synthetic: dict) -> str:
    """Render the Markdown comparison table (columns: per plane and all planes, real | synthetic)."""
    groups = list(real)
    head = "| statistic | " + " | ".join(f"{g} real | {g} synth" for g in groups) + " |"
    sep = "|---|" + "---:|---:|" * len(groups)
    lines = [head, sep]
    for key, name, fmt in _ROWS:
        cells = []
        for g in groups:
            cells += [fmt.format(real[g][key]), fmt.format(synthetic[g][key])]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print the comparison table of a real file against freshly generated events."""
    from tpcflow.sim.sbnd import generate_events

    parser = argparse.ArgumentParser(prog="python -m tpcflow.sim.compare", description=__doc__.splitlines()[0])
    parser.add_argument("real", help="real larcv3 file with sparse2d_sbndwire and sparse2d_sbnd_cosmicseg")
    parser.add_argument("--events", type=int, default=50, help="synthetic events to generate (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    args = parser.parse_args(argv)
    real = stats_from_file(args.real)
    synth = stats_from_events(generate_events(args.events, args.seed))
    print(f"real: {args.real} ({real['all']['events']} events); synthetic: {args.events} events, seed {args.seed}\n")
    print(format_table(real, synth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
