"""StyleGAN2 residual discriminator (ILSGAN's D is the plain StyleGAN2 one): RGB in, one logit out.

Blocks from the training resolution down to 8x8 (each: 3x3 conv, 3x3 conv with 2x FIR down-sampling,
plus a 1x1 down-sampling skip, summed with gain sqrt(1/2)), then a 4x4 epilogue: minibatch standard
deviation (group 4, 1 channel), 3x3 conv, dense, dense -> 1 logit. Convolutions are
:func:`ilsgan.ops.conv2d_resample` (torch conv + our upfirdn2d), activations :func:`ilsgan.ops.bias_act`:
both have gradients of any order, so R1 (a gradient penalty, differentiated again) works through D.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import Tensor, nn

from ..precision import check_precision
from .layers import RESAMPLE_FILTER, Conv2dLayer, FullyConnectedLayer, MinibatchStdLayer, compute_dtype
from .synthesis import channels_per_resolution

__all__ = ["DiscriminatorBlock", "DiscriminatorEpilogue", "Discriminator"]


class DiscriminatorBlock(nn.Module):
    """Residual block at ``resolution``: ``(skip(x) + conv1(conv0(x))) * sqrt(1/2)``, halving the size.
    ``in_channels == 0`` makes it the first block (a 1x1 FromRGB layer first)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int, img_channels: int,
                 activation: str = "lrelu", resample_filter=RESAMPLE_FILTER, conv_clamp: Optional[float] = None,
                 use_fp16: bool = False, fp16_channels_last: bool = False, impl: str = "auto",
                 precision: str = "auto"):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.use_fp16 = use_fp16
        self.precision = check_precision(precision)
        self.channels_last = use_fp16 and fp16_channels_last
        cl = self.channels_last
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation=activation, conv_clamp=conv_clamp,
                                       channels_last=cl, impl=impl)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation=activation, conv_clamp=conv_clamp,
                                 channels_last=cl, impl=impl)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation=activation, down=2,
                                 resample_filter=resample_filter, conv_clamp=conv_clamp, channels_last=cl, impl=impl)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2, resample_filter=resample_filter,
                                channels_last=cl, impl=impl)

    def forward(self, x: Optional[Tensor], img: Tensor, force_fp32: bool = False) -> Tensor:
        dtype = compute_dtype(self.use_fp16, img.device, force_fp32, self.conv0.weight.dtype, self.precision)
        mf = torch.channels_last if (self.channels_last and not force_fp32) else torch.contiguous_format
        if self.in_channels == 0:
            x = self.fromrgb(img.to(dtype=dtype, memory_format=mf))
        else:
            x = x.to(dtype=dtype, memory_format=mf)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y + x

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, use_fp16={self.use_fp16}, precision={self.precision}"


class DiscriminatorEpilogue(nn.Module):
    """4x4: minibatch std -> 3x3 conv -> dense (lrelu) -> dense -> ``[N, 1]`` (float32)."""

    def __init__(self, in_channels: int, resolution: int = 4, mbstd_group_size: int = 4, mbstd_num_channels: int = 1,
                 activation: str = "lrelu", conv_clamp: Optional[float] = None, impl: str = "auto"):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation=activation,
                                conv_clamp=conv_clamp, impl=impl)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation, impl=impl)
        self.out = FullyConnectedLayer(in_channels, 1, impl=impl)

    def forward(self, x: Tensor) -> Tensor:
        x = x.to(dtype=self.conv.weight.dtype, memory_format=torch.contiguous_format)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        return self.out(x)


class Discriminator(nn.Module):
    """``D(img [N, img_channels, R, R]) -> logits [N, 1]`` (float32).

    Args:
        img_resolution: input resolution (power of two >= 8).
        img_channels: 3 (RGB; D never sees the mask).
        channel_base, channel_max: channel rule ``min(channel_base // res, channel_max)``.
        num_fp16_res: 16-bit compute in the top ``num_fp16_res`` resolutions (not below 8).
        conv_clamp: activation clamp (256).
        mbstd_group_size, mbstd_num_channels: minibatch std (4, 1). The batch size must be divisible
            by ``min(group, N)``.
        impl: op backend of every layer.
        precision: the 16-bit dtype of those resolutions (see :class:`~ilsgan.networks.SynthesisNetwork`).
    """

    def __init__(self, img_resolution: int = 64, img_channels: int = 3, channel_base: int = 16384,
                 channel_max: int = 256, num_fp16_res: int = 4, conv_clamp: Optional[float] = 256,
                 mbstd_group_size: int = 4, mbstd_num_channels: int = 1, fp16_channels_last: bool = False,
                 impl: str = "auto", precision: str = "auto"):
        super().__init__()
        if img_resolution < 8 or img_resolution & (img_resolution - 1) != 0:
            raise ValueError(f"Discriminator: img_resolution must be a power of two >= 8, got {img_resolution}")
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.num_fp16_res = num_fp16_res
        self.impl = impl
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        self.channels = channels_per_resolution(self.block_resolutions + [4], channel_base, channel_max)
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        for res in self.block_resolutions:
            in_channels = self.channels[res] if res < img_resolution else 0
            block = DiscriminatorBlock(in_channels, self.channels[res], self.channels[res // 2], res, img_channels,
                                       conv_clamp=conv_clamp, use_fp16=(num_fp16_res > 0 and res >= fp16_resolution),
                                       fp16_channels_last=fp16_channels_last, impl=impl, precision=precision)
            setattr(self, f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(self.channels[4], resolution=4, mbstd_group_size=mbstd_group_size,
                                        mbstd_num_channels=mbstd_num_channels, conv_clamp=conv_clamp, impl=impl)

    def forward(self, img: Tensor, force_fp32: bool = False) -> Tensor:
        if img.dim() != 4 or img.shape[1] != self.img_channels or img.shape[2] != self.img_resolution \
                or img.shape[3] != self.img_resolution:
            raise ValueError(f"Discriminator: img must have shape [N, {self.img_channels}, {self.img_resolution}, "
                             f"{self.img_resolution}], got {tuple(img.shape)}")
        x = None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img, force_fp32=force_fp32)
        return self.b4(x)

    def extra_repr(self) -> str:
        return f"img_resolution={self.img_resolution}, num_fp16_res={self.num_fp16_res}"
