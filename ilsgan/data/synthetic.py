"""Built-in procedural foreground/background benchmark with exact ground-truth masks.

Every sample is a pure function of ``(seed, split, tier, index)`` (and the resolution): a
foreground *layer* (a full-frame textured image), a background *layer* (textured, with distractor
clutter) and a binary mask; the image is ``where(mask, fg, bg)``, so the mask is exactly the set of
pixels painted by the foreground. Foreground and background are drawn from two independent random
streams (the ILSGAN assumption: independent layers).

Design (all tiers share it; tiers change the knobs in :data:`TIERS`):

- Object shape: a gauge field ``F`` (the union, by ``min``, of a body — smooth radial blob or convex
  polygon — an optional second lobe, and optional thin limbs); ``mask = F <= t`` with the threshold
  ``t`` chosen as the quantile that gives the target visible coverage (10–60% of the image), so the
  object is cut by the image border when its centre is off-centre. Holes (ellipses inside the body)
  are cut afterwards.
- Textures (object, background, clutter alike): value noise of several scales, stripes (optionally
  warped), checkers, spots, gradients; mapped through 2–3-colour palettes drawn from one shared HSV
  distribution, then a smooth illumination field and pixel noise.
- Clutter: distractor shapes (blobs, polygons, bars, strokes) painted into the background layer
  with textures from the same distribution; smaller than the object in easy/medium.

Coordinates live in ``[0, 1]^2``, so one ``(seed, split, index)`` gives the same scene at any
resolution (up to pixel quantization). Rendering is vectorized numpy in float32 (~1 ms at 64 px).
"""

from __future__ import annotations

import colorsys
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["TIERS", "SPLITS", "Sample", "render", "SyntheticDataset", "parse_tier", "write_folder"]

SPLITS = {"train": 0, "test": 1, "val": 2}
_TIER_CODE = {"easy": 11, "medium": 22, "hard": 33}


@dataclass(frozen=True)
class TierConfig:
    coverage: tuple[float, float]  # visible object coverage range
    bg_textures: tuple[int, int]  # number of background texture layers (blended)
    n_distractors: tuple[int, int]
    distractor_size: tuple[float, float]  # distractor radius, fraction of the image side
    sat: tuple[float, float]  # colour saturation range (shared by fg and bg)
    val: tuple[float, float]  # colour value range
    pixel_noise: float  # std of per-pixel noise (0..1 colour units)
    illumination: float  # amplitude of the smooth illumination field
    fg_flat: float  # probability that the object's texture is almost flat (easier)
    bg_flat: float  # probability that the background is a smooth 2-colour gradient (easier)


TIERS: dict[str, TierConfig] = {
    "easy": TierConfig(
        coverage=(0.12, 0.55), bg_textures=(1, 1), n_distractors=(0, 1),
        distractor_size=(0.04, 0.08), sat=(0.3, 1.0), val=(0.25, 1.0), pixel_noise=0.01,
        illumination=0.05, fg_flat=0.5, bg_flat=0.6,
    ),
    "medium": TierConfig(
        coverage=(0.10, 0.60), bg_textures=(1, 2), n_distractors=(2, 5),
        distractor_size=(0.05, 0.14), sat=(0.1, 0.85), val=(0.2, 0.95), pixel_noise=0.025,
        illumination=0.15, fg_flat=0.1, bg_flat=0.05,
    ),
    "hard": TierConfig(
        coverage=(0.10, 0.60), bg_textures=(2, 2), n_distractors=(4, 8),
        distractor_size=(0.06, 0.20), sat=(0.05, 0.6), val=(0.25, 0.85), pixel_noise=0.04,
        illumination=0.25, fg_flat=0.0, bg_flat=0.0,
    ),
}


def parse_tier(tier: str | None) -> str:
    tier = "medium" if tier in (None, "") else str(tier).lower()
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {sorted(TIERS)}, got {tier!r}")
    return tier


@dataclass
class Sample:
    image: np.ndarray  # uint8 [R, R, 3]
    mask: np.ndarray  # bool [R, R]
    fg: np.ndarray  # uint8 [R, R, 3] foreground layer (full frame)
    bg: np.ndarray  # uint8 [R, R, 3] background layer (full frame)


# ----------------------------------------------------------------------------- cached grids


