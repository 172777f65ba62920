"""Training statistics: accumulate per-phase scalars between ticks, write JSONL, warn on mask collapse,
optional TensorBoard, and the loss/metric plot (matplotlib)."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import torch

__all__ = ["StatsCollector", "JsonlLogger", "collapse_warning", "plot_log", "TensorBoardWriter"]


class StatsCollector:
    """Sums detached scalar tensors per name without host syncs; :meth:`reduce` returns means
    (averaged over ranks under torch.distributed) and resets."""

    def __init__(self):
        self._sum: Dict[str, torch.Tensor] = {}
        self._cnt: Dict[str, int] = {}

    def add(self, stats: Dict[str, torch.Tensor]) -> None:
        for k, v in stats.items():
            v = v.detach().double() if torch.is_tensor(v) else torch.tensor(float(v), dtype=torch.float64)
            self._sum[k] = self._sum[k] + v if k in self._sum else v.clone()
            self._cnt[k] = self._cnt.get(k, 0) + 1

    def reduce(self, world_size: int = 1) -> Dict[str, float]:
        keys = sorted(self._sum)
        if not keys:
            return {}
        vals = torch.stack([self._sum[k].reshape(()).cpu() / self._cnt[k] for k in keys])
        if world_size > 1:
            import torch.distributed as dist
            dev = next(iter(self._sum.values())).device
            vals = vals.to(dev)
            dist.all_reduce(vals)
            vals = (vals / world_size).cpu()
        self._sum.clear()
        self._cnt.clear()
        return {k: float(v) for k, v in zip(keys, vals.tolist())}


def collapse_warning(record: Dict[str, float], threshold: float = 0.5, min_diversity: float = 0.1) -> Optional[str]:
    """A message when most generated masks are (almost) all-foreground or all-background, or when the
    masks are binarized but the same for every sample (``Mask/diversity``, the per-pixel std of the
    mask over the batch, below ``min_diversity``): a fixed shape does not segment anything."""
    fg = record.get("Mask/collapsed_fg", 0.0)
    bg = record.get("Mask/collapsed_bg", 0.0)
    area = record.get("Mask/area")
    if fg >= threshold:
        return (f"mask collapse: {fg:.0%} of generated masks cover > 99% of the image (all foreground; "
                f"mean area {area:.3f})")
    if bg >= threshold:
        return (f"mask collapse: {bg:.0%} of generated masks cover < 1% of the image (all background; "
                f"mean area {area:.3f})")
    div, binarized = record.get("Mask/diversity"), record.get("Mask/binarized", 0.0)
    if div is not None and binarized >= 0.8 and div < min_diversity:
        return (f"fixed mask: the masks are binarized ({binarized:.0%} of pixels) but nearly the same for every "
                f"sample (per-pixel std over the batch {div:.3f} < {min_diversity}); they do not follow the objects")
    return None


class JsonlLogger:
    """Append one JSON object per line (flushed)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: Dict) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._f.write(json.dumps(clean, sort_keys=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_jsonl(path: Path) -> List[Dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    pass
    return out


class TensorBoardWriter:
    """``torch.utils.tensorboard.SummaryWriter`` if the tensorboard package is installed; else a no-op."""

    def __init__(self, logdir: Path, enabled: bool = True):
        self.writer = None
        self.error = None
        if not enabled:
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(str(logdir))
        except Exception as e:  # noqa: BLE001 - tensorboard is optional
            self.error = f"{type(e).__name__}: {e}"

    def write(self, record: Dict, step_kimg: float) -> None:
        if self.writer is None:
            return
        step = int(round(step_kimg * 1000))
        for k, v in record.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self.writer.add_scalar(k, v, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


_PANELS = [
    ("Adversarial losses", ["Loss/G/adv", "Loss/D/real", "Loss/D/fake"]),
    ("R1 penalty (raw ||grad||^2)", ["Loss/r1_penalty"]),
    ("ILS term", ["Loss/ILS"]),
    ("Mask statistics", ["Mask/area", "Mask/binarized", "Mask/diversity", "Mask/layout_diversity",
                         "Mask/collapsed_fg", "Mask/collapsed_bg"]),
    ("Augmentation", ["Progress/augment_p", "Progress/ada_rt"]),
    ("Speed (sec/kimg)", ["Timing/sec_per_kimg"]),
]


def plot_log(log_path: Path, out_path: Path) -> Optional[Path]:
    """Plot the JSONL log (losses, mask statistics, augmentation p, speed) vs kimg into a PNG."""
    records = read_jsonl(log_path)
    records = [r for r in records if "Progress/kimg" in r]
    if not records:
        return None
    # a bare Figure (Agg canvas), not pyplot: no global figure registry and no GUI backend state kept
    # between snapshots, so a long run's memory does not creep up with every plot
    from matplotlib.figure import Figure
    fig = Figure(figsize=(15, 8))
    axes = fig.subplots(2, 3)
    x = [r["Progress/kimg"] for r in records]
    for ax, (title, keys) in zip(axes.flat, _PANELS):
        for k in keys:
            ys = [r.get(k) for r in records]
            pts = [(a, b) for a, b in zip(x, ys) if isinstance(b, (int, float))]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k.split("/", 1)[-1], lw=1.2)
        ax.set_title(title)
        ax.set_xlabel("kimg")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    tmp = Path(out_path).with_name(Path(out_path).name + ".tmp.png")
    try:
        fig.tight_layout()
        fig.savefig(tmp, dpi=80)
        tmp.replace(out_path)
    finally:
        fig.clear()
        if tmp.exists():  # a failed save (disk full) leaves no partial file behind
            try:
                tmp.unlink()
            except OSError:
                pass
    return Path(out_path)
