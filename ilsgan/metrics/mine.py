"""MINE (Donsker-Varadhan) mutual-information estimate between generated layers (the paper's measure
of layer independence).

Statistics network T: MLP on the concatenated flattened pair ``[x, y]`` -> ``hidden`` (3000) -> ReLU -> 1.
Lower bound ``I(x;y) >= E_joint[T] - log E_marginal[exp T]``; the marginal pairs ``x`` with ``y`` from a
shuffled batch. Adam lr 2e-4, batch 64, 100k iterations in the paper; the reported value is the mean of
the last 20 evaluations. Lower = more independent layers.

The pairs measured on a layered generator (:func:`layer_independence`), at 64x64 (layers resized):
``(m*b, m*f)`` (hidden background vs visible foreground), ``((1-m)*f, (1-m)*b)`` (hidden foreground vs
visible background) and ``(f, b)``. Samples come from a fixed pool of ``n_samples`` generated images
(the paper draws fresh samples; a fixed pool keeps CPU runs feasible - use a large pool).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["mine_estimate", "layer_independence", "MINE_PAIRS"]

MINE_PAIRS = ("mi_hidden_bg_visible_fg", "mi_hidden_fg_visible_bg", "mi_fg_bg")


def _dv_bound(t_joint: torch.Tensor, t_marg: torch.Tensor) -> torch.Tensor:
    return t_joint.mean() - (torch.logsumexp(t_marg.flatten(), 0) - math.log(t_marg.numel()))


def mine_estimate(x: torch.Tensor, y: torch.Tensor, iters: int = 100_000, batch: int = 64, lr: float = 2e-4,
                  hidden: int = 3000, eval_every: int | None = None, n_last: int = 20, eval_batch: int = 512,
                  seed: int = 0, device="cpu", progress: str | None = None) -> dict:
    """MINE estimate of I(x; y) from paired samples ``x [N,...]``, ``y [N,...]`` (flattened per sample).

    Trains T for ``iters`` Adam steps on random minibatches; every ``eval_every`` steps (default
    ``max(1, iters // 100)``) evaluates the DV bound on up to ``eval_batch`` samples (no gradient).
    Returns ``{"mi": mean of the last n_last evaluations, "history": [(iter, value), ...]}``.
    """
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"mine_estimate: x and y must have the same number of samples, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError("mine_estimate: need at least 2 samples")
    if iters < 1:
        raise ValueError(f"mine_estimate: iters must be >= 1, got {iters}")
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    x = x.reshape(x.shape[0], -1).float().to(device)
    y = y.reshape(y.shape[0], -1).float().to(device)
    n = x.shape[0]
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(x.shape[1] + y.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, 1)).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    eval_every = eval_every or max(1, iters // 100)
    b = min(batch, n)
    ev = torch.randperm(n, generator=g)[: min(eval_batch, n)].to(device)
    ev_perm = ev[torch.randperm(ev.numel(), generator=g).to(device)]
    history = []
    for it in tqdm(range(1, iters + 1), desc=progress, disable=progress is None, leave=False):
        idx = torch.randperm(n, generator=g)[:b].to(device)
        perm = idx[torch.randperm(b, generator=g).to(device)]
        tj = net(torch.cat([x[idx], y[idx]], 1))
        tm = net(torch.cat([x[idx], y[perm]], 1))
        loss = -_dv_bound(tj, tm)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it % eval_every == 0 or it == iters:
            with torch.no_grad():
                v = _dv_bound(net(torch.cat([x[ev], y[ev]], 1)), net(torch.cat([x[ev], y[ev_perm]], 1)))
            history.append((it, float(v)))
    last = [v for _, v in history[-n_last:]]
    return {"mi": float(np.mean(last)), "history": history}


@torch.no_grad()
def _generate_layers(G, n: int, batch: int, device, seed: int, size: int):
    from tqdm.auto import tqdm

    g = torch.Generator().manual_seed(seed)
    fs, bs, ms = [], [], []
    for i in tqdm(range(0, n, batch), desc="MINE: generating layers", leave=False):
        k = min(batch, n - i)
        z = torch.randn(k, G.z_dim, generator=g).to(device)
        out = G(z, truncation_psi=1.0, noise_mode="const", return_layers=True)
        f, b_, m = out["fg"].float(), out["bg"].float(), out["mask"].float()
        if f.shape[-1] != size:
            f = F.interpolate(f, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            b_ = F.interpolate(b_, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        fs.append(f.cpu()); bs.append(b_.cpu()); ms.append(m.cpu())
    return torch.cat(fs), torch.cat(bs), torch.cat(ms)


def layer_independence(G, n_samples: int = 2048, iters: int = 100_000, size: int = 64, batch: int = 64,
                       hidden: int = 3000, lr: float = 2e-4, device="cpu", seed: int = 0,
                       gen_batch: int = 32) -> dict[str, float]:
    """MINE estimates for the three layer pairs of a layered generator (keys :data:`MINE_PAIRS`)
    plus ``mi`` = their mean."""
    f, b, m = _generate_layers(G, n_samples, gen_batch, device, seed, size)
    pairs = {
        MINE_PAIRS[0]: (m * b, m * f),
        MINE_PAIRS[1]: ((1 - m) * f, (1 - m) * b),
        MINE_PAIRS[2]: (f, b),
    }
    res = {}
    for k, (x, y) in pairs.items():
        res[k] = mine_estimate(x, y, iters=iters, batch=batch, lr=lr, hidden=hidden, seed=seed, device=device,
                               progress=f"MINE {k}")["mi"]
    res["mi"] = float(np.mean([res[k] for k in MINE_PAIRS]))
    return res
