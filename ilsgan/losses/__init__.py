"""ILSGAN losses: adversarial + R1, mask priors, and the independence (ILS) term.

``ils_loss`` (ilsgan.losses.ils) and ``binarization_loss``, ``area_loss``,
``mask_loss``, ``mask_diversity`` (ilsgan.losses.mask); the adversarial losses live in
``ilsgan.losses.gan``.
"""

from .ils import ils_loss
from .mask import area_loss, binarization_loss, mask_diversity, mask_loss

__all__ = ["ils_loss", "binarization_loss", "area_loss", "mask_loss", "mask_diversity"]
