"""Mask priors of the generator loss, on the perturbed mask: the binarization term ``mean min(m, 1 - m)``
and the area prior ``relu(area_min - mean m)``, built on :func:`ilsgan.ops.mask_terms`.

All functions return per-sample values [N] with ``reduction="none"`` (the G loss adds them to the
per-sample adversarial term before the batch mean) or their mean with ``reduction="mean"``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ilsgan.ops import mask_terms

_REDUCTIONS = ("none", "mean", "sum")


def _reduce(v: Tensor, reduction: str) -> Tensor:
    if reduction == "none":
        return v
    return v.mean() if reduction == "mean" else v.sum()


def _check(fn: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _area_term(mean_m: Tensor, area_min: float, mirror: bool, ceiling_mean: Optional[Tensor] = None) -> Tensor:
    """``relu(area_min - mean_m)`` (+ ``relu(area_min - (1 - ceiling_mean))`` if ``mirror``; default
    ``ceiling_mean = mean_m``)."""
    area = torch.relu(area_min - mean_m)
    if mirror:
        area = area + torch.relu(area_min - (1 - (mean_m if ceiling_mean is None else ceiling_mean)))
    return area


def binarization_loss(m: Tensor, reduction: str = "none", impl: str = "auto", strict: Optional[bool] = None) -> Tensor:
    """``L_bin[n] = mean_hw min(m, 1 - m)``."""
    _check("binarization_loss", reduction)
    return _reduce(mask_terms(m, impl=impl, strict=strict)[:, 0], reduction)


def area_loss(
    m: Tensor,
    area_min: float = 0.25,
    mirror: bool = False,
    reduction: str = "none",
    impl: str = "auto",
    strict: Optional[bool] = None,
) -> Tensor:
    """``L_area[n] = relu(area_min - mean_hw m)`` (+ ``relu(area_min - (1 - mean m))`` if ``mirror``;
    the release adds the mirror term when the perturbation is off)."""
    _check("area_loss", reduction)
    return _reduce(_area_term(mask_terms(m, impl=impl, strict=strict)[:, 1], area_min, mirror), reduction)


def mask_loss(
    m: Tensor,
    w_bin: float = 2.0,
    w_area: float = 2.0,
    area_min: float = 0.25,
    mirror: bool = False,
    reduction: str = "none",
    impl: str = "auto",
    strict: Optional[bool] = None,
    mirror_mask: Optional[Tensor] = None,
) -> Tensor:
    """``w_bin * L_bin + w_area * L_area`` per sample, from one :func:`mask_terms` pass.

    Defaults are the paper's (weights 2 and 2, minimum area 0.25, no mirror term). ``mirror_mask``
    ([N,1,H,W], default ``m``): the mask whose mean coverage the mirror term bounds. The G loss passes
    the unperturbed mask there, because the perturbed one is zero-filled where the shift uncovers the
    border: at shift 0.25 a mask of all ones reads about 0.77 and would slip under a 0.75 ceiling.
    """
    _check("mask_loss", reduction)
    if mirror_mask is not None and (not isinstance(mirror_mask, Tensor) or mirror_mask.shape != m.shape):
        got = tuple(mirror_mask.shape) if isinstance(mirror_mask, Tensor) else type(mirror_mask).__name__
        raise ValueError(f"mask_loss: mirror_mask must be a tensor of m's shape {tuple(m.shape)}, got {got}")
    t = mask_terms(m, impl=impl, strict=strict)
    ceiling_mean = None
    if mirror and mirror_mask is not None:
        ceiling_mean = mask_terms(mirror_mask, impl=impl, strict=strict)[:, 1]
    return _reduce(w_bin * t[:, 0] + w_area * _area_term(t[:, 1], area_min, mirror, ceiling_mean), reduction)


# The diversity term looks at the mask's layout on a coarse grid, so that per-pixel speckle (which the
# noise inputs produce for free) cannot satisfy it: only masks that differ in where the object is count.
DIVERSITY_GRID = 8


def mask_diversity(m: Tensor, grid: int = DIVERSITY_GRID) -> Tensor:
    """Layout diversity of a batch of masks ``m`` [N,1,H,W]: the per-cell standard deviation over the
    batch of ``m`` average-pooled to ``grid x grid`` (``min(grid, H)`` cells a side), averaged over the
    cells. 0 when every sample has the same mask, at most 0.5; 0.39 for the ground-truth masks of the
    built-in synthetic data (objects of varying size and place) at 32 and 64 px."""
    if not isinstance(m, Tensor) or m.dim() != 4 or m.shape[1] != 1:
        got = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
        raise ValueError(f"mask_diversity: m must be a tensor [N, 1, H, W], got {got}")
    if m.shape[0] < 2:
        raise ValueError(f"mask_diversity: m needs at least 2 samples, got {m.shape[0]}")
    cells = min(grid, m.shape[-2], m.shape[-1])
    pooled = F.adaptive_avg_pool2d(m.to(torch.promote_types(m.dtype, torch.float32)), cells).flatten(1)
    # the eps keeps the gradient finite when every mask is identical
    return (pooled.var(0, unbiased=False) + 1e-8).sqrt().mean()

