"""Data: the built-in synthetic benchmark, image folders/zips, image+mask folders, baselines and
preparation of the paper's datasets.

- :func:`open_dataset` — training images (uint8 ``[3, R, R]``) from ``"synthetic[:tier]"``, a folder
  or a .zip of images.
- :func:`open_image_mask_folder` — ``(image, mask)`` pairs from ``DIR/images`` + ``DIR/masks``.
- :func:`write_synthetic` — write synthetic samples as ``OUT/images`` + ``OUT/masks`` PNGs.
- :class:`DatasetError` — raised for a missing, empty or unreadable dataset (message names the path).
- ``python -m ilsgan.data --help`` — CLI: ``synthetic``, ``baselines``, ``prep-cub``, ``prep-dogs``,
  ``prep-cars``.
"""

from __future__ import annotations

from pathlib import Path

from .folders import DatasetError, ImageFolderDataset, ImageMaskDataset
from .synthetic import TIERS, SyntheticDataset, render, write_folder as write_synthetic

__all__ = [
    "open_dataset", "open_image_mask_folder", "DatasetError", "SyntheticDataset", "ImageFolderDataset",
    "ImageMaskDataset", "render", "write_synthetic", "TIERS", "parse_spec",
]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``"synthetic"`` / ``"synthetic:TIER"`` -> ("synthetic", tier); anything else -> ("path", spec)."""
    s = str(spec)
    if s == "synthetic" or s.startswith("synthetic:"):
        tier = s.split(":", 1)[1] if ":" in s else None
        if tier is not None and tier.lower() not in TIERS:
            raise DatasetError(f"unknown synthetic tier {tier!r} in {s!r}: use one of {sorted(TIERS)}")
        return "synthetic", tier
    return "path", s


def open_dataset(spec, resolution: int, *, split: str = "train", seed: int = 0, crop: str = "center",
                 length: int | None = None, boxes=None, verify: str = "header", with_masks: bool = False):
    """Open a training dataset; items are uint8 tensors ``[3, R, R]`` (RGB).

    spec:
      - ``"synthetic"`` or ``"synthetic:easy|medium|hard"`` (default tier ``medium``): rendered on the
        fly, item i a pure function of (seed, split, tier, i); ``length`` items (default 50000).
        ``with_masks=True`` makes items ``(image, bool mask [1, R, R])``.
      - a folder of images (recursively; png/jpg/jpeg/webp/bmp) or a ``.zip`` of images; ``split`` and
        ``seed`` are ignored, ``length`` keeps the first N images (sorted by name).
    crop (folders/zips): ``"center"`` centre square then resize to R; ``"none"`` resize the whole
    image; ``"box"`` the 1.5x object-box square (boxes from ``boxes=`` or a ``boxes.txt`` sidecar with
    lines ``NAME x y w h``; see :class:`ImageFolderDataset`). Grayscale/RGBA/palette -> RGB.
    Unreadable images are skipped with a warning and counted in ``dataset.num_skipped``.
    ``dataset.description`` is a short human-readable string.
    Raises :class:`DatasetError` for a missing, empty or unreadable dataset.
    """
    kind, arg = parse_spec(spec)
    if kind == "synthetic":
        return SyntheticDataset(resolution, tier=arg, split=split, seed=seed, length=length,
                                with_masks=with_masks)
    if with_masks:
        raise ValueError("with_masks=True is only for synthetic data; use open_image_mask_folder for folders")
    path = Path(arg).expanduser()
    if not path.exists():
        raise DatasetError(
            f"dataset path does not exist: {path} (expected a folder of images, a .zip of images, "
            f"or 'synthetic[:easy|medium|hard]')")
    return ImageFolderDataset(path, resolution, crop=crop, boxes=boxes, length=length, verify=verify)


def open_image_mask_folder(root_or_images, masks=None, resolution: int | None = None, *,
                           crop: str = "none", verify: str = "header") -> ImageMaskDataset:
    """``(image uint8 [3, R, R], mask bool [1, R, R])`` pairs.

    ``open_image_mask_folder(DIR)`` reads ``DIR/images`` (or ``DIR/images.zip``) and ``DIR/masks``;
    ``open_image_mask_folder(IMAGES, MASKS)`` takes the two folders (or zips) explicitly. Pairing by
    relative name without extension; a mask pixel is foreground when its gray level is > 127 (alpha
    for RGBA masks). ``resolution=None`` keeps native sizes; otherwise images are resized with LANCZOS
    and masks with nearest neighbour (``crop="center"`` centre-crops both first).
    ``dataset.names`` lists the pair names (relative, without extension).
    Raises :class:`DatasetError` (naming the path) when a folder is missing or empty or an image has no mask.
    """
    root = Path(root_or_images).expanduser()
    if masks is None:
        if not root.exists():
            raise DatasetError(f"image+mask folder does not exist: {root}")
        images, masks = root / "images", root / "masks"
        if not images.exists() and (root / "images.zip").is_file():
            images = root / "images.zip"  # written by `prep-* --zip`
        for p, what in ((images, "images"), (masks, "masks")):
            if not p.exists():
                raise DatasetError(
                    f"{root} has no {what}/ folder: expected the layout {root}/images/NAME.png + "
                    f"{root}/masks/NAME.png (or pass the images and masks folders explicitly)")
    else:
        images = root
    return ImageMaskDataset(images, Path(masks).expanduser(), resolution, crop=crop, verify=verify)
