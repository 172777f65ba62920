"""StyleGAN2 synthesis network, "skip" architecture (each of ILSGAN's two generators has one).

4x4 learned constant, then per resolution two modulated 3x3 convolutions (the first up-samples
by 2 with the [1,3,3,1] FIR filter), noise inputs, and a ToRGB layer whose output is added to the
up-sampled image of the previous resolution. Each synthesis layer is **one**
:func:`ilsgan.ops.modulated_conv2d` call (modulation, demodulation, up-sampling, noise, bias,
leaky ReLU, gain and clamp fused); the skip path up-samples with :func:`ilsgan.ops.upsample2d`.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from .. import ops
from ..precision import check_precision
from .layers import RESAMPLE_FILTER, FullyConnectedLayer, activation_gain, compute_dtype

__all__ = ["SynthesisLayer", "ToRGBLayer", "SynthesisBlock", "SynthesisNetwork", "channels_per_resolution"]

NOISE_MODES = ("random", "const", "none")


def channels_per_resolution(resolutions, channel_base: int, channel_max: int) -> Dict[int, int]:
    """ILSGAN/StyleGAN2 channel rule: ``min(channel_base // res, channel_max)``."""
    return {res: min(channel_base // res, channel_max) for res in resolutions}


def check_noise_mode(noise_mode: str) -> None:
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally up-sampling by 2) + noise + bias + lrelu + clamp, as one op."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = "lrelu",
                 resample_filter=RESAMPLE_FILTER, conv_clamp: Optional[float] = None, channels_last: bool = False,
                 impl: str = "auto"):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.impl = impl
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = activation_gain("SynthesisLayer", activation)
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1, impl=impl)
        mf = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size])
                                   .to(memory_format=mf))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: Tensor, w: Tensor, noise_mode: str = "random", gain: float = 1.0) -> Tensor:
        check_noise_mode(noise_mode)
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device,
                                dtype=self.noise_strength.dtype) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = (self.noise_const * self.noise_strength).reshape(1, 1, self.resolution, self.resolution)
        if noise is not None:
            noise = noise.to(x.dtype)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.modulated_conv2d(
            x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
            resample_filter=self.resample_filter.float() if self.up > 1 else None, demodulate=True,
            flip_weight=(self.up == 1), bias=self.bias.to(x.dtype), act=self.activation,
            gain=self.act_gain * gain, clamp=clamp, impl=self.impl)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, resolution={self.resolution}, "
                f"up={self.up}, activation={self.activation}")


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation + bias + clamp (linear)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: Optional[float] = None, channels_last: bool = False, impl: str = "auto"):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv_clamp = conv_clamp
        self.impl = impl
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1, impl=impl)
        mf = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size])
                                   .to(memory_format=mf))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        return ops.modulated_conv2d(x, self.weight, styles, demodulate=False, bias=self.bias.to(x.dtype),
                                    act="linear", clamp=self.conv_clamp, impl=self.impl)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}"


class SynthesisBlock(nn.Module):
    """One resolution of the skip-architecture synthesis network.

    ``in_channels == 0`` makes it the first (4x4) block, starting from a learned constant.
    ``use_fp16`` computes the block in the 16-bit dtype of ``precision`` on the input's device
    (``"auto"``: float16 on CUDA, bfloat16 on a CPU with native bfloat16, else float32; see
    ``layers.compute_dtype``).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, resample_filter=RESAMPLE_FILTER, conv_clamp: Optional[float] = None,
                 use_fp16: bool = False, fp16_channels_last: bool = False, use_noise: bool = True,
                 impl: str = "auto", precision: str = "auto"):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.use_fp16 = use_fp16
        self.precision = check_precision(precision)
        self.channels_last = use_fp16 and fp16_channels_last
        self.impl = impl
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        channels_last=self.channels_last, use_noise=use_noise, impl=impl)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last, use_noise=use_noise, impl=impl)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp,
                                channels_last=self.channels_last, impl=impl)
        self.num_torgb += 1

    def forward(self, x: Optional[Tensor], img: Optional[Tensor], ws: Tensor, noise_mode: str = "random",
                force_fp32: bool = False):
        """``ws``: ``[N, num_conv + num_torgb, w_dim]``. Returns ``(x, img)``; img has the parameters'
        dtype (float32), x the block's compute dtype."""
        base = self.conv1.weight.dtype
        dtype = compute_dtype(self.use_fp16, ws.device, force_fp32, base, self.precision)
        mf = torch.channels_last if (self.channels_last and not force_fp32) else torch.contiguous_format
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=mf).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        else:
            x = x.to(dtype=dtype, memory_format=mf)
            x = self.conv0(x, next(w_iter), noise_mode=noise_mode)
        x = self.conv1(x, next(w_iter), noise_mode=noise_mode)
        if img is not None:
            img = ops.upsample2d(img, self.resample_filter.float(), impl=self.impl)
        y = self.torgb(x, next(w_iter)).to(dtype=base, memory_format=torch.contiguous_format)
        img = y if img is None else img + y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, use_fp16={self.use_fp16}, precision={self.precision}"


class SynthesisNetwork(nn.Module):
    """ws ``[N, num_ws, w_dim]`` -> image ``[N, img_channels, R, R]`` (float32, no output activation).

    Args:
        w_dim: style size.
        img_resolution: output resolution (power of two >= 4).
        img_channels: output channels (3 for RGB, 4 for RGB + mask logit).
        channel_base, channel_max: channels per resolution ``min(channel_base // res, channel_max)``.
        num_fp16_res: 16-bit compute on the top ``num_fp16_res`` resolutions (never below 8x8).
        conv_clamp: clamp of every conv output (256; None disables).
        precision: the 16-bit dtype of those resolutions (:mod:`ilsgan.precision`): ``"auto"``
            (float16 on CUDA, bfloat16 on a CPU with native bfloat16, else float32), ``"fp32"``, ``"bf16"``.
    """

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 16384,
                 channel_max: int = 256, num_fp16_res: int = 0, conv_clamp: Optional[float] = 256,
                 fp16_channels_last: bool = False, use_noise: bool = True, impl: str = "auto",
                 precision: str = "auto"):
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1) != 0:
            raise ValueError(f"SynthesisNetwork: img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.num_fp16_res = num_fp16_res
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        self.channels = channels_per_resolution(self.block_resolutions, channel_base, channel_max)
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.impl = impl
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = self.channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_channels, self.channels[res], w_dim, res, img_channels,
                                   is_last=(res == img_resolution), conv_clamp=conv_clamp,
                                   use_fp16=(num_fp16_res > 0 and res >= fp16_resolution),
                                   fp16_channels_last=fp16_channels_last, use_noise=use_noise, impl=impl,
                                   precision=precision)
            self.num_ws += block.num_conv
            if block.is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def forward(self, ws: Tensor, noise_mode: str = "random", force_fp32: bool = False) -> Tensor:
        check_noise_mode(noise_mode)
        if ws.dim() != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"SynthesisNetwork: ws must have shape [N, {self.num_ws}, {self.w_dim}], "
                             f"got {tuple(ws.shape)}")
        ws = ws.to(self.b4.conv1.weight.dtype)
        block_ws: List[Tensor] = []
        idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws.append(ws.narrow(1, idx, block.num_conv + block.num_torgb))
            idx += block.num_conv
        x = img = None
        for res, cur_ws in zip(self.block_resolutions, block_ws):
            x, img = getattr(self, f"b{res}")(x, img, cur_ws, noise_mode=noise_mode, force_fp32=force_fp32)
        return img

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}, num_fp16_res={self.num_fp16_res}")
