"""The logits contract: one tensor ``[B, C, P, H, W]`` from every network, split only where a plane is needed.

Every network that :func:`tpcflow.models.registry.build_network` builds returns, from
``forward(x [B, P, H, W])``, raw class scores (no softmax) as **one** tensor
``[B, n_classes, P, H, W]``: batch, class, plane, height (time), width (wire) in CosmicTagger's
image layout.  The sparse network's ``forward_sparse`` is the one exception by design: it
returns, per plane, the logits of that plane's voxels only, ``[N_p, n_classes]``.

:func:`plane_pairs` is the one place that splits logits into planes and checks them against
the labels; the loss and the metrics both use it.  CosmicTagger's own networks return a tuple
of P tensors ``[B, C, H, W]``; ``torch.stack(planes, dim=2)`` turns that into this contract.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["plane_pairs"]


def plane_pairs(logits: torch.Tensor | Sequence[torch.Tensor],
                labels: torch.Tensor | Sequence[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pair each plane's logits with its labels, checked.

    Parameters
    ----------
    logits : Tensor or sequence of Tensor
        ``[B, C, P, H, W]`` (the contract); or P tensors ``[B, C, H, W]``, or P per-voxel tensors
        ``[N_p, C]`` (``forward_sparse``).
    labels : Tensor or sequence of Tensor
        ``[B, P, H, W]`` integer labels, or P tensors ``[B, H, W]`` / ``[N_p]``.

    Returns
    -------
    list of (logits, labels)
        One pair per plane: ``([B, C, H, W], [B, H, W])`` or ``([N_p, C], [N_p])``.

    Raises
    ------
    ValueError
        If the logits are not one of the forms above, or the planes, batch or spatial sizes of
        logits and labels differ (naming the plane and both shapes).
    """
    if isinstance(logits, torch.Tensor):
        if logits.dim() != 5:
            raise ValueError(f"logits: expected one [B, C, P, H, W] tensor (or P per-plane tensors), but got shape "
                             f"{tuple(logits.shape)}")
        logits = logits.unbind(2)
    if isinstance(labels, torch.Tensor):
        if labels.dim() == 4:
            labels = labels.unbind(1)
        elif len(logits) == 1:
            labels = [labels]
        else:
            raise ValueError(f"labels: expected [B, P, H, W], but got shape {tuple(labels.shape)}")
    if len(logits) != len(labels):
        raise ValueError(f"logits have {len(logits)} planes but labels have {len(labels)}")
    for p, (lg, lb) in enumerate(zip(logits, labels)):
        if lg.dim() == 2:  # per-voxel [N, C] and [N]
            ok = lb.dim() == 1 and lg.shape[0] == lb.shape[0]
        else:
            ok = lg.dim() >= 3 and lg.shape[0] == lb.shape[0] and lg.shape[2:] == lb.shape[1:]
        if not ok:
            raise ValueError(f"plane {p}: logits {tuple(lg.shape)} do not match labels {tuple(lb.shape)} "
                             f"(expected [B, C, H, W] with [B, H, W], or [N, C] with [N])")
    return list(zip(logits, labels))
