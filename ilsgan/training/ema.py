"""G_ema: exponential moving average of the generator weights (StyleGAN2-ADA schedule)."""

from __future__ import annotations

import torch

__all__ = ["ema_beta", "update_ema"]


def ema_beta(cur_nimg: int, batch: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """``0.5 ** (batch / ema_nimg)``, ``ema_nimg = ema_kimg * 1000`` capped at ``cur_nimg * ema_rampup``
    during the ramp-up (so the average starts short and grows to the half-life)."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None and ema_rampup > 0:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """``p_ema <- lerp(p, p_ema, beta)`` for parameters; buffers (w_avg, noise) copied."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b.detach())
