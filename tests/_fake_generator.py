"""A tiny layered "generator" with the LayeredGenerator interface, for evaluation tests.

Foreground: a disc whose centre/radius depend on z, filled with a colour; background: a colour
gradient. The mask is a soft disc (sigmoid of a signed distance), so m > 0.5 is the disc.
"""

import torch
import torch.nn as nn


class FakeLayeredGenerator(nn.Module):
    def __init__(self, z_dim: int = 8, img_resolution: int = 16, sharpness: float = 4.0):
        super().__init__()
        self.z_dim = z_dim
        self.img_resolution = img_resolution
        self.sharpness = sharpness
        self.proj = nn.Linear(z_dim, 9, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(torch.randn(9, z_dim, generator=torch.Generator().manual_seed(1)) * 0.4)

    def forward(self, z, truncation_psi=1.0, noise_mode="const", return_layers=True):
        r = self.img_resolution
        p = torch.tanh(self.proj(z))                      # [N,9]
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, r), torch.linspace(-1, 1, r), indexing="ij")
        cx, cy = p[:, 0, None, None] * 0.4, p[:, 1, None, None] * 0.4
        rad = 0.45 + 0.15 * p[:, 2, None, None]
        d = rad - ((xs - cx) ** 2 + (ys - cy) ** 2).sqrt()
        mask = torch.sigmoid(d * self.sharpness * r)[:, None]
        fg = p[:, 3:6, None, None].expand(-1, -1, r, r) * 0.9
        bg = (p[:, 6:9, None, None] * 0.5 + 0.3 * xs[None, None]).clamp(-1, 1)
        comp = mask * fg + (1 - mask) * bg
        out = {"composite": comp, "fg": fg, "bg": bg, "mask": mask}
        return out if return_layers else comp