@functools.lru_cache(maxsize=16)
def _grid(res: int):
    c = (np.arange(res, dtype=np.float32) + 0.5) / res
    y, x = np.meshgrid(c, c, indexing="ij")
    return x, y


@functools.lru_cache(maxsize=128)
def _upsample_matrix(res: int, k: int) -> np.ndarray:
    """[res, k] bilinear interpolation matrix from a k-point grid spanning [0,1] (cell centres)."""
    pos = (np.arange(res, dtype=np.float64) + 0.5) / res * k - 0.5
    pos = np.clip(pos, 0, k - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, k - 1)
    w = pos - i0
    a = np.zeros((res, k), np.float64)
    a[np.arange(res), i0] += 1 - w
    a[np.arange(res), i1] += w
    return a.astype(np.float32)


# ----------------------------------------------------------------------------- textures


def _value_noise(rng: np.random.Generator, res: int, k: int) -> np.ndarray:
    a = _upsample_matrix(res, k)
    g = rng.random((k, k), dtype=np.float32)
    return a @ g @ a.T


def _normalize(t: np.ndarray) -> np.ndarray:
    lo, hi = t.min(), t.max()
    return (t - lo) * (1.0 / max(float(hi - lo), 1e-6))


def _texture_field(rng: np.random.Generator, res: int, flat: bool) -> np.ndarray:
    """A scalar field in [0, 1] from one of the texture families."""
    x, y = _grid(res)
    if flat:
        t = _value_noise(rng, res, 2) * 0.5 + 0.25
        return t
    kind = rng.integers(0, 6)
    if kind == 0:  # multi-scale value noise
        t = _value_noise(rng, res, int(rng.integers(3, 7))) + 0.5 * _value_noise(rng, res, int(rng.integers(8, 17)))
        return _normalize(t)
    theta = rng.uniform(0, math.pi)
    u = x * math.cos(theta) + y * math.sin(theta)
    v = -x * math.sin(theta) + y * math.cos(theta)
    if kind in (1, 2):  # stripes (kind 2: warped)
        f = rng.uniform(3, 12)
        ph = rng.uniform(0, 2 * math.pi)
        arg = (2 * math.pi * f) * u + ph
        if kind == 2:
            arg = arg + rng.uniform(1.5, 4.0) * _value_noise(rng, res, int(rng.integers(3, 6)))
        s = np.sin(arg)
        sharp = rng.uniform(1.0, 6.0)
        return 0.5 + 0.5 * np.tanh(sharp * s) / math.tanh(sharp)
    if kind == 3:  # checkers
        f1, f2 = rng.uniform(3, 10, size=2)
        s = np.sin((2 * math.pi * f1) * u) * np.sin((2 * math.pi * f2) * v)
        return 0.5 + 0.5 * np.tanh(4 * s) / math.tanh(4)
    if kind == 4:  # spots: thresholded high-frequency noise
        n = _value_noise(rng, res, int(rng.integers(6, 14)))
        thr = rng.uniform(0.45, 0.65)
        return 0.5 + 0.5 * np.tanh(12 * (n - thr))
    # gradient with mild noise
    return _normalize(u + 0.3 * _value_noise(rng, res, 4))


def _hsv(rng: np.random.Generator, sat, val) -> np.ndarray:
    h = rng.random()
    s = rng.uniform(*sat)
    v = rng.uniform(*val)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32)


def _palette(rng: np.random.Generator, cfg: TierConfig, n: int) -> np.ndarray:
    cols = [_hsv(rng, cfg.sat, cfg.val)]
    for _ in range(n - 1):
        if rng.random() < 0.5:  # related colour: same hue family, other brightness
            h, s, v = colorsys.rgb_to_hsv(*cols[0])
            h = (h + rng.uniform(-0.08, 0.08)) % 1.0
            v = float(np.clip(v + rng.choice([-1, 1]) * rng.uniform(0.2, 0.45), 0.05, 1.0))
            cols.append(np.array(colorsys.hsv_to_rgb(h, s, v), np.float32))
        else:
            cols.append(_hsv(rng, cfg.sat, cfg.val))
    return np.stack(cols)


_LUT_N = 512
_RAMP = np.linspace(0.0, 1.0, _LUT_N, dtype=np.float32)[:, None]


