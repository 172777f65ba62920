"""The "train on generated, test on real" segmentation protocol (ILSGAN.md section 8).

1. :func:`generate_pairs` draws N (composite, mask > 0.5) pairs from a layered generator (G_ema, psi=1,
   noise_mode="const"); first 90% train, last 10% synthetic validation.
2. :func:`train_unet` trains the 2-class :class:`~ilsgan.segmentation.unet.UNet` with cross-entropy,
   Adam lr 1e-3, batch 64, 6000 iterations, lr x0.2 at 2/3 of the run (4000 of 6000), colour
   augmentation (brightness, contrast, luma flip, hue, saturation, each p=0.5), and keeps the weights
   with the best per-image foreground IoU on the synthetic validation pairs (no real labels used).
3. :func:`evaluate_model` tests the kept weights once on a real image+mask dataset.

Resolution: the UNet runs at ``unet_resolution`` (64 by default). When the data are larger (the
release's 128 px variant) images are downsampled for the UNet and its logits are upsampled (bilinear)
to the data resolution before comparison; ``unet_resolution=128`` runs the UNet natively instead.

The direct protocol (:func:`direct_stats`, no UNet) looks at the generator's own masks on its own
images: how binary they are (soft IoU between m and m > 0.5), their coverage, the fraction of
collapsed masks (coverage < 1% or > 99%; ILSGAN.md section 10), and (:func:`colour_agreement`) how
well they agree with a 2-means colour segmentation of the same images. The last one tells, without
any real label, whether the masks follow the objects G draws: when the UNet's score on real images
is low but this agreement is high, the gap is in the transfer from generated to real images.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.baselines import kmeans
from ..metrics.segmentation import SegmentationMeter
from .unet import UNet

__all__ = [
    "ProtocolConfig", "colour_augment", "generate_pairs", "direct_stats", "colour_agreement", "train_unet",
    "predict_logits", "predict_masks", "evaluate_model", "save_unet", "load_unet", "open_test_set",
    "run_protocol",
]


@dataclass
class ProtocolConfig:
    pairs: int = 10_000          # generated pairs (50k in the long protocol)
    val_fraction: float = 0.1    # last 10% = synthetic validation
    unet_iters: int = 6000
    batch: int = 64
    lr: float = 1e-3
    decay_at: float = 4000 / 6000  # fraction of unet_iters where lr is multiplied by 0.2
    decay: float = 0.2
    val_every: int | None = None   # default: unet_iters // 20
    unet_resolution: int = 64
    unet_base: int = 64
    augment_p: float = 0.5
    gen_batch: int = 32
    seed: int = 0


# ----------------------------------------------------------------------------------------------
# Colour augmentation (StyleGAN2-ADA style colour transforms, applied per sample with probability p)

def _rot3(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation matrices [B,3,3] about the unit ``axis`` [3] by angles ``theta`` [B]."""
    x, y, z = axis.tolist()
    k = torch.tensor([[0, -z, y], [z, 0, -x], [-y, x, 0]], dtype=theta.dtype, device=theta.device)
    vv = torch.outer(axis, axis).to(theta)
    eye = torch.eye(3, dtype=theta.dtype, device=theta.device)
    c, s = theta.cos()[:, None, None], theta.sin()[:, None, None]
    return c * eye + s * k + (1 - c) * vv


def colour_augment(x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None,
                   brightness_std: float = 0.2, contrast_std: float = 0.5, hue_max: float = 1.0,
                   saturation_std: float = 1.0) -> torch.Tensor:
    """Random colour transform of float images ``[B,3,H,W]`` in [-1, 1]: brightness (add N(0, 0.2)),
    contrast (x 2^N(0, 0.5)), luma flip, hue rotation (U(-pi, pi) about the luma axis), saturation
    (x 2^N(0, 1) off the luma axis), each applied to a sample with probability ``p``."""
    b = x.shape[0]
    dev = x.device

    def rnd(*shape):
        return torch.rand(*shape, generator=generator).to(dev)

    def rndn(*shape):
        return torch.randn(*shape, generator=generator).to(dev)

    def on(v, identity):
        return torch.where(rnd(b) < p, v, torch.full_like(v, identity))

    eye = torch.eye(3, device=dev).expand(b, 3, 3)
    v = torch.full((3,), 1 / math.sqrt(3), device=dev)
    vv = torch.outer(v, v)
    m = eye.clone()
    t = torch.zeros(b, 3, device=dev)
    # brightness
    t = t + on(rndn(b) * brightness_std, 0.0)[:, None]
    # contrast
    c = on(torch.exp2(rndn(b) * contrast_std), 1.0)
    m, t = c[:, None, None] * m, c[:, None] * t
    # luma flip
    i = on(torch.floor(rnd(b) * 2), 0.0)
    f = eye - 2 * vv * i[:, None, None]
    m, t = f @ m, (f @ t[..., None])[..., 0]
    # hue rotation
    theta = on((rnd(b) * 2 - 1) * math.pi * hue_max, 0.0)
    r = _rot3(v, theta)
    m, t = r @ m, (r @ t[..., None])[..., 0]
    # saturation
    s = on(torch.exp2(rndn(b) * saturation_std), 1.0)
    sm = vv + (eye - vv) * s[:, None, None]
    m, t = sm @ m, (sm @ t[..., None])[..., 0]
    y = torch.einsum("bij,bjhw->bihw", m, x) + t[:, :, None, None]
    return y


