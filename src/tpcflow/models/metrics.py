"""CosmicTagger's segmentation metrics, per plane and averaged over the planes.

Source: CosmicTagger master ``src/utils/torch/trainer.py`` (``_compute_metrics``), reference spec
section 4.2; ``Neutrino_Accuracy`` follows the definition in CosmicTagger's README (seed 003):
"of all pixels with label == neutrino, what is the accuracy".

Labels: 0 background, 1 cosmic, 2 neutrino.  The prediction is the argmax over the class axis.

===================  ==========================================================================
Total_Accuracy       mean of (prediction == label) over all B*H*W pixels, background included
Non_Bkg_Accuracy     per image: correct non-background pixels / non-background pixels; then the
                     mean over the images of the batch that have non-background pixels
Neutrino_Accuracy    per image: neutrino pixels predicted neutrino / neutrino pixels; then the
                     mean over the images that have neutrino pixels
Cosmic_IoU           per image: |pred=1 and label=1| / |pred=1 or label=1|, 1.0 if the union is
                     empty; then the batch mean
Neutrino_IoU         the same for class 2
mIoU                 (Cosmic_IoU + Neutrino_IoU) / 2 (background excluded)
Cosmic_Precision     per image: |pred=1 and label=1| / |pred=1|, 0 if the image has cosmic pixels
                     but none is predicted; the mean over the images that have or predict cosmic
                     pixels (tpcflow's addition, for quality work)
Cosmic_Recall        per image: |pred=1 and label=1| / |label=1|; the mean over the images that
                     have cosmic pixels
Neutrino_Precision   the same for class 2
Neutrino_Recall      the same for class 2 (equal to Neutrino_Accuracy, under its usual name)
===================  ==========================================================================

Keys are ``plane{p}/<name>`` and ``Average/<name>``; ``Average`` is the mean over the planes with
weight exactly 1/3 each (the reference uses the literal 0.3333333, spec section 6, item 7).

NaN guard (a deliberate difference from the reference, spec section 6, item 5): an image without
non-background (or without neutrino) pixels has no accuracy; the reference divides by zero and
returns NaN for the whole batch.  Here such images are skipped in the batch mean.  If no image of
the batch qualifies, the plane's value is NaN, and ``Average`` is then the mean over the planes
that have a value (NaN only if none has).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tpcflow.models.logits import plane_pairs

__all__ = ["METRIC_NAMES", "REFERENCE_TARGETS", "combine_planes", "masked_mean", "plane_metrics", "precision_recall",
           "segmentation_metrics"]

METRIC_NAMES = (
    "Total_Accuracy",
    "Non_Bkg_Accuracy",
    "Neutrino_Accuracy",
    "Cosmic_IoU",
    "Neutrino_IoU",
    "mIoU",
    "Cosmic_Precision",
    "Cosmic_Recall",
    "Neutrino_Precision",
    "Neutrino_Recall",
)

#: CosmicTagger's quality bar (its README): the lower bounds of the averaged metrics of a network that works
REFERENCE_TARGETS = {
    "Average/Total_Accuracy": 0.999,
    "Average/Non_Bkg_Accuracy": 0.95,
    "Average/Cosmic_IoU": 0.90,
    "Average/Neutrino_IoU": 0.70,
}


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean of ``values`` where ``mask`` holds (the images that have a value); NaN if none does."""
    if not bool(mask.any()):
        return math.nan
    return float(values[mask].mean())


