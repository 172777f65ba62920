"""ILSGAN losses: adversarial + R1, mask priors, and the independence (ILS) term.

``ils_loss`` / ``ils_sigma`` (ilsgan.losses.ils) and ``binarization_loss``, ``area_loss``,
``mask_loss`` (ilsgan.losses.mask); the adversarial losses live in ``ilsgan.losses.gan``.
"""

from .ils import ils_loss, ils_sigma
from .mask import area_loss, binarization_loss, mask_loss

__all__ = ["ils_loss", "ils_sigma", "binarization_loss", "area_loss", "mask_loss"]
