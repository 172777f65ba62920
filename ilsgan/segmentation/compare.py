"""Our masks next to the classical baselines on the same test images, as one table.

A layered GAN is only worth training if its masks beat what needs no training at all. The baselines
(:mod:`ilsgan.data.baselines`) are: ``allfg`` (everything foreground: the floor), ``otsu`` (Otsu's
threshold on luma), ``kmeans`` (2-means on RGB) and ``border`` (a colour model of the image border);
the last three pick as foreground the part less present on the image border.
"""

from __future__ import annotations

from typing import Dict, Iterable, Mapping

__all__ = ["BASELINES", "baseline_metrics", "comparison_table", "best_baseline"]

BASELINES = ("allfg", "otsu", "kmeans", "border")
_COLUMNS = (("iou", "IoU"), ("dice", "Dice"), ("dataset_iou", "dataset IoU"), ("miou", "mIoU"),
            ("pixel_acc", "pixel acc"))


def baseline_metrics(test_dataset, methods: Iterable[str] = BASELINES) -> Dict[str, Dict[str, float]]:
    """Metrics of each baseline on a dataset of ``(image uint8 [3,H,W], mask bool [1,H,W])`` items."""
    from ..data import baselines

    pairs = (test_dataset[i] for i in range(len(test_dataset)))
    return baselines.evaluate(((img.numpy(), m.numpy()) for img, m in pairs), list(methods))


def best_baseline(results: Mapping[str, Mapping[str, float]]) -> str:
    """The name of the baseline (a key of ``results`` in :data:`BASELINES`) with the highest per-image IoU."""
    names = [k for k in results if k in BASELINES and k != "allfg"]
    if not names:
        raise ValueError("best_baseline: no baseline in the results")
    return max(names, key=lambda k: results[k]["iou"])


def comparison_table(results: Mapping[str, Mapping[str, float]], title: str | None = None) -> str:
    """A text table, one row per method (ours first, then the baselines), with the per-image IoU's
    margin over the best classical baseline in the last column."""
    rows = [k for k in results if k not in BASELINES] + [k for k in BASELINES if k in results]
    best = best_baseline(results) if any(k in BASELINES and k != "allfg" for k in results) else None
    w = max(len("method"), *(len(k) for k in rows))
    lines = [title] if title else []
    head = f"{'method'.ljust(w)}  " + "  ".join(f"{h:>{max(len(h), 6)}}" for _, h in _COLUMNS)
    if best:
        head += f"  {'IoU vs ' + best:>16}"
    lines += [head, "-" * len(head)]
    for k in rows:
        r = results[k]
        line = f"{k.ljust(w)}  " + "  ".join(f"{r[c]:>{max(len(h), 6)}.3f}" for c, h in _COLUMNS)
        if best:
            line += f"  {r['iou'] - results[best]['iou']:>+16.3f}"
        lines.append(line)
    return "\n".join(lines)