@torch.no_grad()
def plane_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Metrics of one plane.

    Parameters
    ----------
    logits : Tensor
        ``[B, C, H, W]`` raw scores (any float dtype).
    labels : Tensor
        ``[B, H, W]`` integer labels.

    Returns
    -------
    dict[str, float]
        One value per name in :data:`METRIC_NAMES`.
    """
    if logits.dim() < 3 or logits.shape[0] != labels.shape[0] or logits.shape[2:] != labels.shape[1:]:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)} "
                         f"(expected [B, C, H, W] and [B, H, W])")
    pred = logits.argmax(dim=1)
    lab = labels.long()
    dims = tuple(range(1, lab.dim()))
    correct = pred == lab
    out = {"Total_Accuracy": float(correct.double().mean())}

    nonbkg = lab != 0
    n_nb = nonbkg.sum(dims).double()
    ok_nb = (correct & nonbkg).sum(dims).double()
    out["Non_Bkg_Accuracy"] = masked_mean(ok_nb / n_nb.clamp_min(1), n_nb > 0)

    is_nu = lab == 2
    n_nu = is_nu.sum(dims).double()
    ok_nu = ((pred == 2) & is_nu).sum(dims).double()
    out["Neutrino_Accuracy"] = masked_mean(ok_nu / n_nu.clamp_min(1), n_nu > 0)

    for cls, name in ((1, "Cosmic_IoU"), (2, "Neutrino_IoU")):
        p, t = pred == cls, lab == cls
        inter = (p & t).sum(dims).double()
        union = (p | t).sum(dims).double()
        iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
        out[name] = float(iou.mean())
    out["mIoU"] = 0.5 * (out["Cosmic_IoU"] + out["Neutrino_IoU"])
    for cls, name in ((1, "Cosmic"), (2, "Neutrino")):
        p, t = pred == cls, lab == cls
        hits = (p & t).sum(dims).double()
        out.update(precision_recall(name, hits, p.sum(dims).double(), t.sum(dims).double()))
    return out


def precision_recall(name: str, hits: torch.Tensor, predicted: torch.Tensor, true: torch.Tensor) -> dict[str, float]:
    """``<name>_Precision`` and ``<name>_Recall`` from per-image counts ``(B,)`` (float64).

    Per image ``hits / predicted`` (0 when the class is there but nothing is predicted: nothing
    found is no precision, scikit-learn's ``zero_division=0``) averaged over the images that have
    or predict the class, and ``hits / true`` averaged over the images that have it; NaN when no
    image qualifies.
    """
    return {f"{name}_Precision": masked_mean(hits / predicted.clamp_min(1), (predicted > 0) | (true > 0)),
            f"{name}_Recall": masked_mean(hits / true.clamp_min(1), true > 0)}


def segmentation_metrics(logits_per_plane: Sequence[torch.Tensor] | torch.Tensor,
                         labels: torch.Tensor | Sequence[torch.Tensor]) -> dict[str, float]:
    """CosmicTagger's metrics for every plane and their average.

    Parameters
    ----------
    logits_per_plane : sequence of Tensor, or Tensor
        P tensors ``[B, C, H, W]`` (the network output), or one tensor ``[B, C, P, H, W]``.
        For the sparse network, densify first with
        :func:`tpcflow.models.sparse.to_dense`.
    labels : Tensor
        ``[B, P, H, W]`` integer labels (or P tensors ``[B, H, W]``).

    Returns
    -------
    dict[str, float]
        ``plane{p}/<name>`` and ``Average/<name>`` for each name in :data:`METRIC_NAMES`.

    Raises
    ------
    ValueError
        If the planes or shapes do not match.
    """
    return combine_planes([plane_metrics(lg, lb) for lg, lb in plane_pairs(logits_per_plane, labels)])


def combine_planes(per_plane: Sequence[dict[str, float]]) -> dict[str, float]:
    """``plane{p}/<name>`` for each plane's metrics, and ``Average/<name>`` over the planes that have a value."""
    result: dict[str, float] = {}
    for p, values in enumerate(per_plane):
        for name in METRIC_NAMES:
            result[f"plane{p}/{name}"] = values[name]
    for name in METRIC_NAMES:
        vals = [v[name] for v in per_plane if not math.isnan(v[name])]
        result[f"Average/{name}"] = sum(vals) / len(vals) if vals else math.nan
    return result
