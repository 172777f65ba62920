"""Write an image folder of a kind the package's own synthetic data does not make, to check training
on "a user's folder" without tuning to the built-in benchmark.

Objects: rotated superellipses or stars, filled with a radial two-colour gradient and faint rings.
Backgrounds: a two-colour linear gradient under blurred random rectangles and lines. Colours are
uniform in RGB. 64x64 PNGs:

    OUT/train/NNNNN.png                       (no masks: what training reads)
    OUT/test/images/NNNNN.png, OUT/test/masks/NNNNN.png   (0/255 masks: what evaluate reads)

Usage: python benchmarks/other_generator_folder.py OUT N_TRAIN N_TEST
"""
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _colour(r):
    return tuple(int(v) for v in r.integers(0, 256, 3))


def background(r, size):
    """A linear gradient between two colours, random rectangles and lines over it, blurred."""
    a, b = np.array(_colour(r), float), np.array(_colour(r), float)
    angle = r.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / size
    t = np.cos(angle) * xx + np.sin(angle) * yy
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    img = Image.fromarray((a * (1 - t[..., None]) + b * t[..., None]).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(r.integers(3, 9)):
        x0, y0 = r.uniform(-0.2, 1, 2) * size
        w, h = r.uniform(0.1, 0.5, 2) * size
        draw.rectangle([x0, y0, x0 + w, y0 + h], fill=_colour(r))
    for _ in range(r.integers(2, 6)):
        draw.line([tuple(r.uniform(0, size, 2)), tuple(r.uniform(0, size, 2))], fill=_colour(r),
                  width=int(r.integers(1, 4)))
    return img.filter(ImageFilter.GaussianBlur(r.uniform(0.5, 2.0)))


def object_mask(r, size):
    """A rotated superellipse or star; returns the boolean mask and (centre x, centre y, radius)."""
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    cx, cy = r.uniform(0.25, 0.75, 2)
    radius = r.uniform(0.18, 0.38)
    theta = r.uniform(0, np.pi)
    aspect = r.uniform(0.6, 1.0)
    dx, dy = xx - cx, yy - cy
    u = (np.cos(theta) * dx + np.sin(theta) * dy) / radius
    v = (-np.sin(theta) * dx + np.cos(theta) * dy) / (radius * aspect)
    if r.random() < 0.5:
        p = r.uniform(1.2, 4.0)
        field = np.abs(u) ** p + np.abs(v) ** p
    else:
        arms = int(r.integers(3, 7))
        field = np.hypot(u, v) / (1 + r.uniform(0.2, 0.5) * np.cos(arms * np.arctan2(v, u)))
    return field <= 1.0, (cx, cy, radius)


def sample(r, size):
    """One (uint8 image [size, size, 3], boolean mask [size, size])."""
    bg = np.asarray(background(r, size), float)
    mask, (cx, cy, radius) = object_mask(r, size)
    yy, xx = (np.mgrid[0:size, 0:size] + 0.5) / size
    d = np.hypot(xx - cx, yy - cy) / radius
    c0, c1 = np.array(_colour(r), float), np.array(_colour(r), float)
    t = np.clip(d, 0, 1)[..., None]
    rings = 0.5 + 0.5 * np.sin(d * r.uniform(6, 20))[..., None] * r.uniform(0, 0.5)
    fg = (c0 * (1 - t) + c1 * t) * (0.75 + 0.5 * rings)
    img = np.where(mask[..., None], fg, bg) + r.normal(0, 4, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def main(out, n_train, n_test, size=64, seed=123):
    r = np.random.default_rng(seed)
    for sub in ("train", "test/images", "test/masks"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    for i in range(n_train):
        Image.fromarray(sample(r, size)[0]).save(os.path.join(out, "train", f"{i:05d}.png"))
    for i in range(n_test):
        img, mask = sample(r, size)
        Image.fromarray(img).save(os.path.join(out, "test/images", f"{i:05d}.png"))
        Image.fromarray((mask * 255).astype(np.uint8)).save(os.path.join(out, "test/masks", f"{i:05d}.png"))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
