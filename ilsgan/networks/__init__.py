"""ILSGAN networks: StyleGAN2 mapping / synthesis, the layered generator, the residual discriminator,
and :func:`build_networks` (for a preset or config of :mod:`ilsgan.config`). Every hot path runs on
:mod:`ilsgan.ops`; every module takes ``impl`` (op backend, default ``"auto"``); :func:`set_impl`
changes it on a built network."""

from .build import build_networks, discriminator_kwargs, generator_kwargs
from .discriminator import Discriminator, DiscriminatorBlock, DiscriminatorEpilogue
from .layered import Generator, LayeredGenerator
from .layers import (Conv2dLayer, FullyConnectedLayer, MinibatchStdLayer, compute_dtype, normalize_2nd_moment, set_impl,
                     set_precision)
from .mapping import MappingNetwork
from .synthesis import SynthesisBlock, SynthesisLayer, SynthesisNetwork, ToRGBLayer, channels_per_resolution

__all__ = [
    "build_networks", "generator_kwargs", "discriminator_kwargs",
    "LayeredGenerator", "Generator", "MappingNetwork", "SynthesisNetwork", "SynthesisBlock", "SynthesisLayer",
    "ToRGBLayer", "Discriminator", "DiscriminatorBlock", "DiscriminatorEpilogue", "FullyConnectedLayer",
    "Conv2dLayer", "MinibatchStdLayer", "compute_dtype", "normalize_2nd_moment", "set_impl", "set_precision",
    "channels_per_resolution",
]
