"""Plain-text tables of CosmicTagger metrics (``plane{p}/<name>`` and ``Average/<name>`` keys)."""

from __future__ import annotations

import math

__all__ = ["format_metrics"]

_ORDER = ("Total_Accuracy", "Non_Bkg_Accuracy", "Neutrino_Accuracy", "Cosmic_IoU", "Neutrino_IoU", "mIoU",
          "Cosmic_Precision", "Cosmic_Recall", "Neutrino_Precision", "Neutrino_Recall")


def format_metrics(columns: dict[str, dict[str, float]], scope: str = "Average") -> str:
    """Render metrics as a table: one row per metric, one column per named metric dict.

    Parameters
    ----------
    columns : mapping column title -> metrics dict (empty dicts are skipped)
    scope : "Average" or "plane0" / "plane1" / "plane2"
    """
    columns = {k: v for k, v in columns.items() if v}
    if not columns:
        return "(no metrics)"
    names = [n for n in _ORDER if any(f"{scope}/{n}" in m for m in columns.values())]
    extra = sorted({k for m in columns.values() for k in m if "/" not in k})
    width = max(len(t) for t in columns) + 2
    lines = [f"{scope + ' metric':<22}" + "".join(f"{t:>{max(width, 12)}}" for t in columns)]
    for key in [f"{scope}/{n}" for n in names] + extra:
        label = key.split("/", 1)[-1]
        cells = []
        for m in columns.values():
            v = m.get(key)
            cells.append(f"{'-' if v is None or (isinstance(v, float) and math.isnan(v)) else f'{v:.4f}':>{max(width, 12)}}")
        lines.append(f"{label:<22}" + "".join(cells))
    return "\n".join(lines)
