"""Trivial unsupervised segmentation baselines, to show how hard a dataset is.

Every method maps one RGB image (uint8 ``[H, W, 3]``) to a boolean foreground mask:

- ``otsu``: Otsu threshold on luminance (Rec. 601 luma).
- ``kmeans``: 2-means on RGB colour (k-means++-style deterministic init, 15 Lloyd iterations).
- ``border``: border-colour model — the colours of the image border (a ring ``max(1, H // 32)`` px
  wide) are summarized by 3-means, dropping clusters holding < 15% of the ring (an object touching
  the border); a pixel's score is its RGB distance to the nearest remaining border colour;
  foreground = score above max(Otsu threshold of the scores, 25) (far from every border colour).
- ``allfg``: everything foreground, the floor (its IoU is the mean object coverage).
- ``grabcut`` (only when OpenCV is installed): GrabCut initialized with the rectangle inset by the
  border ring, 5 iterations.

Polarity (otsu, kmeans): of the two clusters, the foreground is the one *less present on the border
relative to its overall area* (smaller ``border fraction / image fraction``); objects are
usually inside the frame and backgrounds touch it. Ties go to the smaller cluster.

Metrics (per image, averaged; the DRC protocol): foreground IoU and Dice with empty/empty = 1;
dataset-level IoU = sum of intersections / sum of unions over all images.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import numpy as np

__all__ = ["METHODS", "available_methods", "predict", "evaluate", "format_table"]


def _luma(img: np.ndarray) -> np.ndarray:
    f = img.astype(np.float32)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample (between-class variance maximized over ``bins`` cut points)."""
    v = values.ravel().astype(np.float64)
    lo, hi = float(v.min()), float(v.max())
    if hi <= lo:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    p = hist.astype(np.float64) / v.size
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(p)
    mu = np.cumsum(p * centres)
    mu_t = mu[-1]
    w1 = 1.0 - w0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mu_t * w0 - mu) ** 2 / (w0 * w1)
    between[~np.isfinite(between)] = -1
    k = int(np.argmax(between[:-1]))
    return float(edges[k + 1])


