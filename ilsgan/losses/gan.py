"""Adversarial losses of ILSGAN: non-saturating logistic G/D losses, the R1 penalty (lazy), the
perturbed composition the discriminator sees (foreground and mask shifted by a random integer offset,
background not moved), and :class:`ILSGANLoss`, which runs the training phases (``"Gmain"``,
``"Dmain"``, ``"Dreg"``, ``"Dboth"``) and accumulates gradients. Its settings are a
:class:`~ilsgan.config.LossConfig`.

Per-sample functions return ``[N]`` tensors; callers take the mean.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import LossConfig
from .ils import ils_loss
from .mask import mask_diversity, mask_loss

__all__ = ["g_nonsaturating_loss", "d_logistic_loss", "r1_penalty", "random_shift", "perturbed_composite",
           "ILSGANLoss"]


def g_nonsaturating_loss(fake_logits: Tensor) -> Tensor:
    """``softplus(-D(fake))`` per sample ``[N]``."""
    return F.softplus(-fake_logits).flatten(1).sum(1)


def d_logistic_loss(real_logits: Optional[Tensor] = None, fake_logits: Optional[Tensor] = None) -> Tensor:
    """``softplus(D(fake)) + softplus(-D(real))`` per sample ``[N]`` (either term may be omitted)."""
    out = 0
    if fake_logits is not None:
        out = out + F.softplus(fake_logits).flatten(1).sum(1)
    if real_logits is not None:
        out = out + F.softplus(-real_logits).flatten(1).sum(1)
    if not torch.is_tensor(out):
        raise ValueError("d_logistic_loss: give real_logits and/or fake_logits")
    return out


def r1_penalty(real_logits: Tensor, real_img: Tensor, gamma: float) -> Tensor:
    """``(gamma / 2) * ||d sum(D(x)) / dx||^2`` per sample ``[N]``; ``real_img`` must require grad and
    ``real_logits`` be computed from it. The graph is kept (``create_graph=True``) so the penalty can be
    back-propagated into D's parameters (second-order gradients through every op of D)."""
    (grad,) = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img], create_graph=True,
                                  only_inputs=True)
    return grad.square().flatten(1).sum(1) * (gamma / 2)


def random_shift(n: int, resolution: int, shift: float, device, generator: Optional[torch.Generator] = None
                 ) -> Tensor:
    """Integer offsets ``[n, 2]`` (int64): ``round(u * shift * W)``, ``u ~ U[-1, 1]^2`` (``shift``: the
    largest offset as a fraction of the width ``W = resolution``)."""
    u = torch.rand([n, 2], device=device, generator=generator) * 2 - 1
    return torch.round(u * (shift * resolution)).to(torch.int64)


def perturbed_composite(fg: Tensor, bg: Tensor, mask: Tensor, shift: float, impl: str = "auto"):
    """``(x_T, m_T)``: f and m translated by :func:`random_shift`, b not moved (``shift=0`` gives
    the plain composite and the unshifted mask)."""
    from ilsgan.ops import composite
    offsets = random_shift(fg.shape[0], fg.shape[-1], shift, fg.device) if shift > 0 else None
    return composite(fg, bg, mask, shift=offsets, impl=impl)


