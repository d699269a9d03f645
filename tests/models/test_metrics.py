"""CosmicTagger metrics on hand-made tensors, checked against an independent numpy loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tpcflow.models.metrics import METRIC_NAMES, segmentation_metrics


def _logits_from_pred(pred):  # pred [B, H, W] -> one-hot logits [B, 3, H, W]
    return torch.nn.functional.one_hot(torch.as_tensor(pred), 3).permute(0, 3, 1, 2).float()


def _np_plane(pred, lab):
    """Per-plane metrics written as explicit per-image loops."""
    total = np.mean(pred == lab)
    nb, nu, ciou, niou = [], [], [], []
    prec = {1: [], 2: []}
    rec = {1: [], 2: []}
    for p, t in zip(pred, lab):
        for c in (1, 2):
            hits = np.sum((p == c) & (t == c))
            if np.sum(p == c) or np.sum(t == c):
                prec[c].append(hits / np.sum(p == c) if np.sum(p == c) else 0.0)
            if np.sum(t == c):
                rec[c].append(hits / np.sum(t == c))
        mask = t != 0
        if mask.sum():
            nb.append(np.sum((p == t) & mask) / mask.sum())
        mask = t == 2
        if mask.sum():
            nu.append(np.sum((p == 2) & mask) / mask.sum())
        for c, acc in ((1, ciou), (2, niou)):
            union = np.sum((p == c) | (t == c))
            acc.append(1.0 if union == 0 else np.sum((p == c) & (t == c)) / union)
    out = {
        "Total_Accuracy": total,
        "Non_Bkg_Accuracy": np.mean(nb) if nb else math.nan,
        "Neutrino_Accuracy": np.mean(nu) if nu else math.nan,
        "Cosmic_IoU": np.mean(ciou),
        "Neutrino_IoU": np.mean(niou),
    }
    out["mIoU"] = 0.5 * (out["Cosmic_IoU"] + out["Neutrino_IoU"])
    for c, name in ((1, "Cosmic"), (2, "Neutrino")):
        out[f"{name}_Precision"] = np.mean(prec[c]) if prec[c] else math.nan
        out[f"{name}_Recall"] = np.mean(rec[c]) if rec[c] else math.nan
    return out


def test_hand_computed_single_image():
    # one 2x4 image per plane; plane 0 worked by hand:
    # label  [[0,1,1,2],[0,0,2,2]]   pred [[0,1,0,2],[1,0,2,0]]
    lab0 = np.array([[[0, 1, 1, 2], [0, 0, 2, 2]]])
    pred0 = np.array([[[0, 1, 0, 2], [1, 0, 2, 0]]])
    labels = torch.from_numpy(np.stack([lab0[:, None]] * 3, axis=1)[:, :, 0])
    logits = [_logits_from_pred(pred0)] * 3
    m = segmentation_metrics(logits, labels)
    assert m["plane0/Total_Accuracy"] == pytest.approx(5 / 8)
    assert m["plane0/Non_Bkg_Accuracy"] == pytest.approx(3 / 5)  # 1,_,2 | _,2,_ of 5 non-bkg
    assert m["plane0/Neutrino_Accuracy"] == pytest.approx(2 / 3)
    assert m["plane0/Cosmic_IoU"] == pytest.approx(1 / 3)  # inter {(0,1)}, union {(0,1),(0,2),(1,0)}
    assert m["plane0/Neutrino_IoU"] == pytest.approx(2 / 3)
    assert m["plane0/mIoU"] == pytest.approx(0.5)
    assert m["Average/mIoU"] == pytest.approx(0.5)
    assert m["plane0/Cosmic_Precision"] == pytest.approx(1 / 2)  # predicted cosmic (0,1), (1,0): one right
    assert m["plane0/Cosmic_Recall"] == pytest.approx(1 / 2)  # cosmic (0,1), (0,2): one found
    assert m["plane0/Neutrino_Precision"] == pytest.approx(1.0)  # predicted neutrino (0,3), (1,2): both right
    assert m["plane0/Neutrino_Recall"] == m["plane0/Neutrino_Accuracy"]


def test_empty_union_gives_iou_one_and_empty_images_are_skipped():
    lab = np.zeros((2, 3, 2, 2), dtype=np.int64)
    lab[1, :, 0, 0] = 1  # image 1 has one cosmic pixel, image 0 is empty
    pred = np.zeros((2, 2, 2), dtype=np.int64)
    m = segmentation_metrics([_logits_from_pred(pred)] * 3, torch.from_numpy(lab))
    # neutrino: union empty in both images -> 1.0; cosmic: image 0 -> 1.0, image 1 -> 0.0
    assert m["plane1/Neutrino_IoU"] == 1.0
    assert m["plane1/Cosmic_IoU"] == 0.5
    # non-background accuracy: image 0 has none (skipped, not NaN), image 1 gets 0/1
    assert m["plane1/Non_Bkg_Accuracy"] == 0.0
    # no neutrino pixel anywhere: undefined
    assert math.isnan(m["plane1/Neutrino_Accuracy"]) and math.isnan(m["Average/Neutrino_Accuracy"])
    # a cosmic pixel that nothing predicts: precision 0 and recall 0 (image 0, with neither, is skipped)
    assert m["plane1/Cosmic_Precision"] == 0.0 and m["plane1/Cosmic_Recall"] == 0.0
    assert math.isnan(m["plane1/Neutrino_Precision"]) and math.isnan(m["plane1/Neutrino_Recall"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_batches_match_numpy(seed):
    rng = np.random.default_rng(seed)
    lab = rng.choice(3, size=(3, 3, 6, 5), p=[0.7, 0.2, 0.1])
    logits = [torch.from_numpy(rng.normal(size=(3, 3, 6, 5)).astype(np.float32)) for _ in range(3)]
    m = segmentation_metrics(logits, torch.from_numpy(lab))
    expected_planes = [_np_plane(lg.numpy().argmax(1), lab[:, p]) for p, lg in enumerate(logits)]
    for p, exp in enumerate(expected_planes):
        for name in METRIC_NAMES:
            assert m[f"plane{p}/{name}"] == pytest.approx(exp[name], nan_ok=True), name
    for name in METRIC_NAMES:
        vals = [e[name] for e in expected_planes]
        assert m[f"Average/{name}"] == pytest.approx(sum(vals) / 3)
    assert set(m) == {f"{k}/{n}" for k in ("plane0", "plane1", "plane2", "Average") for n in METRIC_NAMES}


def test_five_dim_logits_and_shape_errors():
    lab = torch.randint(0, 3, (1, 3, 4, 4))
    logits = torch.randn(1, 3, 3, 4, 4)
    a = segmentation_metrics(logits, lab)
    b = segmentation_metrics(list(logits.unbind(2)), lab)
    assert a == b
    with pytest.raises(ValueError, match="planes"):
        segmentation_metrics(list(logits.unbind(2))[:2], lab)
    with pytest.raises(ValueError, match="do not match"):
        segmentation_metrics([torch.randn(1, 3, 4, 5)] * 3, lab)
