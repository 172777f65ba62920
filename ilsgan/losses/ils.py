"""The ILS independence loss: CLUB upper bounds of the mutual information between the visible and the
hidden parts of the layers (``m*f`` vs ``m*b``, ``(1-m)*b`` vs ``(1-m)*f``), built on
:func:`ilsgan.ops.ils_terms`."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ilsgan.ops import ils_terms


def ils_loss(
    f: Tensor,
    b: Tensor,
    m: Tensor,
    sigma: float,
    perm1: Optional[Tensor] = None,
    perm2: Optional[Tensor] = None,
    distribution: str = "laplace",
    impl: str = "auto",
    strict: Optional[bool] = None,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    r"""``L_ILS = sigma * (I1 + I2)`` on the *unperturbed* layers (mask not detached).

    ``Ik = -mean_n pos_k[n] + mean_n neg_k[n]`` with the per-sample CLUB terms of
    :func:`ilsgan.ops.ils_terms` (pair 1: ``(m*b, m*f)``, pair 2: ``((1-m)*f, (1-m)*b)``, gradient
    gate at ``|v| >= 1``). ``perm1``/``perm2`` default to independent uniformly random permutations
    of the batch (``torch.randperm(N)`` on f's device, from ``generator`` if given), one per pair.

    Returns a 0-d tensor (float32 for 16-bit inputs).
    """
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float, Tensor)):
        raise TypeError(f"ils_loss: sigma must be a number, got {type(sigma).__name__}")
    if not isinstance(f, Tensor) or f.dim() < 1:
        raise TypeError("ils_loss: f must be a [N,C,H,W] torch.Tensor")
    N = f.shape[0]
    validate = perm1 is not None or perm2 is not None  # our own draws need no validation (no host sync)
    if perm1 is None:
        perm1 = torch.randperm(N, device=f.device, generator=generator)
    if perm2 is None:
        perm2 = torch.randperm(N, device=f.device, generator=generator)
    t = ils_terms(f, b, m, perm1, perm2, distribution, impl=impl, strict=strict, validate_perms=validate)
    return sigma * (t[:, 1] - t[:, 0] + t[:, 3] - t[:, 2]).mean()
