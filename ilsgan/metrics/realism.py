"""How far generated images are from real ones, with nothing downloaded: a real-vs-generated classifier.

A small CNN is trained on the spot to tell real images from generated ones; its accuracy on held-out
images of both kinds is the score. 0.5 means it cannot tell them apart (the generator's images have
the statistics of the real ones, as far as this network can see); 1.0 means every image gives itself
away. Unlike FID it needs no pretrained network, so it works offline on any data, and it sees what
a segmenter trained on generated images sees: low-level texture, noise and colour statistics.
It is a relative measure: compare checkpoints (or runs) on the same real images with the same
settings, not numbers across datasets or resolutions.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["real_vs_generated_accuracy"]


def _classifier(width: int) -> nn.Module:
    c = [width, 2 * width, 4 * width]
    return nn.Sequential(
        nn.Conv2d(3, c[0], 3, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(c[0], c[1], 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(c[1], c[2], 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.Conv2d(c[2], c[2], 3, stride=2, padding=1), nn.LeakyReLU(0.2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c[2], 1),
    )


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1.0


def real_vs_generated_accuracy(real: torch.Tensor, generated: torch.Tensor, iters: int = 300, batch: int = 32,
                               width: int = 16, test_fraction: float = 0.25, seed: int = 0,
                               device="cpu") -> dict:
    """Held-out accuracy of a small CNN trained to tell ``real`` from ``generated`` images.

    Args:
        real, generated: uint8 ``[N,3,H,W]`` images of the same size (the first ``N`` of the larger set
            are used so that both classes are equally many: chance is exactly 0.5).
        iters: Adam steps (lr 1e-3) on mixed batches of ``batch`` images, half of each kind.
        width: channels of the first layer (then 2x, 4x, 4x with stride 2).
        test_fraction: share of each kind held out for the score (at least one image each).

    Returns ``{"accuracy": float, "n_test": int, "n_train": int, "iters": int}``.
    """
    for name, t in (("real", real), ("generated", generated)):
        if t.dim() != 4 or t.shape[1] != 3 or t.dtype != torch.uint8:
            raise ValueError(f"real_vs_generated_accuracy: {name} must be uint8 [N,3,H,W], got {t.dtype} "
                             f"{tuple(t.shape)}")
    if real.shape[2:] != generated.shape[2:]:
        raise ValueError(f"real_vs_generated_accuracy: image sizes differ: real {tuple(real.shape[2:])}, "
                         f"generated {tuple(generated.shape[2:])}")
    n = min(real.shape[0], generated.shape[0])
    n_test = max(1, int(round(n * test_fraction)))
    if n - n_test < 1:
        raise ValueError(f"real_vs_generated_accuracy: need at least 2 images of each kind, got {n}")
    if iters < 1 or batch < 2:
        raise ValueError(f"real_vs_generated_accuracy: iters must be >= 1 and batch >= 2, got {iters}, {batch}")
    g = torch.Generator().manual_seed(seed)
    real, generated = real[torch.randperm(real.shape[0], generator=g)[:n]], generated[:n]
    train = (real[n_test:], generated[n_test:])
    torch.manual_seed(seed)
    net = _classifier(width).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    half = batch // 2
    target = torch.cat([torch.ones(half), torch.zeros(half)]).to(device)
    for _ in range(iters):
        x = torch.cat([t[torch.randint(0, t.shape[0], (half,), generator=g)] for t in train])
        x = _unit(x.to(device))
        flip = torch.rand(x.shape[0], generator=g).to(device) < 0.5  # what a flip changes is not realism
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        loss = F.binary_cross_entropy_with_logits(net(x)[:, 0], target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    correct = 0
    with torch.no_grad():
        for t, label in ((real[:n_test], True), (generated[:n_test], False)):
            for i in range(0, n_test, 256):
                pred = net(_unit(t[i:i + 256].to(device)))[:, 0] > 0
                correct += int((pred == label).sum())
    return {"accuracy": correct / (2 * n_test), "n_test": 2 * n_test, "n_train": 2 * (n - n_test), "iters": iters}