# ----------------------------------------------------------------------------------------------
# Generation

def _progress(it, **kw):
    from tqdm.auto import tqdm

    return tqdm(it, leave=False, **kw)


@torch.no_grad()
def generate_pairs(G, n: int, batch: int = 32, device="cpu", seed: int = 0, with_stats: bool = True):
    """``n`` pairs from a layered generator: images uint8 ``[n,3,R,R]``, masks bool ``[n,1,R,R]``
    (generator mask > 0.5), and (``with_stats``) the direct-protocol statistics (:func:`direct_stats`)."""
    if n < 1:
        raise ValueError(f"generate_pairs: n (--pairs) must be >= 1, got {n}")
    g = torch.Generator().manual_seed(seed)
    imgs, masks = [], []
    inter = union = 0.0
    cov = []
    for i in _progress(range(0, n, batch), desc="generating pairs", total=math.ceil(n / batch)):
        k = min(batch, n - i)
        z = torch.randn(k, G.z_dim, generator=g).to(device)
        out = G(z, truncation_psi=1.0, noise_mode="const", return_layers=True)
        x, m = out["composite"].float(), out["mask"].float()
        hard = m > 0.5
        imgs.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
        masks.append(hard.cpu())
        inter += torch.minimum(m, hard.float()).sum().item()
        union += torch.maximum(m, hard.float()).sum().item()
        cov.append(hard.float().mean((1, 2, 3)).cpu())
    images, masks = torch.cat(imgs), torch.cat(masks)
    if not with_stats:
        return images, masks
    cov = torch.cat(cov).double()
    stats = {
        "soft_iou": float(inter / union) if union > 0 else 1.0,
        "coverage_mean": float(cov.mean()),
        "coverage_std": float(cov.std()) if cov.numel() > 1 else 0.0,
        "collapsed_fraction": float(((cov < 0.01) | (cov > 0.99)).double().mean()),
        **colour_agreement(images, masks),
        "n_pairs": int(n),
    }
    return images, masks, stats


def colour_agreement(images: torch.Tensor, masks: torch.Tensor, max_images: int = 500) -> dict:
    """Agreement of masks with the ``kmeans`` baseline (:mod:`ilsgan.data.baselines`: 2-means on RGB,
    foreground = the cluster less present on the border) on the same images.

    Args:
        images: uint8 ``[N,3,H,W]``; masks: bool ``[N,1,H,W]`` (as :func:`generate_pairs` returns).
        max_images: only the first ``max_images`` pairs are scored (2-means runs per image in numpy).

    Returns ``kmeans_iou`` (per-image foreground IoU, empty/empty = 1) and ``kmeans_swapped_fraction``:
    the fraction of images whose *inverted* mask agrees better with the 2-means foreground, i.e. where
    the mask took what the border rule calls background (for an object/surround swap between layers).
    For scale, the ``kmeans`` baseline against the ground truth of ``synthetic:easy`` scores about 0.76.
    """
    if images.dim() != 4 or images.shape[1] != 3 or images.dtype != torch.uint8:
        raise ValueError(f"colour_agreement: images must be uint8 [N,3,H,W], got {images.dtype} {tuple(images.shape)}")
    if masks.shape != (images.shape[0], 1, *images.shape[2:]):
        raise ValueError(f"colour_agreement: masks must be [N,1,H,W] = {(images.shape[0], 1, *images.shape[2:])}, "
                         f"got {tuple(masks.shape)}")
    if max_images < 1:
        raise ValueError(f"colour_agreement: max_images must be >= 1, got {max_images}")

    m = masks[:max_images]
    km = torch.from_numpy(np.stack([kmeans(img) for img in images[:len(m)].permute(0, 2, 3, 1).numpy()]))

    def per_image_iou(pred: torch.Tensor) -> np.ndarray:
        meter = SegmentationMeter()
        meter.update(pred, km)
        return meter.per_image()["iou"]

    iou = per_image_iou(m)
    return {"kmeans_iou": float(iou.mean()), "kmeans_swapped_fraction": float((per_image_iou(~m) > iou).mean())}


