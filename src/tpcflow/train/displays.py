"""Event displays: one PNG per event, the 3 wire planes as charge, truth and prediction.

Rows are the planes (U, V, Y), columns charge (log scale), truth labels and predicted
labels, in CosmicTagger's image layout (x: wire, y: tick).  Drawn with matplotlib's Agg
backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tpcflow import atomic

__all__ = ["LABEL_COLORS", "draw_event"]

#: background (white), cosmic (blue), neutrino (red)
LABEL_COLORS = ("#ffffff", "#1f77b4", "#d62728")
PLANE_NAMES = ("U", "V", "Y")


def draw_event(path: str | Path, image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray, title: str = "") -> Path:
    """Write an event display PNG atomically and return its path.

    Parameters
    ----------
    path : path of the PNG
    image : (3, H, W) float32, charge [ADC]
    truth : (3, H, W) int labels, or None (no truth column)
    pred : (3, H, W) int labels (0 background, 1 cosmic, 2 neutrino)
    title : str
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.colors import ListedColormap, LogNorm
    from matplotlib.figure import Figure

    cmap = ListedColormap(LABEL_COLORS)
    cols = [("charge [ADC]", None), ("truth", truth), ("prediction", pred)]
    if truth is None:
        cols.pop(1)
    n_planes = image.shape[0]
    h, w = image.shape[1:]
    fig = Figure(figsize=(4.0 * len(cols), 4.0 * n_planes * h / w + 0.6), dpi=100)
    axes = fig.subplots(n_planes, len(cols), squeeze=False)
    vmax = max(float(image.max()), 2.0)
    for p in range(n_planes):
        for c, (name, lab) in enumerate(cols):
            ax = axes[p][c]
            if lab is None:
                shown = np.ma.masked_less_equal(image[p], 0)
                ax.imshow(shown, origin="lower", aspect="auto", cmap="viridis", norm=LogNorm(vmin=1.0, vmax=vmax), interpolation="nearest")
                ax.set_facecolor("black")
            else:
                ax.imshow(lab[p], origin="lower", aspect="auto", cmap=cmap, vmin=0, vmax=2, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if p == 0:
                ax.set_title(name, fontsize=10)
            if c == 0:
                ax.set_ylabel(f"plane {PLANE_NAMES[p] if p < 3 else p}\ntick", fontsize=9)
            if p == n_planes - 1:
                ax.set_xlabel("wire", fontsize=9)
    fig.suptitle(title + "   (blue: cosmic, red: neutrino)", fontsize=10)
    fig.tight_layout()
    return atomic.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