class ILSGANLoss:
    """The ILSGAN objective as training phases (StyleGAN2-ADA style).

    ``accumulate_gradients(phase, real_img, gen_z, gain, cur_nimg)`` runs one phase and calls
    ``backward`` on its loss times ``gain``; it returns a dict of detached scalar statistics.

    - ``"Gmain"``: G layers → perturbed composite → ``D(A(x_T))``;
      ``mean_n[w_adv·softplus(-logit) + w_bin·L_bin(m_T) + w_area·L_area(m_T)] + L_ILS(f, b, m)``.
    - ``"Dmain"``: ``mean softplus(D(A(x_T)))`` with G run without gradients, plus
      ``mean softplus(-D(A(x_real)))``; real logits feed ``ada_stats`` (callable) if given.
    - ``"Dreg"``: ``mean (γ/2)·‖∇ D(A(x_real))‖²`` (lazy R1; ``gain`` = the interval).
    - ``"Dboth"``: Dmain + R1 in one pass (no lazy regularization).

    ``cfg``: the weights and schedules (default: the paper's); ``r1_gamma``: the R1 weight γ, resolved
    by the caller (the automatic value depends on resolution and batch:
    :meth:`~ilsgan.config.TrainConfig.r1_weight`).
    """

    def __init__(self, G, D, augment_pipe=None, cfg: Optional[LossConfig] = None, *, r1_gamma: float,
                 impl: str = "auto", ada_stats: Optional[Callable[[Tensor], None]] = None):
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.cfg = cfg if cfg is not None else LossConfig()
        self.r1_gamma = float(r1_gamma)
        self.impl = impl
        self.ada_stats = ada_stats

    # -- helpers -------------------------------------------------------------------------------
    def _layers(self, z: Tensor) -> Dict[str, Tensor]:
        G = self.G
        mod = G.module if hasattr(G, "module") else G
        return mod.layers(z)

    def run_D(self, img: Tensor) -> Tensor:
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img)

    def _mask_mirror(self) -> bool:
        return self.cfg.area_mirror if self.cfg.area_mirror is not None else self.cfg.shift <= 0

    # -- phases --------------------------------------------------------------------------------
    def accumulate_gradients(self, phase: str, real_img: Tensor, gen_z: Tensor, gain: float = 1.0,
                             cur_nimg: int = 0) -> Dict[str, Tensor]:
        if phase not in ("Gmain", "Dmain", "Dreg", "Dboth"):
            raise ValueError(f"ILSGANLoss: unknown phase {phase!r}")
        w = self.cfg
        stats: Dict[str, Tensor] = {}

        if phase == "Gmain":
            layers = self._layers(gen_z)
            fg, bg, m = layers["fg"], layers["bg"], layers["mask"]
            x_T, m_T = perturbed_composite(fg, bg, m, w.shift, impl=self.impl)
            logits = self.run_D(x_T)
            adv = g_nonsaturating_loss(logits)
            per_sample = w.w_adv * adv
            w_bin = self.cfg.w_bin_at(cur_nimg / 1000)
            if w_bin or w.w_area:
                per_sample = per_sample + mask_loss(m_T, w_bin=w_bin, w_area=w.w_area, area_min=w.area_min,
                                                    mirror=self._mask_mirror(), mirror_mask=m, impl=self.impl)
            loss = per_sample.mean()
            # one batch-level value: the diversity term's input and the logged statistic
            div = mask_diversity(m if w.w_div else m.detach()) if m.shape[0] > 1 else m.new_zeros(())
            if w.w_div:
                l_div = torch.relu(w.div_min - div)
                loss = loss + w.w_div * l_div
                stats["Loss/G/div"] = l_div.detach()
            if w.ils and w.w_ils:
                sigma = self.cfg.ils_weight_at(cur_nimg / 1000)
                l_ils = ils_loss(fg, bg, m, sigma, distribution=w.ils_dist, impl=self.impl)
                loss = loss + l_ils
                stats["Loss/ILS"] = l_ils.detach()
                stats["Loss/ILS_sigma"] = torch.tensor(sigma)
            (loss * gain).backward()
            md = m.detach()
            area = md.flatten(1).mean(1)
            stats.update({
                "Loss/G/adv": adv.detach().mean(),
                "Loss/G/total": loss.detach(),
                "Loss/scores/fake": logits.detach().mean(),
                "Mask/area": area.mean(),
                "Mask/area_perturbed": m_T.detach().flatten(1).mean(1).mean(),
                "Mask/binarized": (torch.minimum(md, 1 - md) < 0.1).float().mean(),
                "Mask/collapsed_fg": (area > 0.99).float().mean(),
                "Mask/collapsed_bg": (area < 0.01).float().mean(),
                # per-pixel std of the mask over the batch: ~0 when every sample gets the same mask
                "Mask/diversity": md.std(0).mean() if md.shape[0] > 1 else md.new_zeros(()),
                "Mask/layout_diversity": div.detach(),
                "Mask/L_bin": torch.minimum(m_T.detach(), 1 - m_T.detach()).flatten(1).mean(1).mean(),
            })
            return stats

        loss = 0
        if phase in ("Dmain", "Dboth"):
            with torch.no_grad():
                layers = self._layers(gen_z)
                x_T, _ = perturbed_composite(layers["fg"], layers["bg"], layers["mask"], w.shift, impl=self.impl)
            fake_logits = self.run_D(x_T.detach())
            loss_fake = F.softplus(fake_logits).flatten(1).sum(1)
            stats["Loss/D/fake"] = loss_fake.detach().mean()
            loss = loss + loss_fake.mean()

        real = real_img.detach().requires_grad_(phase in ("Dreg", "Dboth"))
        real_logits = self.run_D(real)
        if self.ada_stats is not None and phase in ("Dmain", "Dboth"):
            self.ada_stats(real_logits)
        if phase in ("Dmain", "Dboth"):
            loss_real = F.softplus(-real_logits).flatten(1).sum(1)
            stats["Loss/D/real"] = loss_real.detach().mean()
            stats["Loss/scores/real"] = real_logits.detach().mean()
            stats["Loss/signs/real"] = real_logits.detach().sign().mean()
            loss = loss + loss_real.mean()
        if phase in ("Dreg", "Dboth"):
            gamma = self.r1_gamma
            pen = r1_penalty(real_logits, real, gamma)
            stats["Loss/r1_penalty"] = (pen.detach() / max(gamma / 2, 1e-30)).mean()
            stats["Loss/D/reg"] = pen.detach().mean()
            # real_logits * 0 keeps every D parameter in the graph (DDP-style gradient sync safety)
            loss = loss + pen.mean() + real_logits.sum() * 0
        (loss * gain).backward()
        return stats
