"""Foreground/background segmentation metrics: the scores of the segmentation protocol.

Masks are binary: foreground = True/1. Accepted shapes: ``[H,W]``, ``[N,H,W]`` or ``[N,1,H,W]``
(torch tensors or numpy arrays, bool or any numeric type; nonzero = foreground).

Definitions (all computed from per-image confusion counts tp, fp, fn, tn):

- ``iou``: per-image foreground IoU ``tp / (tp + fp + fn)`` averaged over images (the DRC protocol);
  an image whose prediction and ground truth are both empty counts as 1.
- ``dice``: per-image ``2 tp / (2 tp + fp + fn)`` averaged over images; empty/empty counts as 1.
- ``dataset_iou``: foreground IoU over the whole set, sum of intersections / sum of unions.
- ``miou``: mean of the dataset-level foreground IoU and the dataset-level background IoU
  ``tn / (tn + fp + fn)``.
- ``pixel_acc``: correctly labelled pixels / all pixels over the whole set.

:class:`SegmentationMeter` accumulates the counts batch by batch (memory O(number of images) scalars),
so evaluation never holds all masks at once.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["SegmentationMeter", "confusion_counts", "segmentation_metrics"]


def _as_bool_nhw(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.dim() == 2:
        x = x[None]
    elif x.dim() == 4:
        if x.shape[1] != 1:
            raise ValueError(f"{name} must have 1 channel when 4-D ([N,1,H,W]), got shape {tuple(x.shape)}")
        x = x[:, 0]
    elif x.dim() != 3:
        raise ValueError(f"{name} must be [H,W], [N,H,W] or [N,1,H,W], got shape {tuple(x.shape)}")
    return x != 0 if x.dtype != torch.bool else x


def confusion_counts(pred, target) -> torch.Tensor:
    """Per-image counts ``[N, 4]`` (int64) of (tp, fp, fn, tn) for binary masks of equal shape."""
    p = _as_bool_nhw(pred, "pred")
    t = _as_bool_nhw(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
    t = t.to(p.device)
    p = p.flatten(1)
    t = t.flatten(1)
    tp = (p & t).sum(1)
    fp = (p & ~t).sum(1)
    fn = (~p & t).sum(1)
    tn = (~p & ~t).sum(1)
    return torch.stack([tp, fp, fn, tn], 1).to(torch.int64).cpu()


class SegmentationMeter:
    """Streaming accumulator of the segmentation metrics; call :meth:`update` per batch."""

    def __init__(self):
        self._counts: list[torch.Tensor] = []

    def reset(self) -> None:
        self._counts.clear()

    def update(self, pred, target) -> None:
        self._counts.append(confusion_counts(pred, target))

    @property
    def n_images(self) -> int:
        return int(sum(c.shape[0] for c in self._counts))

    def per_image(self) -> dict[str, np.ndarray]:
        """Per-image foreground IoU and Dice (float64 arrays, empty/empty = 1)."""
        if not self._counts:
            return {"iou": np.zeros(0), "dice": np.zeros(0)}
        c = torch.cat(self._counts).double().numpy()
        tp, fp, fn = c[:, 0], c[:, 1], c[:, 2]
        union = tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / np.maximum(union, 1), 1.0)
            dice = np.where(union > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 1.0)
        return {"iou": iou, "dice": dice}

    def compute(self) -> dict[str, float]:
        """Metrics dict: iou, dice, dataset_iou, miou, fg_iou, bg_iou, pixel_acc, n_images."""
        if not self._counts:
            raise ValueError("SegmentationMeter.compute: no images were added (call update first)")
        c = torch.cat(self._counts).double().sum(0).numpy()
        tp, fp, fn, tn = c
        fg = tp / (tp + fp + fn) if tp + fp + fn > 0 else 1.0
        bg = tn / (tn + fp + fn) if tn + fp + fn > 0 else 1.0
        pi = self.per_image()
        return {
            "iou": float(pi["iou"].mean()),
            "dice": float(pi["dice"].mean()),
            "dataset_iou": float(fg),
            "miou": float(0.5 * (fg + bg)),
            "fg_iou": float(fg),
            "bg_iou": float(bg),
            "pixel_acc": float((tp + tn) / c.sum()),
            "n_images": self.n_images,
        }


def segmentation_metrics(pred, target) -> dict[str, float]:
    """All metrics of :class:`SegmentationMeter` for one batch of masks."""
    m = SegmentationMeter()
    m.update(pred, target)
    return m.compute()
