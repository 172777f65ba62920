"""Building blocks shared by the generator and the discriminator (StyleGAN2-ADA architecture).

Every layer keeps its parameters in float32 with *equalized learning rate*: weights are stored as
``N(0, 1) / lr_multiplier`` and scaled at run time by ``lr_multiplier / sqrt(fan_in)``. The hot
paths go through :mod:`ilsgan.ops` only (``bias_act``, ``conv2d_resample``, ``modulated_conv2d``,
``upfirdn2d``); each layer has an ``impl`` attribute (``"auto"`` by default) that is passed to every
op it calls, so ``impl="ref"`` forces a whole network onto the reference paths.

Mixed precision: a block asked for 16-bit compute (``use_fp16``: the top ``num_fp16_res``
resolutions) computes in the dtype its ``precision`` (``"auto"``, ``"fp32"``, ``"bf16"``; see
:mod:`ilsgan.precision`) gives on the tensors' device: with ``"auto"`` float16 on CUDA, bfloat16 on
a CPU with native bfloat16, float32 on other CPUs (float16 convolutions on CPU are slow or
unsupported in torch). Parameters stay float32. See :func:`compute_dtype` and :func:`set_precision`.
``fp16_channels_last`` keeps those blocks' weights and activations channels_last, whatever their
dtype (NVlabs: unless ``force_fp32``).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor, nn

from .. import ops
from ..precision import block_dtype, check_precision

__all__ = [
    "activation_gain",
    "compute_dtype",
    "normalize_2nd_moment",
    "FullyConnectedLayer",
    "Conv2dLayer",
    "MinibatchStdLayer",
    "set_impl",
    "set_precision",
]

RESAMPLE_FILTER = (1, 3, 3, 1)


def compute_dtype(use_fp16: bool, device: torch.device, force_fp32: bool = False,
                  base: torch.dtype = torch.float32, precision: str = "auto") -> torch.dtype:
    """The dtype a block computes in: for a mixed-precision block (``use_fp16``) with float32
    parameters, the 16-bit dtype of ``precision`` on ``device``
    (:func:`ilsgan.precision.block_dtype`: ``"auto"`` = float16 on CUDA, bfloat16 on a CPU
    with native bfloat16); else ``base`` (the parameters' dtype: float32 normally, float64 for a
    ``.double()`` network in tests).

    Called on every forward of every block: ``precision`` is not checked again here (the blocks
    check it when built and in :func:`set_precision`).

    float16 is never used on CPU: torch's CPU float16 convolutions are slow or missing, so there a
    preset with ``num_fp16_res > 0`` runs in float32 unless bfloat16 is chosen or native.
    """
    if use_fp16 and not force_fp32 and base == torch.float32:
        return block_dtype(precision, device.type) or base
    return base


def activation_gain(layer: str, activation: str) -> float:
    """The default gain of ``activation`` (:data:`ilsgan.ops.ACTIVATIONS`): sqrt(2) for the ReLU
    family and swish, 1 otherwise; a layer multiplies its own gain into it."""
    if activation not in ops.ACTIVATIONS:
        raise ValueError(f"{layer}: activation must be one of {sorted(ops.ACTIVATIONS)}, got {activation!r}")
    return ops.ACTIVATIONS[activation].def_gain


def normalize_2nd_moment(x: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """``x / sqrt(mean(x^2) + eps)`` along ``dim`` (StyleGAN's z normalization)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def set_impl(module: nn.Module, impl: str) -> nn.Module:
    """Set the ``impl`` (op backend) of every sub-module of ``module`` that has one; returns it."""
    for m in module.modules():
        if hasattr(m, "impl"):
            m.impl = impl
    return module


def set_precision(module: nn.Module, precision: str) -> nn.Module:
    """Set the ``precision`` (``"auto"``, ``"fp32"`` or ``"bf16"``) of every mixed-precision block of
    ``module`` (G, D or a part); returns it. Weights are untouched (always float32)."""
    check_precision(precision)
    for m in module.modules():
        if hasattr(m, "precision") and hasattr(m, "use_fp16"):
            m.precision = precision
    return module


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalized learning rate: ``act(x @ (W * wg)^T + b * bg)``.

    ``wg = lr_multiplier / sqrt(in_features)``, ``bg = lr_multiplier``; the activation, bias add
    and gain go through :func:`ilsgan.ops.bias_act` (a linear layer with bias uses ``addmm``).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0, impl: str = "auto"):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.impl = impl
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t())
        return ops.bias_act(x, b, act=self.activation, impl=self.impl)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


class Conv2dLayer(nn.Module):
    """Convolution with equalized learning rate, optional FIR up/down-sampling, bias, activation and
    clamp (the discriminator's layer): ``conv2d_resample`` then ``bias_act``.

    Args:
        conv_clamp: clamp the output to ``±conv_clamp * gain`` (None: no clamp).
        resample_filter: FIR taps for up/down-sampling (NVlabs ``[1, 3, 3, 1]``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1, resample_filter=RESAMPLE_FILTER,
                 conv_clamp: Optional[float] = None, channels_last: bool = False, impl: str = "auto"):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.channels_last = channels_last
        self.impl = impl
        self.register_buffer("resample_filter", ops.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = activation_gain("Conv2dLayer", activation)
        mf = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size])
                                   .to(memory_format=mf))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: Tensor, gain: float = 1.0) -> Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        f = self.resample_filter.float() if (self.up > 1 or self.down > 1) else None
        x = ops.conv2d_resample(x, w, f=f, up=self.up, down=self.down, padding=self.padding,
                                flip_weight=(self.up == 1), impl=self.impl)
        act_gain = self.act_gain * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        b = self.bias.to(x.dtype) if self.bias is not None else None
        return ops.bias_act(x, b, act=self.activation, gain=act_gain, clamp=clamp, impl=self.impl)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, activation={self.activation}, "
                f"up={self.up}, down={self.down}, conv_clamp={self.conv_clamp}")


class MinibatchStdLayer(nn.Module):
    """Minibatch standard deviation (StyleGAN2): appends ``num_channels`` feature maps holding the
    std over groups of ``group_size`` samples, averaged over channels (per channel group) and pixels.

    The batch size must be divisible by ``min(group_size, N)``. Plain torch (any order of gradients).
    """

    def __init__(self, group_size: int = 4, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g != 0:
            raise ValueError(f"MinibatchStdLayer: batch size {n} is not divisible by the group size {g}")
        f = self.num_channels
        cg = c // f
        y = x.reshape(g, -1, f, cg, h, w)          # [G, M, F, c, H, W]; sample n is in group n % M
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])                   # [M, F]
        y = y.reshape(-1, f, 1, 1)
        y = y.repeat(g, 1, h, w)                    # [N, F, H, W]
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"
