"""Snapshot image grids: composite, foreground, background, mask and masked foreground of G_ema on a
fixed set of latents (rows, in this order), plus a grid of real training images."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

__all__ = ["GRID_ROWS", "layer_rows", "save_layer_grid", "save_image_grid", "fixed_latents"]

GRID_ROWS = ("composite", "foreground", "background", "mask", "masked foreground")


def fixed_latents(n: int, z_dim: int, seed: int = 0) -> torch.Tensor:
    """``n`` latents from a private generator (does not touch the global RNG)."""
    return torch.randn([n, z_dim], generator=torch.Generator().manual_seed(int(seed) + 12345))


@torch.no_grad()
def layer_rows(G, z: torch.Tensor, batch: int = 16, device="cpu"):
    """Images in [-1, 1] ``[5, N, 3, R, R]`` for :data:`GRID_ROWS` (mask as gray; masked foreground
    on white)."""
    outs = []
    for i in range(0, z.shape[0], batch):
        o = G(z[i:i + batch].to(device), noise_mode="const", return_layers=True)
        m = o["mask"].float().clamp(0, 1)
        fg = o["fg"].float()
        mask_img = (m * 2 - 1).expand(-1, 3, -1, -1)
        masked = fg * m + (1 - m)
        outs.append(torch.stack([o["composite"].float(), fg, o["bg"].float(), mask_img, masked]).cpu())
    return torch.cat(outs, dim=1)


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def save_image_grid(images: torch.Tensor, path: Path, cols: int) -> Path:
    """Images ``[N, 3, R, R]`` in [-1, 1] (or uint8) as a ``cols``-wide PNG grid (written atomically)."""
    if images.dtype == torch.uint8:
        images = images.float() / 127.5 - 1
    n, _, h, w = images.shape
    rows = (n + cols - 1) // cols
    canvas = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        canvas[r * h:(r + 1) * h, c * w:(c + 1) * w] = _to_uint8(images[i])
    return _save(canvas, path)


def save_layer_grid(G, z: torch.Tensor, path: Path, cols: int = 12, device="cpu") -> Path:
    """One PNG: for each block of ``cols`` latents, 5 rows (:data:`GRID_ROWS`), a white gap between
    blocks."""
    rows = layer_rows(G, z, device=device)  # [5, N, 3, R, R]
    _, n, _, h, w = rows.shape
    blocks = (n + cols - 1) // cols
    gap = max(2, h // 8)
    canvas = np.full((blocks * (5 * h + gap) - gap, cols * w, 3), 255, np.uint8)
    for i in range(n):
        blk, c = divmod(i, cols)
        for r in range(5):
            y = blk * (5 * h + gap) + r * h
            canvas[y:y + h, c * w:(c + 1) * w] = _to_uint8(rows[r, i])
    return _save(canvas, path)


def _save(canvas: np.ndarray, path: Path) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    try:
        Image.fromarray(canvas).save(tmp)
        tmp.replace(path)
    finally:
        if tmp.exists():  # a failed write (disk full) leaves no partial file behind
            try:
                tmp.unlink()
            except OSError:
                pass
    return path
