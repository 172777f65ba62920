"""Differentiable adaptive augmentation (StyleGAN2-ADA, pipeline "bgc").

:class:`AugmentPipe` applies, each with probability ``p`` per sample, in this order:

blit
    x-flip, rotation by a multiple of 90°, integer translation (up to ±0.125 of the size).
geometric
    isotropic scaling (lognormal, std 0.2 octaves), rotation (uniform; applied before and after the
    anisotropic scaling, each with probability ``1 - sqrt(1 - p)`` so that *some* rotation has
    probability p), anisotropic scaling (std 0.2 octaves), fractional translation (normal, std 0.125).
colour
    brightness (+N(0, 0.2)), contrast (×2^N(0, 0.5)), luma flip, hue rotation (uniform around the
    luma axis), saturation (×2^N(0, 1)).

All geometric transforms are composed into one inverse affine matrix per sample and executed once:
reflect-pad the image so the transformed footprint is covered, 2× up-sample with the ``sym6``
wavelet low-pass filter (:func:`ilsgan.ops.upsample2d`), bilinear resampling
(:func:`grid_sample`), 2× down-sample with the same filter (:func:`ilsgan.ops.downsample2d`).
The colour transforms are composed into one 4×4 affine colour matrix per sample.

Gradients: the output is differentiable w.r.t. the images to any order (G's loss goes through
it, and R1 differentiates ``D(A(x))`` w.r.t. ``x`` and then again w.r.t. D's parameters). Torch's
``grid_sample`` has no double backward; :func:`grid_sample` here is an autograd function whose
backward (``aten.grid_sampler_2d_backward`` w.r.t. the input) is itself differentiable — it is linear
in the incoming gradient, and its derivative is ``grid_sample`` again. The sampling grid is never
differentiated (it comes from random parameters).

When no sample of the batch draws any geometric (resp. colour) transform, that stage is skipped,
so ``p = 0`` is exactly the identity.

:class:`AdaptiveAugment` moves ``p`` toward the target ``E[sign(D(real))] = 0.6``: every
``interval`` iterations, ``p += sign(r_t - target) * batch * interval / (speed_kimg * 1000)``, floored at 0.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ops import downsample2d, setup_filter, upsample2d

__all__ = ["AugmentPipe", "AdaptiveAugment", "grid_sample", "AUGMENT_PRESETS", "SYM6"]

# Daubechies symlet-6 decomposition low-pass filter (sum sqrt(2), orthonormal under even shifts).
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)

# Probability multipliers of each augmentation, per pipeline preset (NVlabs naming).
_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
AUGMENT_PRESETS: Dict[str, Dict[str, float]] = {
    "blit": dict(_BLIT),
    "geom": dict(_GEOM),
    "color": dict(_COLOR),
    "bg": dict(_BLIT, **_GEOM),
    "bgc": dict(_BLIT, **_GEOM, **_COLOR),
}


# ------------------------------------------------------------------------------------------------
# Bilinear resampling with gradients of any order w.r.t. the input.

class _GridSample(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, grid: Tensor) -> Tensor:
        ctx.save_for_backward(x, grid)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, grid = ctx.saved_tensors
        dx = _GridSampleBackward.apply(dy, x, grid) if ctx.needs_input_grad[0] else None
        return dx, None


class _GridSampleBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy: Tensor, x: Tensor, grid: Tensor) -> Tensor:
        dx, _ = torch.ops.aten.grid_sampler_2d_backward(dy, x, grid, 0, 0, False, [True, False])
        ctx.save_for_backward(grid)
        return dx

    @staticmethod
    def backward(ctx, ddx: Tensor):
        (grid,) = ctx.saved_tensors
        ddy = _GridSample.apply(ddx, grid) if ctx.needs_input_grad[0] else None
        return ddy, None, None


def grid_sample(x: Tensor, grid: Tensor) -> Tensor:
    """``F.grid_sample(x, grid, "bilinear", "zeros", align_corners=False)`` with gradients of any order
    w.r.t. ``x`` (``grid`` is treated as a constant and must not require grad)."""
    if grid.requires_grad:
        raise ValueError("grid_sample: grid must not require grad (only the input is differentiated)")
    return _GridSample.apply(x, grid)


# ------------------------------------------------------------------------------------------------
# Batched homogeneous matrices.

def _matrix(rows, n: int, device) -> Tensor:
    """Build ``[n, R, C]`` from nested lists of scalars / ``[n]`` tensors."""
    elems = []
    for row in rows:
        for e in row:
            if isinstance(e, Tensor):
                elems.append(e.to(device=device, dtype=torch.float32).reshape(-1).expand(n))
            else:
                elems.append(torch.full([n], float(e), device=device))
    return torch.stack(elems, dim=-1).reshape(n, len(rows), len(rows[0]))


def _translate2d(tx, ty, n, device):
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], n, device)


def _scale2d(sx, sy, n, device):
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], n, device)


def _rotate2d(theta, n, device):
    c, s = torch.cos(theta), torch.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], n, device)


def _translate3d(tx, ty, tz, n, device):
    return _matrix([[1, 0, 0, tx], [0, 1, 0, ty], [0, 0, 1, tz], [0, 0, 0, 1]], n, device)


def _scale3d(sx, sy, sz, n, device):
    return _matrix([[sx, 0, 0, 0], [0, sy, 0, 0], [0, 0, sz, 0], [0, 0, 0, 1]], n, device)


def _rotate3d(v, theta, n, device):
    """Rotation by ``theta`` around the unit axis ``v`` (Rodrigues), as a 4x4 homogeneous matrix."""
    vx, vy, vz = float(v[0]), float(v[1]), float(v[2])
    s, c = torch.sin(theta), torch.cos(theta)
    cc = 1 - c
    return _matrix([[vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
                    [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
                    [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
                    [0, 0, 0, 1]], n, device)


# ------------------------------------------------------------------------------------------------

class AugmentPipe(nn.Module):
    """``A(images [N, C, H, W]) -> [N, C, H, W]``, differentiable to any order w.r.t. the images.

    Args:
        preset: ``"bgc"`` (default; blit + geometric + colour), ``"bg"``, ``"blit"``, ``"geom"``, ``"color"``.
        p: initial augmentation probability (a float32 buffer ``self.p``, updated in place by
            :class:`AdaptiveAugment`; saved in ``state_dict``).
        impl: op backend of the FIR resampling (:func:`ilsgan.ops.upfirdn2d`).
        **overrides: per-augmentation probability multipliers (e.g. ``hue=0``) and strengths
            (``xint_max, scale_std, rotate_max, aniso_std, xfrac_std, brightness_std, contrast_std,
            hue_max, saturation_std``).

    Colour transforms act on 3-channel images only (other channel counts skip them).
    Random numbers come from torch's global generator (``torch.manual_seed`` makes it reproducible).
    """

    def __init__(self, preset: str = "bgc", p: float = 0.0, impl: str = "auto", **overrides):
        super().__init__()
        if preset not in AUGMENT_PRESETS:
            raise ValueError(f"AugmentPipe: unknown preset {preset!r}; choose one of {sorted(AUGMENT_PRESETS)}")
        self.preset = preset
        self.impl = impl
        self.register_buffer("p", torch.tensor(float(p), dtype=torch.float32))
        probs = {k: 0.0 for k in ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness",
                                  "contrast", "lumaflip", "hue", "saturation")}
        probs.update(AUGMENT_PRESETS[preset])
        strengths = dict(xint_max=0.125, scale_std=0.2, rotate_max=1.0, aniso_std=0.2, xfrac_std=0.125,
                         brightness_std=0.2, contrast_std=0.5, hue_max=1.0, saturation_std=1.0)
        for k, v in overrides.items():
            if k in probs:
                probs[k] = float(v)
            elif k in strengths:
                strengths[k] = float(v)
            else:
                raise ValueError(f"AugmentPipe: unknown argument {k!r}")
        for k, v in {**probs, **strengths}.items():
            setattr(self, k, v)
        self.register_buffer("Hz_geom", setup_filter(list(SYM6)), persistent=False)

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}, p={float(self.p):.4f}"

    def _when(self, n: int, prob: float, device) -> Tensor:
        """Per-sample Bernoulli(p * prob) as a bool ``[n]``."""
        return torch.rand([n], device=device) < self.p.to(device) * prob

    def forward(self, images: Tensor) -> Tensor:
        if images.dim() != 4:
            raise ValueError(f"AugmentPipe: images must be 4-D [N, C, H, W], got shape {tuple(images.shape)}")
        n, c, h, w = images.shape
        device = images.device
        if float(self.p) <= 0:
            return images

        # -------- blit and geometric: compose the inverse transform G_inv (output px -> input px) --------
        I3 = torch.eye(3, device=device).expand(n, 3, 3)
        G_inv = I3
        zero = torch.zeros([n], device=device)
        if self.xflip > 0:
            i = torch.floor(torch.rand([n], device=device) * 2)
            i = torch.where(self._when(n, self.xflip, device), i, zero)
            G_inv = G_inv @ _scale2d(1 - 2 * i, 1, n, device)
        if self.rotate90 > 0:
            i = torch.floor(torch.rand([n], device=device) * 4)
            i = torch.where(self._when(n, self.rotate90, device), i, zero)
            G_inv = G_inv @ _rotate2d(-math.pi / 2 * i, n, device)
        if self.xint > 0:
            t = (torch.rand([n, 2], device=device) * 2 - 1) * self.xint_max
            t = torch.where(self._when(n, self.xint, device)[:, None], t, torch.zeros_like(t))
            G_inv = G_inv @ _translate2d(-torch.round(t[:, 0] * w), -torch.round(t[:, 1] * h), n, device)
        if self.scale > 0:
            s = torch.exp2(torch.randn([n], device=device) * self.scale_std)
            s = torch.where(self._when(n, self.scale, device), s, torch.ones_like(s))
            G_inv = G_inv @ _scale2d(1 / s, 1 / s, n, device)
        p_rot = 1 - torch.sqrt(torch.clamp(1 - self.p.to(device) * self.rotate, min=0))
        if self.rotate > 0:  # pre-rotation
            theta = (torch.rand([n], device=device) * 2 - 1) * math.pi * self.rotate_max
            theta = torch.where(torch.rand([n], device=device) < p_rot, theta, zero)
            G_inv = G_inv @ _rotate2d(-theta, n, device)
        if self.aniso > 0:
            s = torch.exp2(torch.randn([n], device=device) * self.aniso_std)
            s = torch.where(self._when(n, self.aniso, device), s, torch.ones_like(s))
            G_inv = G_inv @ _scale2d(1 / s, s, n, device)
        if self.rotate > 0:  # post-rotation
            theta = (torch.rand([n], device=device) * 2 - 1) * math.pi * self.rotate_max
            theta = torch.where(torch.rand([n], device=device) < p_rot, theta, zero)
            G_inv = G_inv @ _rotate2d(-theta, n, device)
        if self.xfrac > 0:
            t = torch.randn([n, 2], device=device) * self.xfrac_std
            t = torch.where(self._when(n, self.xfrac, device)[:, None], t, torch.zeros_like(t))
            G_inv = G_inv @ _translate2d(-t[:, 0] * w, -t[:, 1] * h, n, device)
        if not torch.equal(G_inv, I3):
            images = self._geometric(images, G_inv)

        # -------- colour: compose a 4x4 affine colour matrix C --------
        I4 = torch.eye(4, device=device).expand(n, 4, 4)
        C = I4
        if c == 3:
            if self.brightness > 0:
                b = torch.randn([n], device=device) * self.brightness_std
                b = torch.where(self._when(n, self.brightness, device), b, zero)
                C = _translate3d(b, b, b, n, device) @ C
            if self.contrast > 0:
                s = torch.exp2(torch.randn([n], device=device) * self.contrast_std)
                s = torch.where(self._when(n, self.contrast, device), s, torch.ones_like(s))
                C = _scale3d(s, s, s, n, device) @ C
            v = torch.tensor([1, 1, 1, 0], dtype=torch.float32, device=device) / math.sqrt(3)  # luma axis
            vv = torch.outer(v, v)
            if self.lumaflip > 0:
                i = torch.floor(torch.rand([n], device=device) * 2)
                i = torch.where(self._when(n, self.lumaflip, device), i, zero)
                C = (I4 - 2 * vv * i[:, None, None]) @ C
            if self.hue > 0:
                theta = (torch.rand([n], device=device) * 2 - 1) * math.pi * self.hue_max
                theta = torch.where(self._when(n, self.hue, device), theta, zero)
                C = _rotate3d(v, theta, n, device) @ C
            if self.saturation > 0:
                s = torch.exp2(torch.randn([n], device=device) * self.saturation_std)
                s = torch.where(self._when(n, self.saturation, device), s, torch.ones_like(s))
                C = (vv + (I4 - vv) * s[:, None, None]) @ C
        if not torch.equal(C, I4):
            C = C.to(images.dtype)
            flat = images.reshape(n, c, h * w)
            images = torch.baddbmm(C[:, :3, 3:], C[:, :3, :3], flat).reshape(n, c, h, w)
        return images

    def _geometric(self, images: Tensor, G_inv: Tensor) -> Tensor:
        """Execute the inverse transforms ``G_inv [N, 3, 3]`` (pixel units, origin at the centre)."""
        n, c, h, w = images.shape
        device = images.device
        hz_pad = self.Hz_geom.shape[0] // 4
        # Padding that covers the transformed footprint (+ the filter's support), capped by reflect.
        cx, cy = (w - 1) / 2, (h - 1) / 2
        cp = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], device=device)
        cp = G_inv @ cp.t()                                           # [N, 3, 4]
        margin = cp[:, :2, :].permute(1, 0, 2).flatten(1)             # [2, N*4]
        margin = torch.cat([-margin, margin]).amax(dim=1)             # [x0, y0, x1, y1]
        margin = margin + torch.tensor([hz_pad * 2 - cx, hz_pad * 2 - cy] * 2, device=device)
        margin = margin.clamp(min=0)
        margin = torch.minimum(margin, torch.tensor([w - 1, h - 1] * 2, device=device, dtype=margin.dtype))
        mx0, my0, mx1, my1 = (int(v) for v in margin.ceil().tolist())
        images = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")
        G_inv = _translate2d((mx0 - mx1) / 2, (my0 - my1) / 2, n, device) @ G_inv
        # 2x up-sampling: conjugate by the scale and the half-pixel shift.
        images = upsample2d(images, self.Hz_geom.float(), up=2, impl=self.impl)
        G_inv = _scale2d(2, 2, n, device) @ G_inv @ _scale2d(0.5, 0.5, n, device)
        G_inv = _translate2d(-0.5, -0.5, n, device) @ G_inv @ _translate2d(0.5, 0.5, n, device)
        # Sample the (up-sampled) output footprint; normalized coordinates for affine_grid.
        shape = [n, c, (h + hz_pad * 2) * 2, (w + hz_pad * 2) * 2]
        G_inv = (_scale2d(2 / images.shape[3], 2 / images.shape[2], n, device) @ G_inv
                 @ _scale2d(shape[3] / 2, shape[2] / 2, n, device))
        grid = F.affine_grid(G_inv[:, :2, :].to(images.dtype), shape, align_corners=False)
        images = grid_sample(images, grid)
        # 2x down-sampling back to [H, W] (cropping the filter margin).
        return downsample2d(images, self.Hz_geom.float(), down=2, padding=-hz_pad * 2, flip_filter=True, impl=self.impl)


class AdaptiveAugment:
    """Adaptive control of ``pipe.p`` (ADA): keep ``r_t = E[sign(D(real))]`` near ``target``.

    Usage per training iteration: ``ada.accumulate(real_logits)`` after D sees the real batch, then
    ``ada.step(batch_size)``; every ``interval`` steps p moves by
    ``sign(r_t - target) * batch_size * interval / (speed_kimg * 1000)`` (floored at 0). ``batch_size``
    is the global batch; under ``torch.distributed`` the statistics are summed over ranks so every
    rank gets the same p. ``state_dict`` / ``load_state_dict`` for checkpoints.
    """

    def __init__(self, pipe: AugmentPipe, target: float = 0.6, interval: int = 4, speed_kimg: float = 500):
        if interval < 1:
            raise ValueError(f"AdaptiveAugment: interval must be >= 1, got {interval}")
        if speed_kimg <= 0:
            raise ValueError(f"AdaptiveAugment: speed_kimg must be > 0, got {speed_kimg}")
        self.pipe = pipe
        self.target = float(target)
        self.interval = int(interval)
        self.speed_kimg = float(speed_kimg)
        self.iteration = 0
        self.rt: Optional[float] = None  # last measured r_t
        self._stats = torch.zeros(2, dtype=torch.float64, device=pipe.p.device)  # [sum sign, count]

    @property
    def p(self) -> float:
        return float(self.pipe.p)

    def accumulate(self, real_logits: Tensor) -> None:
        """Add ``sign(real_logits)`` to the running statistics (no host sync)."""
        x = real_logits.detach().flatten()
        if self._stats.device != x.device:
            self._stats = self._stats.to(x.device)
        self._stats += torch.stack([torch.sign(x).sum().double(), torch.tensor(float(x.numel()), dtype=torch.float64,
                                                                               device=x.device)])

    def step(self, batch_size: int) -> bool:
        """Count one iteration; every ``interval`` iterations update p. Returns True when p was updated."""
        self.iteration += 1
        if self.iteration % self.interval != 0:
            return False
        stats = self._stats.clone()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stats)
        self._stats.zero_()
        if stats[1] <= 0:
            return False
        self.rt = float(stats[0] / stats[1])
        adjust = float(np.sign(self.rt - self.target)) * (batch_size * self.interval) / (self.speed_kimg * 1000)
        with torch.no_grad():
            self.pipe.p.copy_((self.pipe.p + adjust).clamp(min=0))
        return True

    def state_dict(self) -> Dict:
        return {"iteration": self.iteration, "rt": self.rt, "stats": self._stats.cpu().clone(),
                "target": self.target, "interval": self.interval, "speed_kimg": self.speed_kimg,
                "p": float(self.pipe.p)}

    def load_state_dict(self, state: Dict) -> None:
        self.iteration = int(state["iteration"])
        self.rt = state.get("rt")
        self._stats = state["stats"].to(self.pipe.p.device, torch.float64).clone()
        if "p" in state:
            with torch.no_grad():
                self.pipe.p.fill_(float(state["p"]))