def border_ring(h: int, w: int) -> np.ndarray:
    b = max(1, min(h, w) // 32)
    ring = np.zeros((h, w), bool)
    ring[:b] = ring[-b:] = True
    ring[:, :b] = ring[:, -b:] = True
    return ring


def choose_polarity(labels: np.ndarray) -> np.ndarray:
    """Two-cluster labels (bool) -> foreground mask: the cluster less present on the border relative
    to its area."""
    ring = border_ring(*labels.shape)
    area1 = labels.mean()
    if area1 in (0.0, 1.0):
        return np.zeros_like(labels, bool)
    border1 = labels[ring].mean()
    score1 = border1 / area1
    score0 = (1 - border1) / (1 - area1)
    if math.isclose(score1, score0):
        return labels if area1 <= 0.5 else ~labels
    return labels if score1 < score0 else ~labels


def _kmeans(x: np.ndarray, k: int, iters: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic k-means on rows of ``x`` (float32): init at the darkest pixel, then farthest-point."""
    lum = x.sum(1)
    centres = [x[int(np.argmin(lum))]]
    d = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        centres.append(x[int(np.argmax(d))])
        d = np.minimum(d, ((x - centres[-1]) ** 2).sum(1))
    c = np.stack(centres).astype(np.float32)
    lab = np.zeros(len(x), np.int64)
    for _ in range(iters):
        dist = ((x[:, None, :] - c[None]) ** 2).sum(2)
        lab = dist.argmin(1)
        newc = c.copy()
        for j in range(k):
            sel = lab == j
            if sel.any():
                newc[j] = x[sel].mean(0)
        if np.allclose(newc, c):
            break
        c = newc
    return lab, c


def otsu(img: np.ndarray) -> np.ndarray:
    lum = _luma(img)
    return choose_polarity(lum > otsu_threshold(lum))


def kmeans(img: np.ndarray) -> np.ndarray:
    h, w, _ = img.shape
    lab, _ = _kmeans(img.reshape(-1, 3).astype(np.float32), 2)
    return choose_polarity(lab.reshape(h, w) == 1)


BORDER_MIN_SHARE = 0.15  # border colour clusters smaller than this are ignored (object touching the border)
BORDER_MIN_DIST = 25.0  # RGB distance (0..255 units) below which a pixel always counts as border colour


def border(img: np.ndarray) -> np.ndarray:
    h, w, _ = img.shape
    x = img.reshape(-1, 3).astype(np.float32)
    ring = border_ring(h, w).ravel()
    lab, c = _kmeans(x[ring], 3)
    share = np.bincount(lab, minlength=len(c)) / max(len(lab), 1)
    c = c[share >= BORDER_MIN_SHARE] if (share >= BORDER_MIN_SHARE).any() else c
    dist = np.sqrt(((x[:, None, :] - c[None]) ** 2).sum(2).min(1)).reshape(h, w)
    return dist > max(otsu_threshold(dist), BORDER_MIN_DIST)


def grabcut(img: np.ndarray) -> np.ndarray:
    import cv2  # optional

    h, w, _ = img.shape
    b = max(1, min(h, w) // 32)
    mask = np.zeros((h, w), np.uint8)
    bgd = np.zeros((1, 65), np.float64)
    fgd = np.zeros((1, 65), np.float64)
    bgr = np.ascontiguousarray(img[..., ::-1])
    cv2.grabCut(bgr, mask, (b, b, w - 2 * b, h - 2 * b), bgd, fgd, 5, cv2.GC_INIT_WITH_RECT)
    return (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)


def allfg(img: np.ndarray) -> np.ndarray:
    """Everything is foreground: the floor any method must beat (IoU = mean object coverage)."""
    return np.ones(img.shape[:2], bool)


METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "otsu": otsu, "kmeans": kmeans, "border": border, "grabcut": grabcut, "allfg": allfg,
}


def available_methods() -> list[str]:
    out = ["allfg", "otsu", "kmeans", "border"]
    try:
        import cv2  # noqa: F401

        out.append("grabcut")
    except ImportError:
        pass
    return out


def predict(method: str, img: np.ndarray) -> np.ndarray:
    if method not in METHODS:
        raise ValueError(f"unknown baseline {method!r}; available: {available_methods()}")
    return METHODS[method](np.asarray(img))


def evaluate(pairs: Iterable[tuple[np.ndarray, np.ndarray]], methods: list[str] | None = None,
             progress: bool = False, total: int | None = None) -> dict[str, dict[str, float]]:
    """Run the baselines on ``(image uint8 [H, W, 3], mask bool [H, W])`` pairs.

    Returns ``{method: {"iou", "dice", "dataset_iou", "miou", "pixel_acc", "n"}}`` computed with
    :class:`ilsgan.metrics.SegmentationMeter` (per-image means; empty/empty = 1).
    """
    methods = available_methods() if methods is None else list(methods)
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown baseline {m!r}; available: {available_methods()}")
    from ilsgan.metrics import SegmentationMeter

    meters = {m: SegmentationMeter() for m in methods}
    n = 0
    it = pairs
    if progress:
        from tqdm import tqdm

        it = tqdm(pairs, total=total, desc="baselines", unit="img")
    for img, gt in it:
        gt = np.asarray(gt).astype(bool)
        if gt.ndim == 3:
            gt = gt[0]
        img = np.asarray(img)
        if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
            img = img.transpose(1, 2, 0)
        n += 1
        for m in methods:
            meters[m].update(predict(m, img), gt)
    if n == 0:
        raise ValueError("no image+mask pairs to evaluate")
    out = {}
    for m, meter in meters.items():
        r = meter.compute()
        out[m] = {k: r[k] for k in ("iou", "dice", "dataset_iou", "miou", "pixel_acc")}
        out[m]["n"] = int(r["n_images"])
    return out


def format_table(results: dict[str, dict[str, float]], title: str | None = None) -> str:
    lines = []
    if title:
        lines.append(title)
    lines.append(f"{'method':<10} {'IoU':>7} {'Dice':>7} {'dataset IoU':>12} {'mIoU':>7} {'pix acc':>8} {'n':>6}")
    for m, r in results.items():
        lines.append(f"{m:<10} {r['iou']:>7.3f} {r['dice']:>7.3f} {r['dataset_iou']:>12.3f} "
                     f"{r['miou']:>7.3f} {r['pixel_acc']:>8.3f} {r['n']:>6d}")
    return "\n".join(lines)
