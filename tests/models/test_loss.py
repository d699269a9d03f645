"""SegmentationLoss against an independent numpy computation of reference spec 4.1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tpcflow.errors import ConfigError
from tpcflow.models.loss import SegmentationLoss


def _np_softmax(logits):  # logits [B, C, H, W]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _np_loss(logits_planes, labels, scheme):
    total = 0.0
    for p, lg in enumerate(logits_planes):
        lg = lg.astype(np.float64)
        lab = labels[:, p]
        prob = _np_softmax(lg)
        b, h, w = np.indices(lab.shape)
        p_true = prob[b, lab, h, w]
        ce = -np.log(p_true)
        if scheme == "none":
            weight = np.ones_like(ce)
        elif scheme == "light":
            weight = np.choose(lab, [1.0, 1.5, 10.0])
        elif scheme == "even":
            counts = [(lab == c).sum() for c in range(3)]
            weight = np.choose(lab, [0.3333333333 / (n + 1) for n in counts])
        else:
            weight = (1 - p_true) ** 2
        total += (weight * ce).sum() / weight.sum()
    return total


def _data(seed, classes=(0, 1, 2)):
    rng = np.random.default_rng(seed)
    logits = [rng.normal(size=(2, 3, 5, 7)).astype(np.float32) for _ in range(3)]
    labels = rng.choice(np.array(classes), size=(2, 3, 5, 7))
    return logits, labels


@pytest.mark.parametrize("scheme", ["none", "light", "even", "focal"])
@pytest.mark.parametrize("classes", [(0, 1, 2), (0, 2), (1,)])
def test_loss_matches_numpy(scheme, classes):
    logits, labels = _data(sum(map(ord, scheme)) + 10 * len(classes), classes)
    got = SegmentationLoss(scheme)([torch.from_numpy(x) for x in logits], torch.from_numpy(labels))
    assert got.dtype == torch.float32 and got.dim() == 0
    np.testing.assert_allclose(float(got), _np_loss(logits, labels, scheme), rtol=1e-5)


def test_planes_are_summed_and_normalised_over_the_whole_minibatch():
    logits, labels = _data(3)
    loss = SegmentationLoss("light")
    t_logits = [torch.from_numpy(x) for x in logits]
    parts = loss.plane_losses(t_logits, torch.from_numpy(labels))
    assert len(parts) == 3
    torch.testing.assert_close(sum(parts), loss(t_logits, torch.from_numpy(labels)))
    # one minibatch of two images is not the mean of two one-image losses when weights differ
    single = [loss([x[i : i + 1] for x in t_logits], torch.from_numpy(labels[i : i + 1])) for i in range(2)]
    assert abs(float(loss(t_logits, torch.from_numpy(labels))) - float(sum(single) / 2)) > 1e-4


def test_focal_all_zero_weights_gives_zero_not_nan():
    labels = torch.zeros(1, 3, 4, 4, dtype=torch.long)
    logits = torch.zeros(1, 3, 4, 4)
    logits[:, 0] = 200.0  # softmax of the true class is exactly 1 in float32
    out = SegmentationLoss("focal")([logits.clone().requires_grad_() for _ in range(3)], labels)
    assert float(out.detach()) == 0.0


def test_weights_carry_no_gradient():
    logits, labels = _data(5)
    t = [torch.from_numpy(x).requires_grad_() for x in logits]
    SegmentationLoss("focal")(t, torch.from_numpy(labels)).backward()
    # the same loss with the weights computed by hand and detached
    t2 = [torch.from_numpy(x).requires_grad_() for x in logits]
    total = 0
    for p, lg in enumerate(t2):
        lab = torch.from_numpy(labels[:, p])
        ce = torch.nn.functional.cross_entropy(lg, lab, reduction="none")
        w = ((1 - torch.softmax(lg, 1).gather(1, lab[:, None])[:, 0]) ** 2).detach()
        total = total + (w * ce).sum() / w.sum()
    total.backward()
    for a, b in zip(t, t2):
        torch.testing.assert_close(a.grad, b.grad)


def test_sparse_logits_and_bad_input():
    loss = SegmentationLoss("none")
    logits = [torch.randn(10, 3) for _ in range(3)]
    labels = [torch.randint(0, 3, (10,)) for _ in range(3)]
    expected = sum(torch.nn.functional.cross_entropy(lg, lb) for lg, lb in zip(logits, labels))
    torch.testing.assert_close(loss(logits, labels), expected)
    with pytest.raises(ConfigError, match="loss_balance_scheme"):
        SegmentationLoss("balanced")
    with pytest.raises(ValueError, match="labels must be in"):
        loss(logits, [lb + 3 for lb in labels])
    with pytest.raises(ValueError, match="planes"):
        loss(logits[:2], labels)
