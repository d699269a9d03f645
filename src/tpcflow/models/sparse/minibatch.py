"""The sparse minibatch: per-plane voxel lists, their labels, and what the dense metrics need besides.

The sparse network's fast path (:meth:`~tpcflow.models.sparse.SparseUResNet.forward_sparse`)
takes, per plane, the voxels that hold charge: ``coords`` ``(N_p, 3)`` ``(batch index, y, x)``
and ``features`` ``(N_p, 1)``.  The loss is then per voxel, and the metrics are computed from
the voxels with :func:`voxel_metrics`, which gives exactly CosmicTagger's dense metrics
(:func:`tpcflow.models.metrics.segmentation_metrics`) of the same network's dense output: every
pixel without charge is predicted background (the dense output holds
:func:`~tpcflow.models.sparse.background_logits` there), so it is correct when its label is
background, and counts as a missed cosmic or neutrino pixel otherwise.  Those pixels are
counted per image, plane and class in ``missed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tpcflow.models.metrics import combine_planes, masked_mean, precision_recall

__all__ = ["SparseMinibatch", "predictions_at", "voxel_metrics"]


@dataclass
class SparseMinibatch:
    """Voxel lists of a minibatch of ``batch_size`` events of ``P`` planes of ``shape`` pixels.

    Attributes
    ----------
    coords : list of Tensor
        P tensors ``(N_p, 3)`` int64 ``(batch index, y, x)``.
    features : list of Tensor
        P tensors ``(N_p, 1)`` float (the charge).
    labels : list of Tensor or None
        P tensors ``(N_p,)`` int64 (0 background, 1 cosmic, 2 neutrino), or None.
    missed : Tensor or None
        ``(batch_size, P, n_classes)`` int64: labelled pixels without charge, per class
        (column 0, background, is always 0: those pixels are predicted right).
    batch_size : int
    shape : (int, int)
        ``(H, W)``.
    """

    coords: list[torch.Tensor]
    features: list[torch.Tensor]
    labels: list[torch.Tensor] | None
    missed: torch.Tensor | None
    batch_size: int
    shape: tuple[int, int]

    @classmethod
    def from_dense(cls, x: torch.Tensor, y: torch.Tensor | None = None, n_classes: int = 3) -> SparseMinibatch:
        """Voxels of a dense minibatch ``x`` ``[B, P, H, W]`` (pixels that are not 0), labels from ``y``.

        Raises
        ------
        ValueError
            If ``y`` is not the shape of ``x``.
        """
        b, p, h, w = x.shape
        if y is not None and y.shape != x.shape:
            raise ValueError(f"labels {tuple(y.shape)} do not match images {tuple(x.shape)}")
        coords, feats, labels = [], [], []
        active = x != 0
        for plane in range(p):
            c = torch.nonzero(active[:, plane])
            coords.append(c)
            feats.append(x[c[:, 0], plane, c[:, 1], c[:, 2]][:, None])
            if y is not None:
                labels.append(y[c[:, 0], plane, c[:, 1], c[:, 2]].long())
        missed = None
        if y is not None:  # few pixels: found by one nonzero, counted by one scatter
            lost = torch.nonzero((y != 0) & ~active)
            missed = torch.zeros(b, p, n_classes, dtype=torch.int64, device=x.device)
            label = y[lost[:, 0], lost[:, 1], lost[:, 2], lost[:, 3]].long()
            missed.index_put_((lost[:, 0], lost[:, 1], label), torch.ones_like(label), accumulate=True)
        return cls(coords, feats, labels if y is not None else None, missed, b, (h, w))

    @classmethod
    def from_coo(cls, image: np.ndarray, label: np.ndarray | None, batch_size: int, n_planes: int,
                 shape: tuple[int, int], n_classes: int = 3) -> SparseMinibatch:
        """The minibatch of the loader's COO rows, with no dense batch made.

        Parameters
        ----------
        image : ndarray ``(N, 5)``
            Rows ``(batch, plane, y, x, charge)`` of the non-zero pixels, sorted by batch, plane
            and row-major pixel (``BatchFillerSparseCOO2D`` with ``Pooling``,
            :func:`tpcflow.loader.cosmic_tagger_config` with ``max_voxels``).
        label : ndarray ``(M, 5)`` or None
            Rows ``(batch, plane, y, x, label)`` of the non-zero labels, sorted the same way.
            A labelled pixel that is no image row counts in ``missed``.
        batch_size, n_planes : int
        shape : (H, W)

        Equals :meth:`from_dense` of the dense batches those rows come from (tested).
        """
        h, w = shape

        def by_plane(rows):  # rows by plane, then (batch, pixel) as they come: keys sorted per plane
            rows = np.asarray(rows)
            rows = rows[np.argsort(rows[:, 1], kind="stable")]
            keys = (rows[:, 0].astype(np.int64) * h + rows[:, 2].astype(np.int64)) * w + rows[:, 3].astype(np.int64)
            return rows, keys, np.searchsorted(rows[:, 1].astype(np.int64), np.arange(n_planes + 1))

        img, keys, bounds = by_plane(image)
        lab = None
        if label is not None:
            lab, lab_keys, lab_bounds = by_plane(label)
            missed = np.zeros((batch_size, n_planes, n_classes), np.int64)
        coords, feats, labels = [], [], []
        for p in range(n_planes):
            rows = slice(bounds[p], bounds[p + 1])
            coords.append(torch.from_numpy(img[rows, [0, 2, 3]].astype(np.int64)))
            feats.append(torch.from_numpy(img[rows, 4:5].astype(np.float32)))
            if lab is None:
                continue
            lk, lv = lab_keys[lab_bounds[p]:lab_bounds[p + 1]], lab[lab_bounds[p]:lab_bounds[p + 1], 4].astype(np.int64)
            at = np.searchsorted(lk, keys[rows])
            at_c = np.minimum(at, max(len(lk) - 1, 0))
            found = (at < len(lk)) & (lk[at_c] == keys[rows]) if len(lk) else np.zeros(len(at), bool)
            labels.append(torch.from_numpy(np.where(found, lv[at_c] if len(lk) else 0, 0)))
            lost = ~np.isin(lk, keys[rows], assume_unique=True)
            np.add.at(missed, (lk[lost] // (h * w), p, lv[lost]), 1)
        return cls(coords, feats, None if lab is None else labels,
                   None if lab is None else torch.from_numpy(missed), batch_size, (h, w))

    def planes(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``forward_sparse``'s input: one ``(coords, features)`` pair per plane."""
        return list(zip(self.coords, self.features, strict=True))

    def to(self, device: torch.device) -> SparseMinibatch:
        move = (lambda ts: None if ts is None else [t.to(device, non_blocking=True) for t in ts])
        return SparseMinibatch(move(self.coords), move(self.features), move(self.labels),
                               None if self.missed is None else self.missed.to(device), self.batch_size, self.shape)

    def select(self, b: int) -> SparseMinibatch:
        """The minibatch of image ``b`` alone (batch index 0)."""
        keep = [c[:, 0] == b for c in self.coords]
        coords = [c[m] * torch.tensor([0, 1, 1], device=c.device) for c, m in zip(self.coords, keep, strict=True)]
        return SparseMinibatch(
            coords, [f[m] for f, m in zip(self.features, keep, strict=True)],
            None if self.labels is None else [lb[m] for lb, m in zip(self.labels, keep, strict=True)],
            None if self.missed is None else self.missed[b : b + 1], 1, self.shape)

    def image(self, b: int, values: list[torch.Tensor] | None = None) -> np.ndarray:
        """Dense ``(P, H, W)`` numpy picture of image ``b`` (for event displays, not for the network).

        ``values``: P per-voxel tensors ``(N_p,)`` to draw (labels, predictions); default the
        charge, float32.  Pixels that are no voxel hold 0; labelled pixels without charge
        (``missed``) are not drawn.
        """
        planes = [f[:, 0] for f in self.features] if values is None else values
        dtype = np.float32 if values is None else np.int64
        out = np.zeros((len(self.coords), *self.shape), dtype)
        for p, (c, v) in enumerate(zip(self.coords, planes, strict=True)):
            mine = c[:, 0] == b
            yx = c[mine][:, 1:].cpu().numpy()
            out[p, yx[:, 0], yx[:, 1]] = v[mine].detach().cpu().numpy()
        return out

    @property
    def voxels(self) -> int:
        """Voxels of all planes together."""
        return sum(int(c.shape[0]) for c in self.coords)


