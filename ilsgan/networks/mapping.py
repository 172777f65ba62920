"""StyleGAN2 mapping network: z -> w (broadcast to ``num_ws`` style vectors), with w_avg tracking for
the truncation trick."""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from .layers import FullyConnectedLayer, normalize_2nd_moment

__all__ = ["MappingNetwork"]


class MappingNetwork(nn.Module):
    """``num_layers`` equalized-lr dense layers with leaky ReLU (lr multiplier ``lr_multiplier``).

    Args:
        z_dim: latent size (z is normalized by its second moment first).
        w_dim: intermediate latent size.
        num_ws: number of w vectors produced (``w`` broadcast to ``[N, num_ws, w_dim]``).
        num_layers: number of dense layers (8 in StyleGAN2 / ILSGAN).
        layer_features: width of the hidden layers (default ``w_dim``).
        lr_multiplier: learning-rate multiplier of every layer (0.01).
        w_avg_beta: decay of the running average of w used for truncation (0.995); None disables it.
        impl: op backend.
    """

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8,
                 layer_features: Optional[int] = None, activation: str = "lrelu", lr_multiplier: float = 0.01,
                 w_avg_beta: Optional[float] = 0.995, impl: str = "auto"):
        super().__init__()
        if z_dim <= 0:
            raise ValueError(f"MappingNetwork: z_dim must be positive, got {z_dim}")
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim] + [layer_features] * (num_layers - 1) + [w_dim]
        self.layers = nn.ModuleList([
            FullyConnectedLayer(features[i], features[i + 1], activation=activation, lr_multiplier=lr_multiplier,
                                impl=impl)
            for i in range(num_layers)
        ])
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: Tensor, truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None,
                update_emas: Optional[bool] = None) -> Tensor:
        """Map ``z [N, z_dim]`` to ``ws [N, num_ws, w_dim]`` (the parameters' dtype, float32).

        ``update_emas`` (default: ``self.training``) updates ``w_avg`` with this batch's mean w.
        Truncation: ``w_avg + psi * (w - w_avg)`` for the first ``truncation_cutoff`` ws (all if None).
        """
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"MappingNetwork: z must have shape [N, {self.z_dim}], got {tuple(z.shape)}")
        x = normalize_2nd_moment(z.to(self.layers[0].weight.dtype))
        for layer in self.layers:
            x = layer(x)
        if update_emas is None:
            update_emas = self.training
        if self.w_avg_beta is not None and update_emas:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError("MappingNetwork: truncation needs w_avg tracking (w_avg_beta is None)")
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                head = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, num_layers={self.num_layers}"
