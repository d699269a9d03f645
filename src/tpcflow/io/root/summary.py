"""``tpcflow info FILE.root``: an MLaaS4HEP ``reader.py --info``-like summary of a ROOT file."""

from __future__ import annotations

import resource
import time
from pathlib import Path

from tpcflow.io.root._source import open_root, source_name
from tpcflow.io.root.reader import DataReader

__all__ = ["format_summary", "summarize"]


def _rss_mb() -> float:
    """Current resident memory of this process [MiB] (Linux /proc; peak RSS elsewhere)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2**20
    except (OSError, ValueError, IndexError):
        return _peak_rss_mb()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def summarize(path, *, tree: str | None = None, nevts: int | None = None, include=None, exclude=None,
              retries: int = 3) -> dict:
    """Run the first pass over one tree of a ROOT file and return a summary.

    Parameters
    ----------
    path : str or Path
        Local path, HTTP(S) or ``root://`` URL.
    tree : str, optional
        Tree to analyse; default ``Events`` if present, else the TTree with most branches.
    nevts : int, optional
        Analyse at most this many entries.
    include, exclude : list of str, optional
        Branch globs, as for :class:`DataReader`.

    Returns
    -------
    dict
        ``file``, ``trees`` ({name: entries}), ``tree``, ``events``, ``entries`` (in the tree),
        ``branches`` (numeric branches used), ``flat`` / ``jagged`` (lists of names),
        ``skipped`` ({name: reason}: strings, unreadable objects), ``width`` (row width after
        padding), ``specs`` ({branch: BranchSpec dict with min, max, jdim, nan, inf, counter}),
        ``time_s`` (first pass [s]), ``memory_mb`` (RSS after the pass [MiB]),
        ``memory_delta_mb`` (RSS growth during the call [MiB]), ``peak_memory_mb`` (process peak RSS [MiB]).

    Raises
    ------
    DataFormatError, RemoteSourceError, ProductNotFoundError
        As :class:`DataReader`.
    """
    rss0 = _rss_mb()
    t0 = time.perf_counter()
    if tree is None:
        f = open_root(path, retries=retries)
        names = [k for k, c in f.classnames(cycle=False).items() if c == "TTree"]
        if len(names) > 1 and "Events" not in names:
            tree = max(names, key=lambda k: len(f[k].keys(recursive=True)))
        f.close()
    reader = DataReader(path, tree=tree, include=include, exclude=exclude, nevts=nevts, on_unreadable="skip",
                        retries=retries)
    try:
        trees = reader.trees()
        specs = reader.first_pass()
        entries = int(reader.tree.num_entries)
    finally:
        reader.close()
    elapsed = time.perf_counter() - t0
    rss = _rss_mb()
    return {
        "file": source_name(path), "trees": trees, "tree": specs.tree, "events": specs.nevents, "entries": entries,
        "branches": len(specs.branches), "flat": specs.flat, "jagged": specs.jagged, "skipped": dict(specs.skipped),
        "width": specs.width, "specs": specs.to_dict()["branches"], "time_s": elapsed, "memory_mb": rss,
        "memory_delta_mb": rss - rss0, "peak_memory_mb": max(_peak_rss_mb(), rss),
    }


def _range(s: dict) -> str:
    if s["min"] is None:
        if not s["values"]:
            return "empty (no values in the events read)"
        return f"no finite values ({s['nan']} NaN, {s['inf']} inf)"
    return f"values in [{s['min']:.6g}, {s['max']:.6g}] range"


def format_summary(d: dict, *, max_branches: int | None = None) -> str:
    """Render :func:`summarize` output as text, one line per branch (MLaaS4HEP ``--info`` style).

    ``max_branches`` limits the lines listed per kind (None: all).
    """
    lines = [
        f"First pass: {d['events']} events, {d['time_s']:.3f} sec, {d['branches']} branches: "
        f"{len(d['flat'])} flat, {len(d['jagged'])} jagged, row width {d['width']}",
        f"Memory used: RSS {d['memory_mb']:.1f} MiB ({d['memory_delta_mb']:+.1f} MiB during the pass), "
        f"peak {d['peak_memory_mb']:.1f} MiB",
        f"File: {d['file']}",
        "Trees: " + ", ".join(f"{k} ({v} entries)" for k, v in d["trees"].items()),
        f"Tree: {d['tree']}",
        f"Number of events : {d['entries']}" + (f" (first pass on {d['events']})" if d["events"] != d["entries"] else ""),
    ]
    for kind in ("flat", "jagged"):
        names = d[kind]
        lines.append(f"# {kind} branches : {len(names)}")
        for name in names[:max_branches]:
            s = d["specs"][name]
            extra = f"dim={s['dim']}" if kind == "flat" else f"jdim={s['jdim']}"
            if s.get("counter"):
                extra += f", counter={s['counter']}"
            if s["nan"] or s["inf"]:
                extra += f", NaN={s['nan']}, inf={s['inf']}"
            lines.append(f"{name} {_range(s)}, {extra}")
        if max_branches is not None and len(names) > max_branches:
            lines.append(f"... {len(names) - max_branches} more {kind} branches")
    if d["skipped"]:
        lines.append(f"# skipped branches : {len(d['skipped'])} (not numeric or not readable by uproot)")
        for name, why in d["skipped"].items():
            lines.append(f"{name}: {why}")
    return "\n".join(lines)
