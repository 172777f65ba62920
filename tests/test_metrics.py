"""Segmentation metrics on hand-made masks with known answers."""

import numpy as np
import pytest
import torch

from ilsgan.metrics import SegmentationMeter, confusion_counts, segmentation_metrics


def _m(rows):
    return torch.tensor(rows, dtype=torch.bool)


# 4x4 masks. pred: left half (8 px). target: top-left 2x2 (4 px) + (2,2) -> tp=4, fp=4, fn=1, tn=7
P1 = _m([[1, 1, 0, 0]] * 4)
T1 = _m([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])


def test_confusion_counts_known():
    c = confusion_counts(P1, T1)
    assert c.tolist() == [[4, 4, 1, 7]]


def test_single_image_known_values():
    r = segmentation_metrics(P1, T1)
    assert r["iou"] == pytest.approx(4 / 9)
    assert r["dice"] == pytest.approx(8 / 13)
    assert r["dataset_iou"] == pytest.approx(4 / 9)
    assert r["bg_iou"] == pytest.approx(7 / 12)
    assert r["miou"] == pytest.approx((4 / 9 + 7 / 12) / 2)
    assert r["pixel_acc"] == pytest.approx(11 / 16)
    assert r["n_images"] == 1


def test_empty_empty_counts_as_one_and_dataset_level_differs():
    empty = torch.zeros(4, 4, dtype=torch.bool)
    pred = torch.stack([P1, empty])
    tgt = torch.stack([T1, empty])
    r = segmentation_metrics(pred, tgt)
    assert r["iou"] == pytest.approx((4 / 9 + 1) / 2)
    assert r["dice"] == pytest.approx((8 / 13 + 1) / 2)
    assert r["dataset_iou"] == pytest.approx(4 / 9)  # empty image adds nothing to the sums
    assert r["pixel_acc"] == pytest.approx((11 + 16) / 32)
    assert r["bg_iou"] == pytest.approx((7 + 16) / (12 + 16))


def test_empty_prediction_on_nonempty_target_is_zero():
    r = segmentation_metrics(torch.zeros(1, 1, 4, 4), T1[None, None].float())
    assert r["iou"] == 0.0 and r["dice"] == 0.0 and r["dataset_iou"] == 0.0


def test_perfect_and_inverted():
    r = segmentation_metrics(T1, T1)
    assert r["iou"] == r["dice"] == r["miou"] == r["pixel_acc"] == 1.0
    r = segmentation_metrics(~T1, T1)
    assert r["iou"] == 0.0 and r["pixel_acc"] == 0.0 and r["miou"] == 0.0


def test_streaming_equals_one_shot_and_accepts_layouts():
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(10, 1, 8, 8, generator=g) > 0.5
    tgt = torch.rand(10, 1, 8, 8, generator=g) > 0.4
    whole = segmentation_metrics(pred, tgt)
    meter = SegmentationMeter()
    for i in range(0, 10, 3):
        meter.update(pred[i:i + 3].numpy().astype(np.uint8) * 255, tgt[i:i + 3, 0])  # numpy 0/255, [N,H,W]
    assert meter.compute() == pytest.approx(whole)
    # per-image mean vs a direct loop
    ious = [((p & t).sum() / (p | t).sum()).item() for p, t in zip(pred, tgt)]
    assert whole["iou"] == pytest.approx(np.mean(ious))


def test_validation_errors():
    with pytest.raises(ValueError, match="pred and target"):
        confusion_counts(torch.zeros(2, 4, 4), torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match="pred"):
        confusion_counts(torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4))
    with pytest.raises(TypeError, match="target"):
        confusion_counts(torch.zeros(4, 4), [[0]])
    with pytest.raises(ValueError, match="no images"):
        SegmentationMeter().compute()
