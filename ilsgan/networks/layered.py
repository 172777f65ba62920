"""The layered generator of ILSGAN: two independent StyleGAN2 generators fed by the
same z — a foreground generator producing RGB + a mask logit, a background generator producing RGB —
composited as ``x = m * f + (1 - m) * b`` with :func:`ilsgan.ops.composite`."""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor, nn

from .. import ops
from .mapping import MappingNetwork
from .synthesis import SynthesisNetwork, check_noise_mode

__all__ = ["Generator", "LayeredGenerator"]


class Generator(nn.Module):
    """One StyleGAN2 generator: its own mapping network and synthesis network (skip architecture)."""

    def __init__(self, z_dim: int = 512, w_dim: int = 512, img_resolution: int = 64, img_channels: int = 3,
                 mapping_layers: int = 8, mapping_lr_multiplier: float = 0.01, w_avg_beta: float = 0.995,
                 channel_base: int = 16384, channel_max: int = 256, num_fp16_res: int = 4,
                 conv_clamp: Optional[float] = 256, fp16_channels_last: bool = False, use_noise: bool = True,
                 impl: str = "auto", precision: str = "auto"):
        super().__init__()
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base=channel_base,
                                          channel_max=channel_max, num_fp16_res=num_fp16_res,
                                          conv_clamp=conv_clamp, fp16_channels_last=fp16_channels_last,
                                          use_noise=use_noise, impl=impl, precision=precision)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, num_layers=mapping_layers,
                                      lr_multiplier=mapping_lr_multiplier, w_avg_beta=w_avg_beta, impl=impl)

    def forward(self, z: Tensor, truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                noise_mode: str = "random", update_emas: Optional[bool] = None, force_fp32: bool = False) -> Tensor:
        ws = self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode, force_fp32=force_fp32)


class LayeredGenerator(nn.Module):
    """ILSGAN generator: ``G(z) -> composite [N, 3, R, R]``.

    Attributes: ``z_dim``, ``w_dim``, ``img_resolution``, ``img_channels`` (3), ``fg`` (a
    :class:`Generator` with 4 output channels: RGB + mask logit), ``bg`` (3 channels). The same z feeds
    both mapping networks; each has its own weights and its own w_avg.

    Args: as :class:`Generator` (shared by both), plus ``impl`` (op backend of every layer).
    """

    def __init__(self, z_dim: int = 512, w_dim: int = 512, img_resolution: int = 64, img_channels: int = 3,
                 **kwargs):
        super().__init__()
        if img_channels != 3:
            raise ValueError(f"LayeredGenerator: img_channels must be 3 (RGB), got {img_channels}")
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.fg = Generator(z_dim, w_dim, img_resolution, img_channels + 1, **kwargs)
        self.bg = Generator(z_dim, w_dim, img_resolution, img_channels, **kwargs)
        self.impl = kwargs.get("impl", "auto")

    def layers(self, z: Tensor, truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
               noise_mode: str = "random", update_emas: Optional[bool] = None,
               force_fp32: bool = False) -> Dict[str, Tensor]:
        """The three layers without compositing: ``{"fg" [N,3,R,R], "bg" [N,3,R,R], "mask" [N,1,R,R] in
        [0, 1], "mask_logits" [N,1,R,R]}`` (float32). The training loop composites these itself
        (perturbed composition: ``ilsgan.ops.composite(fg, bg, mask, shift=...)``)."""
        check_noise_mode(noise_mode)
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"LayeredGenerator: z must have shape [N, {self.z_dim}], got {tuple(z.shape)}")
        kw = dict(truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff, noise_mode=noise_mode,
                  update_emas=update_emas, force_fp32=force_fp32)
        fg_out = self.fg(z, **kw)
        bg = self.bg(z, **kw)
        fg = fg_out[:, :self.img_channels]
        logits = fg_out[:, self.img_channels:]
        mask = ops.bias_act(logits, act="sigmoid", impl=self.impl)
        return {"fg": fg, "bg": bg, "mask": mask, "mask_logits": logits}

    def forward(self, z: Tensor, truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                noise_mode: str = "random", return_layers: bool = False, update_emas: Optional[bool] = None,
                force_fp32: bool = False):
        """Composite ``[N, 3, R, R]``; with ``return_layers=True`` a dict
        ``{"composite", "fg", "bg", "mask", "mask_logits"}`` (see :meth:`layers`).

        ``noise_mode``: ``"random"`` (fresh noise), ``"const"`` (the fixed noise buffers) or ``"none"``.
        ``update_emas`` (default: ``self.training``) updates the mapping networks' w_avg.
        """
        out = self.layers(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          noise_mode=noise_mode, update_emas=update_emas, force_fp32=force_fp32)
        img, _ = ops.composite(out["fg"], out["bg"], out["mask"], impl=self.impl)
        if not return_layers:
            return img
        out["composite"] = img
        return out

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, img_resolution={self.img_resolution}"
