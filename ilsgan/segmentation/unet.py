"""The 2-class UNet of the segmentation protocol (:mod:`ilsgan.segmentation.protocol`, step 2).

Encoder widths ``base * (1, 2, 4, 8, 8)`` (64-128-256-512-512 for ``base=64``) with 2x2 max-pooling,
bilinear-upsampling decoder with skip concatenation, conv3x3-BN-ReLU x2 blocks, 1x1 head to 2 logits.
Input: float images ``[N,3,H,W]`` in [-1, 1], H and W divisible by 16. Output: logits ``[N,2,H,W]``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["UNet"]


class _DoubleConv(nn.Sequential):
    def __init__(self, cin: int, cout: int, mid: int | None = None):
        mid = mid or cout
        super().__init__(
            nn.Conv2d(cin, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _DoubleConv(cin, cout, cin // 2)

    def forward(self, x, skip):
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=True)
        return self.conv(torch.cat([skip, x], 1))


class UNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 2, base: int = 64):
        super().__init__()
        self.config = {"in_channels": in_channels, "num_classes": num_classes, "base": base}
        c = [base, base * 2, base * 4, base * 8, base * 8]
        self.inc = _DoubleConv(in_channels, c[0])
        self.downs = nn.ModuleList([_DoubleConv(c[i], c[i + 1]) for i in range(4)])
        # decoder: (512+512)->256, (256+256)->128, (128+128)->64, (64+64)->64 for base=64
        self.ups = nn.ModuleList([
            _Up(c[3] + c[4], c[2]), _Up(c[2] * 2, c[1]), _Up(c[1] * 2, c[0]), _Up(c[0] * 2, c[0]),
        ])
        self.head = nn.Conv2d(c[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"UNet: input height and width must be divisible by 16, got {tuple(x.shape[-2:])}")
        skips = [self.inc(x)]
        for d in self.downs:
            skips.append(d(F.max_pool2d(skips[-1], 2)))
        h = skips.pop()
        for up in self.ups:
            h = up(h, skips.pop())
        return self.head(h)
