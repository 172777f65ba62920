"""ILSGAN networks: StyleGAN2 mapping / synthesis, the layered generator, the residual discriminator,
presets and :func:`build_networks`. Every hot path runs on :mod:`ilsgan.ops`; every module takes
``impl`` (op backend, default ``"auto"``); :func:`set_impl` changes it on a built network."""

from .discriminator import Discriminator, DiscriminatorBlock, DiscriminatorEpilogue
from .layered import Generator, LayeredGenerator
from .layers import Conv2dLayer, FullyConnectedLayer, MinibatchStdLayer, compute_dtype, normalize_2nd_moment, set_impl
from .mapping import MappingNetwork
from .presets import (PRESETS, build_networks, discriminator_kwargs, ema_kimg, generator_kwargs, get_preset,
                      r1_gamma)
from .synthesis import SynthesisBlock, SynthesisLayer, SynthesisNetwork, ToRGBLayer, channels_per_resolution

__all__ = [
    "PRESETS", "get_preset", "build_networks", "generator_kwargs", "discriminator_kwargs", "r1_gamma", "ema_kimg",
    "LayeredGenerator", "Generator", "MappingNetwork", "SynthesisNetwork", "SynthesisBlock", "SynthesisLayer",
    "ToRGBLayer", "Discriminator", "DiscriminatorBlock", "DiscriminatorEpilogue", "FullyConnectedLayer",
    "Conv2dLayer", "MinibatchStdLayer", "compute_dtype", "normalize_2nd_moment", "set_impl",
    "channels_per_resolution",
]
