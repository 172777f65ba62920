"""Network and training presets, and :func:`build_networks`.

A preset is a flat ``dict`` (see :data:`PRESETS`); :func:`get_preset` returns a fresh copy that a
caller may change (e.g. ``cfg["batch"] = 16``) before :func:`build_networks`. Keys:

Networks
    ``resolution`` (training resolution), ``z_dim``, ``w_dim``, ``mapping_layers``,
    ``mapping_lr_multiplier``, ``w_avg_beta``, ``channel_base``, ``channel_max`` (channels per
    resolution: ``min(channel_base // res, channel_max)``, G and D alike), ``num_fp16_res`` (float16 on
    the top resolutions, CUDA only), ``conv_clamp``, ``mbstd_group_size``, ``mbstd_num_channels``,
    ``use_noise``.
Optimization
    ``batch``, ``G_lr``, ``D_lr``, ``betas``, ``eps`` (Adam), ``gamma`` (R1 weight; ``None`` =
    ``r1_gamma_coef * R**2 / batch``, see :func:`r1_gamma`), ``r1_gamma_coef`` (0.0002), ``D_reg_interval``
    (lazy R1 every 16 D steps), ``G_reg_interval`` (4: the release applies the lazy-regularization
    correction c = 4/5 to G's Adam although G has no regularizer; ``None`` = no correction),
    ``ema_kimg`` (G_ema half-life; ``None`` = ``10 * batch / 32``), ``ema_rampup`` (0.05),
    ``kimg`` (training length), ``snap_kimg`` (snapshot interval).
Augmentation
    ``augment`` (pipeline name, ``"bgc"``; ``None`` = off), ``aug_p`` (initial p), ``ada_target`` (0.6),
    ``ada_interval`` (update p every 4 iterations), ``ada_kimg`` (p can move by 1 in this many kimg).
ILSGAN
    ``shift_max`` (perturbed composition: shift = round(u * shift_max * W), u ~ U[-1, 1]),
    ``lambda_bin`` (2), ``lambda_area`` (2), ``area_min`` (0.25), ``area_mirror`` (None = only when the
    perturbation is off, as the release does; True adds ``relu(area_min - (1 - mean m))`` always, on the
    unperturbed mask m: the perturbed one is zero-filled at the uncovered border),
    ``ils`` (True; False = ablation),
    ``ils_distribution`` ("laplace"), ``ils_sigma`` ((0.2, 1.0): weight before / after ``ils_sigma_kimg``),
    ``ils_sigma_kimg`` (400), ``style_mixing`` (0), ``pl_weight`` (0), ``truncation_psi`` (1).

The paper presets follow ILSGAN.md (the official release's "ILS_predL" configuration).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Optional, Tuple, Union

import torch

from .discriminator import Discriminator
from .layered import LayeredGenerator

__all__ = ["PRESETS", "get_preset", "build_networks", "generator_kwargs", "discriminator_kwargs", "r1_gamma",
           "ema_kimg"]

_PAPER: Dict[str, Any] = dict(
    # networks (ILSGAN.md §2, §4)
    resolution=64,
    z_dim=512,
    w_dim=512,
    mapping_layers=8,
    mapping_lr_multiplier=0.01,
    w_avg_beta=0.995,
    channel_base=16384,
    channel_max=256,
    num_fp16_res=4,
    conv_clamp=256,
    mbstd_group_size=4,
    mbstd_num_channels=1,
    use_noise=True,
    # optimization (§6)
    batch=32,
    G_lr=0.0025,
    D_lr=0.0025,
    betas=(0.0, 0.99),
    eps=1e-8,
    gamma=None,
    r1_gamma_coef=0.0002,
    D_reg_interval=16,
    G_reg_interval=4,
    ema_kimg=None,
    ema_rampup=0.05,
    kimg=8000,
    snap_kimg=200,
    # augmentation (§7)
    augment="bgc",
    aug_p=0.0,
    ada_target=0.6,
    ada_interval=4,
    ada_kimg=500,
    # ILSGAN (§3, §5)
    shift_max=0.125,
    lambda_bin=2.0,
    bin_ramp_kimg=0.0,
    lambda_area=2.0,
    area_min=0.25,
    area_mirror=None,
    ils=True,
    ils_distribution="laplace",
    ils_sigma=(0.2, 1.0),
    ils_sigma_kimg=400,
    style_mixing=0.0,
    pl_weight=0.0,
    truncation_psi=1.0,
)

PRESETS: Dict[str, Dict[str, Any]] = {
    # The paper at 64x64: 256 channels at every resolution (16384 / 64 = 256 = channel_max).
    "paper64": dict(_PAPER, name="paper64", resolution=64),
    # The paper at 128x128: 128 channels at 128x128, 256 below.
    "paper128": dict(_PAPER, name="paper128", resolution=128),
    # CPU-sized: 64x64, channels 128 (4, 8 px), 64 (16), 32 (32), 16 (64) (channel_base 1024,
    # channel_max 128): ~0.2 GMAC per generated sample (paper64: ~13), a 128-d latent, 2 mapping
    # layers, batch 16, float32. ADA speed and snapshots are scaled to a ~15-minute run on a 2-core
    # CPU. One departure from the paper, chosen on the CPU demo (README): the area prior is two-sided
    # (0.25 <= mean mask <= 0.75; the ceiling on the unshifted mask), because short runs without it
    # (with shift 0.25) drifted to all-foreground masks. The ILS weight keeps the paper's 400-kimg
    # switch: switching to 1.0 at 4 kimg (an earlier version) or from the start collapsed the masks to
    # all-background at ~21-22 kimg.
    "quick": dict(
        _PAPER,
        name="quick",
        resolution=64,
        z_dim=128,
        w_dim=128,
        mapping_layers=2,
        channel_base=1024,
        channel_max=128,
        num_fp16_res=0,
        batch=16,
        G_lr=0.002,
        D_lr=0.002,
        kimg=10,
        snap_kimg=2,
        ada_kimg=20,
        area_mirror=True,
    ),
}


def get_preset(name: str) -> Dict[str, Any]:
    """A fresh (deep) copy of preset ``name`` (one of :data:`PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def _as_cfg(preset_or_cfg: Union[str, Dict[str, Any]]) -> Dict[str, Any]:
    if isinstance(preset_or_cfg, str):
        return get_preset(preset_or_cfg)
    if isinstance(preset_or_cfg, dict):
        base = get_preset(preset_or_cfg["name"]) if preset_or_cfg.get("name") in PRESETS else copy.deepcopy(_PAPER)
        base.update(preset_or_cfg)
        return base
    raise TypeError(f"preset_or_cfg must be a preset name or a dict, got {type(preset_or_cfg).__name__}")


def generator_kwargs(cfg: Dict[str, Any], resolution: Optional[int] = None) -> Dict[str, Any]:
    """Keyword arguments of :class:`LayeredGenerator` for a config."""
    cfg = _as_cfg(cfg)
    return dict(z_dim=cfg["z_dim"], w_dim=cfg["w_dim"], img_resolution=resolution or cfg["resolution"],
                img_channels=3, mapping_layers=cfg["mapping_layers"],
                mapping_lr_multiplier=cfg["mapping_lr_multiplier"], w_avg_beta=cfg["w_avg_beta"],
                channel_base=cfg["channel_base"], channel_max=cfg["channel_max"],
                num_fp16_res=cfg["num_fp16_res"], conv_clamp=cfg["conv_clamp"], use_noise=cfg["use_noise"])


def discriminator_kwargs(cfg: Dict[str, Any], resolution: Optional[int] = None) -> Dict[str, Any]:
    """Keyword arguments of :class:`Discriminator` for a config."""
    cfg = _as_cfg(cfg)
    return dict(img_resolution=resolution or cfg["resolution"], img_channels=3, channel_base=cfg["channel_base"],
                channel_max=cfg["channel_max"], num_fp16_res=cfg["num_fp16_res"], conv_clamp=cfg["conv_clamp"],
                mbstd_group_size=cfg["mbstd_group_size"], mbstd_num_channels=cfg["mbstd_num_channels"])


def r1_gamma(cfg: Dict[str, Any], resolution: Optional[int] = None, batch: Optional[int] = None) -> float:
    """R1 weight: ``cfg["gamma"]`` if set, else ``r1_gamma_coef * R**2 / N`` (0.0256 at 64 px, batch 32)."""
    cfg = _as_cfg(cfg)
    if cfg.get("gamma") is not None:
        return float(cfg["gamma"])
    r = resolution or cfg["resolution"]
    n = batch or cfg["batch"]
    return cfg["r1_gamma_coef"] * r * r / n


def ema_kimg(cfg: Dict[str, Any], batch: Optional[int] = None) -> float:
    """G_ema half-life in kimg: ``cfg["ema_kimg"]`` if set, else ``10 * N / 32`` (10 at batch 32)."""
    cfg = _as_cfg(cfg)
    if cfg.get("ema_kimg") is not None:
        return float(cfg["ema_kimg"])
    return 10.0 * (batch or cfg["batch"]) / 32


def build_networks(preset_or_cfg: Union[str, Dict[str, Any]], resolution: Optional[int] = None, impl: str = "auto",
                   device: Union[str, torch.device] = "cpu") -> Tuple[LayeredGenerator, Discriminator]:
    """Build ``(G, D)`` for a preset name or config dict (missing keys from the named preset, else
    the paper's), at ``resolution`` (default the config's), with every op on backend ``impl``,
    on ``device``. G is a :class:`LayeredGenerator`, D a :class:`Discriminator`; both in train mode."""
    cfg = _as_cfg(preset_or_cfg)
    res = int(resolution or cfg["resolution"])
    if res < 8 or res & (res - 1) != 0:
        raise ValueError(f"build_networks: resolution must be a power of two >= 8, got {res}")
    G = LayeredGenerator(impl=impl, **generator_kwargs(cfg, res))
    D = Discriminator(impl=impl, **discriminator_kwargs(cfg, res))
    return G.to(device).train(), D.to(device).train()