def direct_stats(G, n: int = 1000, batch: int = 32, device="cpu", seed: int = 0) -> dict:
    """Direct protocol (no UNet): statistics of the generator's own masks on its own images."""
    return generate_pairs(G, n, batch, device, seed, with_stats=True)[2]


# ----------------------------------------------------------------------------------------------
# UNet training / prediction

def _to_unit(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()


def _resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=size < x.shape[-1])


def _resize_masks(m: torch.Tensor, size: int) -> torch.Tensor:
    if m.shape[-1] == size and m.shape[-2] == size:
        return m.bool()
    return F.interpolate(m.float(), size=(size, size), mode="area" if size < m.shape[-1] else "nearest") > 0.5


def predict_logits(model, images: torch.Tensor, unet_resolution: int, out_size=None) -> torch.Tensor:
    """Logits ``[N,2,h,w]``: images (uint8 or float in [-1,1]) resized to ``unet_resolution``, UNet,
    logits resized (bilinear) to ``out_size`` (int or (h, w); default: the input size)."""
    dev = next(model.parameters()).device
    x = _to_unit(images.to(dev))
    if out_size is None:
        out_size = tuple(x.shape[-2:])
    elif isinstance(out_size, int):
        out_size = (out_size, out_size)
    logits = model(_resize_images(x, unet_resolution))
    if tuple(logits.shape[-2:]) != tuple(out_size):
        logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
    return logits


@torch.no_grad()
def predict_masks(model, images: torch.Tensor, unet_resolution: int, out_size=None) -> torch.Tensor:
    """Foreground masks bool ``[N,1,h,w]`` (argmax of :func:`predict_logits`)."""
    was = model.training
    model.eval()
    m = predict_logits(model, images, unet_resolution, out_size).argmax(1, keepdim=True).bool()
    model.train(was)
    return m


@torch.no_grad()
def _evaluate_tensors(model, images, masks, unet_resolution, batch) -> dict:
    meter = SegmentationMeter()
    for i in range(0, images.shape[0], batch):
        pred = predict_masks(model, images[i:i + batch], unet_resolution)
        meter.update(pred, masks[i:i + batch])
    return meter.compute()


