"""Predict foreground masks for any images with a UNet saved by ``python -m ilsgan.evaluate --save-unet``.

    python -m ilsgan.segment --model unet.pt --images DIR --out DIR

Writes ``OUT/<name>.png`` (0/255, same relative name as the image, extension .png) at each image's
own size: the image is resized to the UNet resolution and the logits are resized back (bilinear).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from PIL import Image

__all__ = ["main", "IMAGE_EXTS"]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def _list_images(root: str) -> list[str]:
    out = []
    for d, _, files in os.walk(root):
        for f in files:
            if f.lower().endswith(IMAGE_EXTS):
                out.append(os.path.relpath(os.path.join(d, f), root))
    return sorted(out)


def main(argv=None) -> list[str]:
    p = argparse.ArgumentParser(prog="python -m ilsgan.segment",
                                description="Write predicted foreground masks (PNG 0/255) for a folder of images.")
    p.add_argument("--model", required=True, help="UNet file written by python -m ilsgan.evaluate --save-unet")
    p.add_argument("--images", required=True, help="folder of images (searched recursively)")
    p.add_argument("--out", required=True, help="output folder for masks")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    from tqdm.auto import tqdm

    from .segmentation.protocol import load_unet, predict_masks

    if not os.path.isfile(args.model):
        raise SystemExit(f"error: --model {args.model}: file not found "
                         "(write one with python -m ilsgan.evaluate --save-unet PATH)")
    if not os.path.isdir(args.images):
        raise SystemExit(f"error: --images {args.images}: directory not found")
    files = _list_images(args.images)
    if not files:
        raise SystemExit(f"error: --images {args.images}: no images ({', '.join(IMAGE_EXTS)})")
    try:
        model, unet_res = load_unet(args.model, args.device)
    except (ValueError, RuntimeError) as e:
        raise SystemExit(f"error: {e}")
    written = []
    for rel in tqdm(files, desc="segmenting", unit="img"):
        with Image.open(os.path.join(args.images, rel)) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.uint8)
        x = torch.from_numpy(a.copy()).permute(2, 0, 1)[None]
        m = predict_masks(model, x, unet_res, out_size=tuple(x.shape[-2:]))[0, 0].cpu().numpy()
        dst = os.path.join(args.out, os.path.splitext(rel)[0] + ".png")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        Image.fromarray((m * 255).astype(np.uint8), mode="L").save(dst)
        written.append(dst)
    print(f"wrote {len(written)} masks to {args.out}")
    return written


if __name__ == "__main__":
    main()