def predictions_at(keys: np.ndarray, label: np.ndarray, score: np.ndarray,
                   want: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sparse network's prediction at pixels ``want``, from its per-voxel predictions.

    ``keys`` (sorted, int64) are the voxels' linear pixel keys, ``label`` and ``score`` their
    predicted label and its probability; ``want`` the linear keys asked for.  A pixel that is no
    voxel holds no charge: background with probability 1, as in the network's dense output
    (:func:`~tpcflow.models.sparse.background_logits`).  Returns ``(label, score)`` at ``want``.
    """
    if not len(keys):
        return np.zeros(len(want), label.dtype), np.ones(len(want), score.dtype)
    at = np.minimum(np.searchsorted(keys, want), len(keys) - 1)
    found = keys[at] == want
    return np.where(found, label[at], 0).astype(label.dtype), np.where(found, score[at], 1.0).astype(score.dtype)


def _count(index: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
    return torch.bincount(index[mask], minlength=n).double()


@torch.no_grad()
def voxel_metrics(logits: list[torch.Tensor], batch: SparseMinibatch) -> dict[str, float]:
    """CosmicTagger's metrics from per-voxel logits, equal to the dense metrics of the dense output.

    Parameters
    ----------
    logits : list of Tensor
        P tensors ``(N_p, n_classes)`` (``forward_sparse``).
    batch : SparseMinibatch
        With ``labels`` and ``missed``.

    Returns
    -------
    dict[str, float]
        ``plane{p}/<name>`` and ``Average/<name>``, as
        :func:`tpcflow.models.metrics.segmentation_metrics` (same definitions, same NaN rules).

    Raises
    ------
    ValueError
        If the minibatch has no labels.
    """
    if batch.labels is None or batch.missed is None:
        raise ValueError("voxel metrics need the labels of the minibatch")
    b = batch.batch_size
    h, w = batch.shape
    per_plane = []
    for p, (lg, lab, coords) in enumerate(zip(logits, batch.labels, batch.coords, strict=True)):
        pred = lg.argmax(dim=1)
        img = coords[:, 0]
        missed = batch.missed[:, p].double()  # (B, n_classes)
        lost = missed[:, 1:].sum(1)  # labelled pixels without charge: predicted background, wrong
        correct = pred == lab
        n_vox = torch.bincount(img, minlength=b).double()
        ok = _count(img, correct, b)
        out = {"Total_Accuracy": float((ok + (h * w - n_vox) - lost).sum() / (b * h * w))}
        nonbkg = lab != 0
        n_nb = _count(img, nonbkg, b) + lost
        ok_nb = _count(img, correct & nonbkg, b)
        out["Non_Bkg_Accuracy"] = masked_mean(ok_nb / n_nb.clamp_min(1), n_nb > 0)
        is_nu = lab == 2
        n_nu = _count(img, is_nu, b) + missed[:, 2]
        ok_nu = _count(img, (pred == 2) & is_nu, b)
        out["Neutrino_Accuracy"] = masked_mean(ok_nu / n_nu.clamp_min(1), n_nu > 0)
        for cls, name in ((1, "Cosmic_IoU"), (2, "Neutrino_IoU")):
            pc, tc = pred == cls, lab == cls
            inter = _count(img, pc & tc, b)
            union = _count(img, pc | tc, b) + missed[:, cls]
            iou = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
            out[name] = float(iou.mean())
        out["mIoU"] = 0.5 * (out["Cosmic_IoU"] + out["Neutrino_IoU"])
        for cls, name in ((1, "Cosmic"), (2, "Neutrino")):  # pixels without charge are never predicted cls
            pc, tc = pred == cls, lab == cls
            out.update(precision_recall(name, _count(img, pc & tc, b), _count(img, pc, b),
                                        _count(img, tc, b) + missed[:, cls]))
        per_plane.append(out)
    return combine_planes(per_plane)