def train_unet(images: torch.Tensor, masks: torch.Tensor, cfg: ProtocolConfig | None = None, device="cpu",
               val_images: torch.Tensor | None = None, val_masks: torch.Tensor | None = None):
    """Train the UNet on ``images`` uint8 ``[N,3,R,R]`` / ``masks`` bool ``[N,1,R,R]``; if no
    validation set is given, the last ``cfg.val_fraction`` of the pairs is held out.
    Returns ``(model with the best-validation weights, eval mode, info dict)``."""
    from tqdm.auto import tqdm

    cfg = cfg or ProtocolConfig()
    if val_images is None:
        n_val = max(1, int(round(images.shape[0] * cfg.val_fraction)))
        if images.shape[0] - n_val < 1:
            raise ValueError(f"train_unet: need at least 2 pairs (--pairs), got {images.shape[0]}")
        images, val_images = images[:-n_val], images[-n_val:]
        masks, val_masks = masks[:-n_val], masks[-n_val:]
    if cfg.unet_resolution % 16:
        raise ValueError(f"unet_resolution (--unet-resolution) must be divisible by 16, got {cfg.unet_resolution}")
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    model = UNet(base=cfg.unet_base).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    milestone = max(1, int(round(cfg.unet_iters * cfg.decay_at)))
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[milestone], gamma=cfg.decay)
    val_every = cfg.val_every or max(1, cfg.unet_iters // 20)
    # training inputs at the UNet resolution (targets too)
    x_all, y_all = images, masks.bool()
    if images.shape[-1] != cfg.unet_resolution:  # resize in chunks, keep uint8 (10k pairs at 128 px)
        x_all = torch.cat([((_resize_images(_to_unit(images[i:i + 256]), cfg.unet_resolution) + 1) * 127.5)
                           .round().clamp(0, 255).to(torch.uint8) for i in range(0, images.shape[0], 256)])
        y_all = torch.cat([_resize_masks(masks[i:i + 256], cfg.unet_resolution)
                           for i in range(0, masks.shape[0], 256)])
    n = x_all.shape[0]
    best, best_state, best_iter, history = -1.0, None, 0, []
    bar = tqdm(range(1, cfg.unet_iters + 1), desc="training UNet", leave=False)
    model.train()
    for it in bar:
        idx = torch.randint(0, n, (min(cfg.batch, n),), generator=g)
        x = _to_unit(x_all[idx]).to(device)
        y = y_all[idx].to(device)
        if cfg.augment_p > 0:
            x = colour_augment(x, cfg.augment_p, generator=g)
        loss = F.cross_entropy(model(x), y[:, 0].long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if it % val_every == 0 or it == cfg.unet_iters:
            val = _evaluate_tensors(model, val_images, val_masks, cfg.unet_resolution, cfg.batch)
            model.train()
            history.append({"iter": it, "loss": loss.item(), "val_iou": val["iou"]})
            bar.set_postfix(loss=f"{loss.item():.3f}", val_iou=f"{val['iou']:.3f}")
            if val["iou"] > best:
                best, best_state = val["iou"], copy.deepcopy(model.state_dict())
                best_iter = it
    model.load_state_dict(best_state)
    model.eval()
    info = {"val_iou": best, "best_iter": best_iter, "history": history, "n_train": int(n),
            "n_val": int(val_images.shape[0]), "config": asdict(cfg)}
    return model, info


def save_unet(model, path, unet_resolution: int, extra: dict | None = None) -> None:
    """Save a trained UNet for ``python -m ilsgan.segment``."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({"format": "ilsgan-unet-v1", "unet": dict(model.config), "unet_resolution": int(unet_resolution),
                "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "extra": extra or {}}, path)


def load_unet(path, device="cpu"):
    """``(model in eval mode, unet_resolution)`` from a file written by :func:`save_unet`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--model {path}: file not found (write one with python -m ilsgan.evaluate --save-unet)")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling problem means "not our file"
        raise ValueError(f"--model {path}: not a UNet saved by `python -m ilsgan.evaluate --save-unet` "
                         f"({type(e).__name__})") from e
    if not isinstance(d, dict) or d.get("format") != "ilsgan-unet-v1":
        raise ValueError(f"--model {path}: not a UNet saved by `python -m ilsgan.evaluate --save-unet`")
    model = UNet(**d["unet"])
    model.load_state_dict(d["state_dict"])
    return model.to(device).eval(), int(d["unet_resolution"])


# ----------------------------------------------------------------------------------------------
# Real test set

def open_test_set(images: str, masks: str | None, resolution: int | None):
    """Dataset of (image uint8 [3,R,R], mask bool [1,R,R]) via ``ilsgan.data.open_image_mask_folder``:
    ``images`` and ``masks`` folders (or zips) paired by name, or ``masks=None`` and ``images`` a
    folder holding ``images/`` and ``masks/``. Errors name ``--images`` / ``--masks``."""
    from ..data import DatasetError, open_image_mask_folder

    if not images or not os.path.exists(images):
        raise FileNotFoundError(f"--images {images}: not found (a folder or .zip of images)")
    if masks is not None and not os.path.exists(masks):
        raise FileNotFoundError(f"--masks {masks}: not found (a folder or .zip of 0/255 masks)")
    try:
        return open_image_mask_folder(images, masks, resolution=resolution)
    except DatasetError as e:
        raise DatasetError(f"--images/--masks: {e}") from e


@torch.no_grad()
def evaluate_model(model, dataset, unet_resolution: int, batch: int = 64, device="cpu") -> dict:
    """Metrics of a trained UNet on a dataset of (image uint8 [3,R,R], mask [1,R,R]) pairs (streaming)."""
    from torch.utils.data import DataLoader

    model = model.to(device).eval()
    meter = SegmentationMeter()
    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0)
    for img, mask in _progress(loader, desc="testing on real images", total=len(loader)):
        pred = predict_masks(model, img, unet_resolution, out_size=tuple(mask.shape[-2:]))
        meter.update(pred, mask)
    return meter.compute()


def run_protocol(G, test_dataset=None, cfg: ProtocolConfig | None = None, device="cpu",
                 protocol: str = "unet") -> dict:
    """Full protocol on a layered generator. ``protocol``: "unet", "direct" or "both".
    Returns ``{"metrics": real-test metrics (unet), "direct": stats, "unet_info": ..., "model": UNet}``."""
    if protocol not in ("unet", "direct", "both"):
        raise ValueError(f"protocol (--protocol) must be unet, direct or both, got {protocol!r}")
    cfg = cfg or ProtocolConfig()
    images, masks, stats = generate_pairs(G, cfg.pairs, cfg.gen_batch, device, cfg.seed)
    res = {"direct": stats}
    if protocol in ("unet", "both"):
        model, info = train_unet(images, masks, cfg, device)
        res["unet_info"] = info
        res["model"] = model
        res["direct"]["unet_val_iou"] = info["val_iou"]
        if test_dataset is not None:
            res["metrics"] = evaluate_model(model, test_dataset, cfg.unet_resolution, cfg.batch, device)
    return res
