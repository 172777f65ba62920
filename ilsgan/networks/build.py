""":func:`build_networks`: G and D for a configuration (the presets: :mod:`ilsgan.config`)."""

from __future__ import annotations

from typing import Any, Dict, Tuple, Union

import torch

from ..config import NetworkConfig, TrainConfig, get_preset
from .discriminator import Discriminator
from .layered import LayeredGenerator

__all__ = ["build_networks", "generator_kwargs", "discriminator_kwargs"]

NetworkSpec = Union[str, TrainConfig, NetworkConfig]


def _network(spec: NetworkSpec) -> NetworkConfig:
    if isinstance(spec, str):
        return get_preset(spec).network
    if isinstance(spec, TrainConfig):
        return spec.network
    if isinstance(spec, NetworkConfig):
        return spec
    raise TypeError(f"expected a preset name, a TrainConfig or a NetworkConfig, got {type(spec).__name__}")


def generator_kwargs(spec: NetworkSpec) -> Dict[str, Any]:
    """Keyword arguments of :class:`LayeredGenerator` for a preset name or config."""
    n = _network(spec)
    return dict(z_dim=n.z_dim, w_dim=n.w_dim, img_resolution=n.resolution, img_channels=3,
                mapping_layers=n.mapping_layers, mapping_lr_multiplier=n.mapping_lr_multiplier,
                w_avg_beta=n.w_avg_beta, channel_base=n.channel_base, channel_max=n.channel_max,
                num_fp16_res=n.num_fp16_res, conv_clamp=n.conv_clamp, use_noise=n.use_noise,
                precision=n.precision)


def discriminator_kwargs(spec: NetworkSpec) -> Dict[str, Any]:
    """Keyword arguments of :class:`Discriminator` for a preset name or config."""
    n = _network(spec)
    return dict(img_resolution=n.resolution, img_channels=3, channel_base=n.channel_base,
                channel_max=n.channel_max, num_fp16_res=n.num_fp16_res, conv_clamp=n.conv_clamp,
                mbstd_group_size=n.mbstd_group_size, mbstd_num_channels=n.mbstd_num_channels,
                precision=n.precision)


def build_networks(spec: NetworkSpec, impl: str = "auto", device: Union[str, torch.device] = "cpu",
                   channels_last: bool = False) -> Tuple[LayeredGenerator, Discriminator]:
    """Build ``(G, D)`` for a preset name, a :class:`~ilsgan.config.TrainConfig` or a
    :class:`~ilsgan.config.NetworkConfig` (its resolution is checked there), with every op on
    backend ``impl``, on ``device``. ``channels_last``: the mixed-precision blocks keep activations
    and weights channels_last (the networks' ``fp16_channels_last``). Both in train mode."""
    n = _network(spec)
    G = LayeredGenerator(impl=impl, fp16_channels_last=channels_last, **generator_kwargs(n))
    D = Discriminator(impl=impl, fp16_channels_last=channels_last, **discriminator_kwargs(n))
    return G.to(device).train(), D.to(device).train()