def _lut(pal: np.ndarray) -> np.ndarray:
    """[_LUT_N, 3] colour ramp through the palette (2 or 3 colours, piecewise linear)."""
    t = _RAMP
    if len(pal) == 2:
        return pal[0] + t * (pal[1] - pal[0])
    t2 = t * 2
    return pal[0] + np.minimum(t2, 1) * (pal[1] - pal[0]) + np.maximum(t2 - 1, 0) * (pal[2] - pal[1])


def _colourize(t: np.ndarray, pal: np.ndarray) -> np.ndarray:
    idx = (np.clip(t, 0.0, 1.0) * (_LUT_N - 1) + 0.5).astype(np.intp)
    return _lut(pal)[idx]


def _textured_layer(rng: np.random.Generator, cfg: TierConfig, res: int, flat: bool):
    """(colour layer [R, R, 3] float32, its scalar texture field [R, R])."""
    t = _texture_field(rng, res, flat)
    pal = _palette(rng, cfg, 2 if flat else int(rng.integers(2, 4)))
    return _colourize(t, pal), t


def _field_view(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A cheap variant of a texture field (flip / transpose / inversion), for clutter."""
    k = int(rng.integers(0, 8))
    if k & 1:
        t = t[::-1]
    if k & 2:
        t = t[:, ::-1]
    if k & 4:
        t = t.T
    return 1.0 - t if rng.random() < 0.5 else t


_NOISE_BANK_SIZE = 1 << 20


@functools.lru_cache(maxsize=1)
def _noise_bank() -> np.ndarray:
    """A fixed bank of standard normal samples; layers read a random window of it (cheap, deterministic)."""
    return np.random.default_rng(20240917).standard_normal(_NOISE_BANK_SIZE, dtype=np.float32)


def _pixel_noise(rng: np.random.Generator, shape) -> np.ndarray:
    n = int(np.prod(shape))
    if n > _NOISE_BANK_SIZE // 2:
        return rng.standard_normal(shape, dtype=np.float32)
    o = int(rng.integers(0, _NOISE_BANK_SIZE - n))
    return _noise_bank()[o:o + n].reshape(shape)


def _finish_layer(rng: np.random.Generator, cfg: TierConfig, img: np.ndarray) -> np.ndarray:
    """Illumination field and pixel noise, then quantize to uint8."""
    res = img.shape[0]
    if cfg.illumination > 0:
        light = 1.0 + cfg.illumination * (2 * _value_noise(rng, res, 3) - 1)
        img = img * light[..., None]
    if cfg.pixel_noise > 0:
        img = img + cfg.pixel_noise * _pixel_noise(rng, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------- shapes


def _local(x, y, cx, cy, theta, sx, sy):
    c, s = math.cos(theta), math.sin(theta)
    dx, dy = x - cx, y - cy
    return (dx * c + dy * s) / sx, (-dx * s + dy * c) / sy


def _blob_gauge(rng, x, y, cx, cy, r, theta, aspect):
    u, v = _local(x, y, cx, cy, theta, r * aspect, r / aspect)
    rad = np.sqrt(u * u + v * v)
    phi = np.arctan2(v, u)
    radius = np.ones_like(phi)
    for k in range(2, 6):
        amp = rng.uniform(0, 0.28 / math.sqrt(k))
        radius += amp * np.cos(k * phi + rng.uniform(0, 2 * math.pi))
    return rad / np.maximum(radius, 0.3)


def _polygon_params(rng):
    n = int(rng.integers(3, 8))
    jitter = 0.12 if n == 3 else 0.25  # keeps every gap between normals < pi (bounded polygon)
    angles = (np.arange(n) + rng.uniform(-jitter, jitter, size=n)) * (2 * math.pi / n) + rng.uniform(0, 2 * math.pi)
    dists = rng.uniform(0.75, 1.0, size=n)
    gaps = np.diff(np.concatenate([angles, angles[:1] + 2 * math.pi]))
    bound = float(dists.max() / math.cos(min(float(gaps.max()), 3.0) / 2))  # circumradius bound
    return angles, dists, bound


def _polygon_gauge(rng, x, y, cx, cy, r, theta, aspect, params=None):
    u, v = _local(x, y, cx, cy, theta, r * aspect, r / aspect)
    angles, dists, _ = _polygon_params(rng) if params is None else params
    g = None
    for a, d in zip(angles, dists):
        h = (u * math.cos(a) + v * math.sin(a)) * (1.0 / d)
        g = h if g is None else np.maximum(g, h)
    return g


def _segment_dist(x, y, x0, y0, x1, y1):
    dx, dy = x1 - x0, y1 - y0
    ll = dx * dx + dy * dy + 1e-12
    t = np.clip(((x - x0) * dx + (y - y0) * dy) * (1.0 / ll), 0, 1)
    px, py = x - (x0 + t * dx), y - (y0 + t * dy)
    return np.sqrt(px * px + py * py)


def _object_mask(rng: np.random.Generator, cfg: TierConfig, res: int) -> np.ndarray:
    x, y = _grid(res)
    cov = rng.uniform(*cfg.coverage)
    # off-centre position; large objects near the border get cut by it
    cx, cy = rng.uniform(0.15, 0.85, size=2)
    r = math.sqrt(cov / math.pi)
    theta = rng.uniform(0, 2 * math.pi)
    aspect = math.exp(rng.uniform(-0.45, 0.45))
    body = _blob_gauge if rng.random() < 0.55 else _polygon_gauge
    field = body(rng, x, y, cx, cy, r, theta, aspect)
    if rng.random() < 0.35:  # a second lobe
        a = rng.uniform(0, 2 * math.pi)
        d = r * rng.uniform(0.5, 1.1)
        lobe = (_blob_gauge if rng.random() < 0.5 else _polygon_gauge)(
            rng, x, y, cx + d * math.cos(a), cy + d * math.sin(a), r * rng.uniform(0.45, 0.8),
            rng.uniform(0, 2 * math.pi), math.exp(rng.uniform(-0.4, 0.4)))
        field = np.minimum(field, lobe)
    n_limbs = int(rng.choice([0, 0, 1, 2, 3]))
    for _ in range(n_limbs):  # thin parts: capsules sticking out of the body
        a = rng.uniform(0, 2 * math.pi)
        length = r * rng.uniform(1.3, 2.3)
        w = r * rng.uniform(0.08, 0.16)
        bend = rng.uniform(-0.6, 0.6)
        mx, my = cx + 0.55 * length * math.cos(a), cy + 0.55 * length * math.sin(a)
        ex, ey = cx + length * math.cos(a + bend), cy + length * math.sin(a + bend)
        d = np.minimum(_segment_dist(x, y, cx, cy, mx, my), _segment_dist(x, y, mx, my, ex, ey))
        field = np.minimum(field, d * (1.0 / w) * 0.5)  # threshold ~1 -> half-width ~ w/2..w
    flat = field.ravel()
    k = int(round(cov * flat.size))
    k = min(max(k, 1), flat.size - 1)
    t = np.partition(flat, k)[k]
    mask = field < t
    if rng.random() < 0.3:  # holes, inside the body (candidate centres drawn resolution-independently)
        for _ in range(int(rng.integers(1, 3))):
            cand = rng.uniform(-1.2 * r, 1.2 * r, size=(8, 2)) + (cx, cy)
            hr = r * rng.uniform(0.12, 0.3)
            hth = rng.uniform(0, math.pi)
            for hx, hy in cand:
                ix, iy = int(hx * res), int(hy * res)
                if 0 <= ix < res and 0 <= iy < res and field[iy, ix] < 0.55 * t:
                    u, v = _local(x, y, hx, hy, hth, hr * 1.3, hr / 1.3)
                    mask &= (u * u + v * v) > 1.0
                    break
    return mask


def _distractor_mask(rng: np.random.Generator, cfg: TierConfig, res: int):
    """A clutter shape, computed only inside its bounding window: (mask window, (rows, cols) slices)
    or None when it falls outside the image."""
    x, y = _grid(res)
    cx, cy = rng.uniform(-0.05, 1.05, size=2)
    r = rng.uniform(*cfg.distractor_size)
    kind = int(rng.integers(0, 4))
    theta = rng.uniform(0, 2 * math.pi)
    if kind in (0, 1):
        aspect = math.exp(rng.uniform(-0.5, 0.5))
        stretch = r * max(aspect, 1 / aspect)
        if kind == 0:
            amps = [rng.uniform(0, 0.28 / math.sqrt(k)) for k in range(2, 6)]
            phases = [rng.uniform(0, 2 * math.pi) for _ in range(2, 6)]
            extent = stretch * (1 + sum(amps))
        else:
            params = _polygon_params(rng)
            extent = stretch * params[2]
    elif kind == 2:
        bw = r * rng.uniform(0.15, 0.4)
        extent = math.hypot(2.5 * r, bw)
    else:
        wd = r * rng.uniform(0.1, 0.3)
        ex, ey = cx + 3 * r * math.cos(theta), cy + 3 * r * math.sin(theta)
        extent = 0.0
    if kind == 3:
        x0, x1 = min(cx, ex) - wd, max(cx, ex) + wd
        y0, y1 = min(cy, ey) - wd, max(cy, ey) + wd
    else:
        x0, x1, y0, y1 = cx - extent, cx + extent, cy - extent, cy + extent
    c0, c1 = max(0, int(math.floor(x0 * res)) - 1), min(res, int(math.ceil(x1 * res)) + 1)
    r0, r1 = max(0, int(math.floor(y0 * res)) - 1), min(res, int(math.ceil(y1 * res)) + 1)
    if c1 <= c0 or r1 <= r0:
        return None
    win = (slice(r0, r1), slice(c0, c1))
    xw, yw = x[win], y[win]
    if kind == 0:
        u, v = _local(xw, yw, cx, cy, theta, r * aspect, r / aspect)
        rad = np.sqrt(u * u + v * v)
        phi = np.arctan2(v, u)
        radius = 1.0 + sum(a * np.cos(k * phi + p) for k, a, p in zip(range(2, 6), amps, phases))
        g = rad / np.maximum(radius, 0.3)
    elif kind == 1:
        g = _polygon_gauge(rng, xw, yw, cx, cy, r, theta, aspect, params)
    elif kind == 2:
        u, v = _local(xw, yw, cx, cy, theta, r * 2.5, bw)
        g = np.maximum(np.abs(u), np.abs(v))
    else:
        g = _segment_dist(xw, yw, cx, cy, ex, ey) / wd
    return g < 1.0, win


# ----------------------------------------------------------------------------- sample


def _rngs(seed: int, split: str, tier: str, index: int):
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, SPLITS[split], _TIER_CODE[tier], int(index)])
    fg_ss, bg_ss = ss.spawn(2)
    return np.random.default_rng(fg_ss), np.random.default_rng(bg_ss)


def render(index: int, resolution: int = 64, tier: str = "medium", split: str = "train", seed: int = 0,
           *, fg_colour=None, bg_colour=None) -> Sample:
    """Render sample ``index``: a :class:`Sample` with image, mask and both layers (numpy).

    ``fg_colour`` / ``bg_colour`` (RGB uint8 triples) replace that layer by a constant colour, for
    tests and debugging; the mask and the other layer are unchanged.
    """
    tier = parse_tier(tier)
    if resolution < 8:
        raise ValueError(f"resolution must be >= 8, got {resolution}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    cfg = TIERS[tier]
    fg_rng, bg_rng = _rngs(seed, split, tier, index)
    res = int(resolution)

    # foreground layer + mask (independent stream)
    mask = _object_mask(fg_rng, cfg, res)
    fg, _ = _textured_layer(fg_rng, cfg, res, flat=fg_rng.random() < cfg.fg_flat)
    fg = _finish_layer(fg_rng, cfg, fg)
    if fg_colour is not None:
        fg = np.broadcast_to(np.asarray(fg_colour, np.uint8), fg.shape).copy()

    # background layer with clutter (independent stream)
    bg, t_bg = _textured_layer(bg_rng, cfg, res, flat=bg_rng.random() < cfg.bg_flat)
    fields = [t_bg]
    n_tex = int(bg_rng.integers(cfg.bg_textures[0], cfg.bg_textures[1] + 1))
    for _ in range(n_tex - 1):  # second texture blended through a smooth region field
        other, t_other = _textured_layer(bg_rng, cfg, res, flat=False)
        fields.append(t_other)
        w = _value_noise(bg_rng, res, int(bg_rng.integers(2, 5)))
        w = np.clip((w - 0.5) * bg_rng.uniform(4, 12) + 0.5, 0, 1)[..., None]
        bg = bg + w * (other - bg)
    n_d = int(bg_rng.integers(cfg.n_distractors[0], cfg.n_distractors[1] + 1))
    if n_d and len(fields) < 2:
        fields.append(_texture_field(bg_rng, res, flat=False))
    for _ in range(n_d):  # clutter: textured shapes, computed and coloured inside their window
        d = _distractor_mask(bg_rng, cfg, res)
        t = _field_view(bg_rng, fields[int(bg_rng.integers(0, len(fields)))])
        pal = _palette(bg_rng, cfg, int(bg_rng.integers(1, 4)) if bg_rng.random() < 0.7 else 2)
        if d is None:
            continue
        dm, win = d
        if len(pal) == 1:
            tex = np.broadcast_to(pal[0], bg[win].shape)
        else:
            tex = _colourize(t[win], pal)
        bg[win] = np.where(dm[..., None], tex, bg[win])
    bg = _finish_layer(bg_rng, cfg, bg)
    if bg_colour is not None:
        bg = np.broadcast_to(np.asarray(bg_colour, np.uint8), bg.shape).copy()

    image = np.where(mask[..., None], fg, bg)
    return Sample(image=image, mask=mask, fg=fg, bg=bg)


class SyntheticDataset(Dataset):
    """On-the-fly synthetic dataset (a ``torch.utils.data.Dataset``).

    Items are uint8 tensors ``[3, R, R]`` (RGB), or ``(image, mask)`` with a bool mask ``[1, R, R]``
    when ``with_masks=True``. Item ``i`` is a pure function of ``(seed, split, tier, i, R)``.
    """

    def __init__(self, resolution: int = 64, tier: str = "medium", split: str = "train", seed: int = 0,
                 length: int | None = None, with_masks: bool = False):
        self.resolution = int(resolution)
        self.tier = parse_tier(tier)
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        self.split = split
        self.seed = int(seed)
        self.length = 50000 if length is None else int(length)
        if self.length <= 0:
            raise ValueError(f"length must be > 0, got {length}")
        if self.resolution < 8:
            raise ValueError(f"resolution must be >= 8, got {resolution}")
        self.with_masks = bool(with_masks)
        self.num_skipped = 0
        self.description = (f"synthetic:{self.tier} split={self.split} seed={self.seed} "
                            f"n={self.length} {self.resolution}px")
        self.names = None

    def __len__(self) -> int:
        return self.length

    def name(self, index: int) -> str:
        return f"{self.split}_{self.tier}_{index:06d}"

    def sample(self, index: int) -> Sample:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for a dataset of length {self.length}")
        return render(index, self.resolution, self.tier, self.split, self.seed)

    def __getitem__(self, index: int):
        s = self.sample(int(index))
        img = torch.from_numpy(np.ascontiguousarray(s.image.transpose(2, 0, 1)))
        if self.with_masks:
            return img, torch.from_numpy(s.mask[None].copy())
        return img

    def __repr__(self) -> str:
        return f"SyntheticDataset({self.description})"


def write_folder(out, n: int, resolution: int = 64, tier: str = "medium", split: str = "test", seed: int = 0,
                 start: int = 0, progress: bool = True) -> list[str]:
    """Write samples ``start .. start+n-1`` as ``out/images/NAME.png`` + ``out/masks/NAME.png`` (0/255),
    NAME = ``{split}_{index:06d}``, plus ``out/synthetic.json``; returns the names."""
    import json
    from pathlib import Path

    from PIL import Image
    from tqdm import tqdm

    from .folders import DatasetError

    tier = parse_tier(tier)
    if n <= 0:
        raise ValueError(f"n must be > 0, got {n}")
    out = Path(out)
    try:
        (out / "images").mkdir(parents=True, exist_ok=True)
        (out / "masks").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DatasetError(f"cannot create output folder {out}: {e}") from e
    names = []
    for i in tqdm(range(start, start + n), desc=f"synthetic:{tier} {split}", unit="img", disable=not progress):
        s = render(i, resolution, tier, split, seed)
        name = f"{split}_{i:06d}"
        Image.fromarray(s.image).save(out / "images" / f"{name}.png")
        Image.fromarray(s.mask.astype(np.uint8) * 255).save(out / "masks" / f"{name}.png")
        names.append(name)
    info = dict(dataset="synthetic", tier=tier, split=split, seed=seed, resolution=resolution, start=start, n=n)
    (out / "synthetic.json").write_text(json.dumps(info, indent=2) + "\n")
    return names
