"""The activation functions of the ops and the layers (NVlabs StyleGAN2-ADA ``bias_act`` table).

One table, :data:`ACTIVATIONS`, read by :func:`ilsgan.ops.bias_act`,
:func:`ilsgan.ops.modulated_conv2d` and the layers of :mod:`ilsgan.networks` for the default
``alpha`` and ``gain`` of each activation and for the kernel id all backends share.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch
from torch import Tensor

__all__ = ["Activation", "ACTIVATIONS"]


class Activation(NamedTuple):
    index: int  # kernel id, shared by all backends (same numbering as NVlabs' cuda_idx)
    def_alpha: float  # default shape parameter (only lrelu uses one)
    def_gain: float  # default output gain: sqrt(2) for the ReLU family, which halves the variance
    grad_reads: str  # what the first-order gradient kernel reads: "" (nothing), "y" (output) or "x" (input)
    has_2nd_grad: bool  # whether the second derivative is non-zero (so the gradient depends on x)
    fn: Callable[[Tensor, float], Tensor]  # plain torch, ``fn(x, alpha)``, differentiable to any order


_F = torch.nn.functional

ACTIVATIONS = {
    "linear": Activation(1, 0.0, 1.0, "", False, lambda x, a: x),
    "relu": Activation(2, 0.0, math.sqrt(2), "y", False, lambda x, a: _F.relu(x)),
    "lrelu": Activation(3, 0.2, math.sqrt(2), "y", False, lambda x, a: _F.leaky_relu(x, a)),
    "tanh": Activation(4, 0.0, 1.0, "y", True, lambda x, a: torch.tanh(x)),
    "sigmoid": Activation(5, 0.0, 1.0, "y", True, lambda x, a: torch.sigmoid(x)),
    "elu": Activation(6, 1.0, 1.0, "y", True, lambda x, a: _F.elu(x)),  # alpha is always 1: the argument is ignored
    "selu": Activation(7, 0.0, 1.0, "y", True, lambda x, a: _F.selu(x)),
    "softplus": Activation(8, 0.0, 1.0, "y", True, lambda x, a: _F.softplus(x)),
    "swish": Activation(9, 0.0, math.sqrt(2), "x", True, lambda x, a: torch.sigmoid(x) * x),
}
