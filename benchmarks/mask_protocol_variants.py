"""Segmenter variants on one checkpoint, each trained on the same generated pairs and tested on the
same real images: which part of the protocol moves per-image IoU.

    python benchmarks/mask_protocol_variants.py CHECKPOINT "base,sh:pair_shift=0.125,shs:pair_shift=0.125:augment=strong"

Each variant is ``name[:field=value]...`` over :class:`ilsgan.segmentation.ProtocolConfig` fields
(``pair_shift``, ``augment``, ``self_train``, ...), starting from the demo's quick settings (2000 pairs,
300 iterations, a 16-wide UNet at 32 px). Test: 200 images of the built-in tier (``--tier``, default
easy) at the generator's resolution; self-training draws 2000 unlabeled training images. Prints one
line per variant: the UNet's IoU on held-out generated pairs, on the real test images, and after
self-training when asked.
"""

import argparse
import time
from dataclasses import fields, replace

import torch

from ilsgan.checkpoints import load_generator
from ilsgan.data.synthetic import SyntheticDataset
from ilsgan.segmentation import ProtocolConfig, evaluate_model, generate_pairs, sample_images, self_train, train_unet


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("variants")
    p.add_argument("--tier", default="easy")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    G = load_generator(args.checkpoint, which="G_ema")
    R = G.img_resolution
    test = SyntheticDataset(R, args.tier, split="test", length=200, with_masks=True)
    real = sample_images(SyntheticDataset(R, args.tier, split="train", length=2000), 2000)
    base = ProtocolConfig(pairs=2000, unet_iters=300, batch=16, unet_base=16, unet_resolution=32)
    types = {f.name: type(getattr(base, f.name)) for f in fields(base)}
    pairs = {}
    for v in args.variants.split(","):
        name, *kv = v.split(":")
        cfg = replace(base, **{k: types[k](x) for k, x in (s.split("=") for s in kv)})
        if cfg.pair_shift not in pairs:
            pairs[cfg.pair_shift] = generate_pairs(G, cfg.pairs, 50, seed=0, with_stats=False, shift=cfg.pair_shift)
        images, masks = pairs[cfg.pair_shift]
        t0 = time.time()
        model, info = train_unet(images, masks, cfg)
        line = f"{v}: generated-pairs IoU {info['val_iou']:.3f}  test IoU {evaluate_model(model, test, 32)['iou']:.3f}"
        if cfg.self_train:
            model, _ = self_train(model, images, masks, real, cfg)
            line += f"  self-trained {evaluate_model(model, test, 32)['iou']:.3f}"
        print(f"{line}  ({time.time() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
