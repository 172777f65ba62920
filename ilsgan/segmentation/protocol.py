"""The "train on generated, test on real" segmentation protocol of the paper (from DRC): a UNet trained
only on generated (image, mask) pairs is scored on real images with ground-truth masks.

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
collapsed masks (coverage < 1% or > 99%), and (:func:`colour_agreement`) how
well they agree with a 2-means colour segmentation of the same images. The last one tells, without
any real label, whether the masks follow the objects G draws: when the UNet's score on real images
is low but this agreement is high, the gap is in the transfer from generated to real images.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from ..data.baselines import kmeans
from ..metrics.segmentation import SegmentationMeter
from .unet import UNet

__all__ = [
    "ProtocolConfig", "departs_from_paper", "colour_augment", "strong_augment", "generate_pairs", "direct_stats",
    "colour_agreement",
    "train_unet", "pseudo_labels", "self_train",
    "predict_logits", "predict_masks", "evaluate_model", "save_unet", "load_unet", "open_test_set",
    "run_protocol", "sample_images",
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
    # What departs from the paper's protocol (each off by default = the paper). ``augment="strong"``
    # adds to the colour transforms a horizontal flip, a random zoom/shift (targets follow), blur and
    # pixel noise: the generator's images are smoother and cleaner than real ones, and a UNet that
    # has only seen them reads texture and noise as "object". ``self_train`` rounds of pseudo-labelling
    # the unlabeled real *training* images (see :func:`self_train`). ``pair_shift`` > 0 draws the pairs
    # from the perturbed composition the discriminator was trained on (foreground layer and mask moved
    # by up to ``pair_shift`` of the width, background still): objects then sit at as many places in
    # the pairs as the discriminator accepted, not only where G_ema draws them unshifted.
    augment: str = "colour"
    pair_shift: float = 0.0
    self_train: int = 0
    self_train_images: int = 2000
    self_train_confidence: float = 0.9

    def __post_init__(self):
        # Checked here, once, so that a bad value fails before minutes of generation and training.
        if self.augment not in ("colour", "strong"):
            raise ValueError(f"augment (--unet-augment) must be 'colour' or 'strong', got {self.augment!r}")
        if not 0 <= self.pair_shift <= 1:
            raise ValueError(f"pair_shift (--pair-shift) must be in [0, 1], got {self.pair_shift}")
        if self.self_train < 0:
            raise ValueError(f"self_train (--self-train) must be >= 0, got {self.self_train}")
        if not 0.5 <= self.self_train_confidence < 1:
            raise ValueError(f"self_train_confidence (--self-train-confidence) must be in [0.5, 1), "
                             f"got {self.self_train_confidence}")
        if self.unet_resolution < 16 or self.unet_resolution % 16:
            raise ValueError(f"unet_resolution (--unet-resolution) must be divisible by 16, "
                             f"got {self.unet_resolution}")


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
def generate_pairs(G, n: int, batch: int = 32, device="cpu", seed: int = 0, with_stats: bool = True,
                   shift: float = 0.0):
    """``n`` pairs from a layered generator: images uint8 ``[n,3,R,R]``, masks bool ``[n,1,R,R]``
    (generator mask > 0.5), and (``with_stats``) the direct-protocol statistics (:func:`direct_stats`).

    ``shift`` > 0: each pair is a perturbed composite, as in training (foreground and mask moved by
    ``round(u * shift * R)`` pixels, ``u ~ U[-1, 1]^2``, background still), with its moved mask;
    0 = the plain composite (the paper)."""
    if n < 1:
        raise ValueError(f"generate_pairs: n (--pairs) must be >= 1, got {n}")
    if not 0 <= shift <= 1:
        raise ValueError(f"generate_pairs: shift (--pair-shift) must be in [0, 1], got {shift}")
    from ..losses.gan import random_shift
    from ..ops import composite
    g = torch.Generator().manual_seed(seed)
    imgs, masks = [], []
    inter = union = 0.0
    cov = []
    for i in _progress(range(0, n, batch), desc="generating pairs", total=math.ceil(n / batch)):
        k = min(batch, n - i)
        z = torch.randn(k, G.z_dim, generator=g).to(device)
        out = G(z, truncation_psi=1.0, noise_mode="const", return_layers=True)
        if shift > 0:
            offsets = random_shift(k, out["fg"].shape[-1], shift, "cpu", generator=g).to(device)
            x, m = composite(out["fg"], out["bg"], out["mask"], shift=offsets)
            x, m = x.float(), m.float()
        else:
            x, m = out["composite"].float(), out["mask"].float()
        hard = m > 0.5
        imgs.append(_to_uint8(x).cpu())
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


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] as uint8 (clipped, rounded): the inverse of :func:`_to_unit`."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def _in_chunks(fn, t: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """``fn`` over ``t`` in chunks along the batch, concatenated: 10k pairs at 128 px would not fit
    as floats at once."""
    return torch.cat([fn(t[i:i + chunk]) for i in range(0, t.shape[0], chunk)])


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


def strong_augment(x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, p: float = 0.5):
    """The extra transforms of ``augment="strong"`` on a batch ``x`` float ``[B,3,H,W]`` in [-1, 1] and
    its targets ``y`` int64 ``[B,H,W]`` (-1 = ignore), each applied per sample: a horizontal flip (p=0.5);
    with probability ``p`` a zoom into a random window of 70-100% of the side (bilinear for images,
    nearest for targets; the window stays inside the image, so no padding is invented); with
    probability ``p`` a Gaussian blur (sigma U(0.3, 1.2) px) and with probability ``p`` pixel noise
    (std U(0, 0.1)). Returns ``(x, y)``."""
    b, _, h, w = x.shape
    dev = x.device

    def rnd(*shape):
        return torch.rand(*shape, generator=generator).to(dev)

    flip = torch.where(rnd(b) < 0.5, -1.0, 1.0)
    side = torch.where(rnd(b) < p, 0.7 + 0.3 * rnd(b), torch.ones(b, device=dev))
    tx, ty = (rnd(b) * 2 - 1) * (1 - side), (rnd(b) * 2 - 1) * (1 - side)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2] = side * flip, tx
    theta[:, 1, 1], theta[:, 1, 2] = side, ty
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="border",
                      align_corners=False)[:, 0].round().long()
    blur = rnd(b) < p
    x = torch.where(blur[:, None, None, None], _blur(x, 0.3 + 0.9 * rnd(b)), x)
    noise_std = torch.where(rnd(b) < p, 0.1 * rnd(b), torch.zeros(b, device=dev))
    x = x + noise_std[:, None, None, None] * torch.randn(x.shape, generator=generator).to(dev)
    return x, y


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of ``x`` [B,C,H,W] with a per-sample ``sigma`` [B] (5 taps, edges replicated)."""
    h, w = x.shape[-2:]
    r = torch.arange(-2, 3, device=x.device, dtype=x.dtype)
    k = torch.exp(-r[None] ** 2 / (2 * sigma[:, None].to(x.dtype) ** 2))
    k = (k / k.sum(1, keepdim=True))[:, :, None, None, None]  # [B,5,1,1,1]
    xp = F.pad(x, (2, 2, 0, 0), mode="replicate")
    x = sum(k[:, i] * xp[..., i:i + w] for i in range(5))
    xp = F.pad(x, (0, 0, 2, 2), mode="replicate")
    return sum(k[:, i] * xp[..., i:i + h, :] for i in range(5))


def _train_batch(x_all, y_all, idx, cfg: ProtocolConfig, g: torch.Generator, device):
    """One augmented batch: images float in [-1, 1], targets int64 [B,H,W] (-1 = ignore)."""
    x = _to_unit(x_all[idx]).to(device)
    y = y_all[idx].to(device)[:, 0].long()
    if cfg.augment_p > 0:
        x = colour_augment(x, cfg.augment_p, generator=g)
    if cfg.augment == "strong":
        x, y = strong_augment(x, y, g, cfg.augment_p)
    return x, y


def _resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images ``[N,3,H,W]`` resized to ``size`` (bilinear, antialiased when shrinking), still uint8."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    return _in_chunks(lambda x: _to_uint8(_resize_images(_to_unit(x), size)), images)


def _resize_targets(targets: torch.Tensor, size: int) -> torch.Tensor:
    """Targets at ``size`` as int8: bool masks by :func:`_resize_masks` (area when shrinking);
    pseudo-labels (-1 = ignored) by nearest neighbour, which keeps -1 a label of its own."""
    if targets.shape[-1] == size and targets.shape[-2] == size:
        return targets.to(torch.int8)
    if targets.dtype == torch.bool:
        return _in_chunks(lambda m: _resize_masks(m, size), targets).to(torch.int8)
    return _in_chunks(lambda t: F.interpolate(t.float(), size=(size, size), mode="nearest"), targets).to(torch.int8)


def train_unet(images: torch.Tensor, masks: torch.Tensor, cfg: ProtocolConfig | None = None, device="cpu",
               val_images: torch.Tensor | None = None, val_masks: torch.Tensor | None = None,
               real_images: torch.Tensor | None = None, real_targets: torch.Tensor | None = None,
               select: str = "val"):
    """Train the UNet on ``images`` uint8 ``[N,3,R,R]`` / ``masks`` bool ``[N,1,R,R]``; if no
    validation set is given, the last ``cfg.val_fraction`` of the pairs is held out.

    ``real_images`` uint8 ``[M,3,R,R]`` with ``real_targets`` int8 ``[M,1,R,R]`` (1 foreground,
    0 background, -1 ignored) add pseudo-labelled real images: each batch is then half generated
    pairs, half real images, and ignored pixels carry no loss. ``select``: ``"val"`` keeps the
    weights with the best foreground IoU on the synthetic validation pairs (the paper's rule);
    ``"last"`` keeps the final weights (the validation IoU is still reported).
    Returns ``(model in eval mode, info dict)``."""
    from tqdm.auto import tqdm

    cfg = cfg or ProtocolConfig()
    if select not in ("val", "last"):
        raise ValueError(f"select must be 'val' or 'last', got {select!r}")
    if val_images is None:
        n_val = max(1, int(round(images.shape[0] * cfg.val_fraction)))
        if images.shape[0] - n_val < 1:
            raise ValueError(f"train_unet: need at least 2 pairs (--pairs), got {images.shape[0]}")
        images, val_images = images[:-n_val], images[-n_val:]
        masks, val_masks = masks[:-n_val], masks[-n_val:]
    if (real_images is None) != (real_targets is None):
        raise ValueError("train_unet: real_images and real_targets go together")
    torch.manual_seed(cfg.seed)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    model = UNet(base=cfg.unet_base).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    milestone = max(1, int(round(cfg.unet_iters * cfg.decay_at)))
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[milestone], gamma=cfg.decay)
    val_every = cfg.val_every or max(1, cfg.unet_iters // 20)
    x_all, y_all = _resize_uint8(images, cfg.unet_resolution), _resize_targets(masks, cfg.unet_resolution)
    n = x_all.shape[0]
    bs = min(cfg.batch, n)
    if real_images is not None:
        xr_all = _resize_uint8(real_images, cfg.unet_resolution)
        yr_all = _resize_targets(real_targets, cfg.unet_resolution)
        bs_real = min(cfg.batch // 2, xr_all.shape[0])
        bs = min(cfg.batch - bs_real, n)
    best, best_state, best_iter, history = -1.0, None, 0, []
    bar = tqdm(range(1, cfg.unet_iters + 1), desc="training UNet", leave=False)
    model.train()
    for it in bar:
        x, y = _train_batch(x_all, y_all, torch.randint(0, n, (bs,), generator=g), cfg, g, device)
        if real_images is not None:
            idx = torch.randint(0, xr_all.shape[0], (bs_real,), generator=g)
            xr, yr = _train_batch(xr_all, yr_all, idx, cfg, g, device)
            x, y = torch.cat([x, xr]), torch.cat([y, yr])
        loss = F.cross_entropy(model(x), y, ignore_index=-1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if it % val_every == 0 or it == cfg.unet_iters:
            val = _evaluate_tensors(model, val_images, val_masks, cfg.unet_resolution, cfg.batch)
            model.train()
            history.append({"iter": it, "loss": loss.item(), "val_iou": val["iou"]})
            bar.set_postfix(loss=f"{loss.item():.3f}", val_iou=f"{val['iou']:.3f}")
            if val["iou"] > best or select == "last":
                best, best_state = val["iou"], copy.deepcopy(model.state_dict())
                best_iter = it
    model.load_state_dict(best_state)
    model.eval()
    info = {"val_iou": best, "best_iter": best_iter, "history": history, "n_train": int(n),
            "n_val": int(val_images.shape[0]), "config": asdict(cfg)}
    return model, info


@torch.no_grad()
def pseudo_labels(model, images: torch.Tensor, unet_resolution: int, confidence: float, batch: int = 64):
    """Targets for self-training from a UNet's predictions on unlabeled ``images`` uint8 ``[M,3,R,R]``:
    int8 ``[M,1,R,R]``, 1/0 where the foreground probability (averaged over the image and its
    horizontal mirror) is above ``confidence`` / below ``1 - confidence``, -1 (ignored) elsewhere."""
    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence (--self-train-confidence) must be in [0.5, 1), got {confidence}")
    was = model.training
    model.eval()
    out = []
    for i in range(0, images.shape[0], batch):
        x = images[i:i + batch]
        p = predict_logits(model, x, unet_resolution).softmax(1)[:, 1:]
        p = 0.5 * (p + predict_logits(model, x.flip(-1), unet_resolution).softmax(1)[:, 1:].flip(-1))
        t = torch.full(p.shape, -1, dtype=torch.int8)
        t[p.cpu() > confidence] = 1
        t[p.cpu() < 1 - confidence] = 0
        out.append(t)
    model.train(was)
    return torch.cat(out)


def self_train(model, images: torch.Tensor, masks: torch.Tensor, real_images: torch.Tensor,
               cfg: ProtocolConfig, device="cpu"):
    """Self-training on unlabeled real images (no real label is read): ``cfg.self_train`` rounds of
    (1) :func:`pseudo_labels` of ``real_images`` by the current UNet, confident pixels only;
    (2) a new UNet trained on the generated pairs (``images``, ``masks``) and the pseudo-labelled real
    images together (:func:`train_unet`, final weights kept: the synthetic validation pairs no longer
    measure what this round optimizes). Returns ``(model, [info per round])``; each info has
    ``labelled_fraction`` (share of real pixels confident enough to be a target) and
    ``foreground_fraction`` (share of those that are foreground)."""
    rounds = []
    for r in range(cfg.self_train):
        targets = pseudo_labels(model, real_images, cfg.unet_resolution, cfg.self_train_confidence, cfg.batch)
        labelled = targets >= 0
        model, info = train_unet(images, masks, replace(cfg, seed=cfg.seed + 101 * (r + 1)), device,
                                 real_images=real_images, real_targets=targets, select="last")
        info.update(round=r + 1, labelled_fraction=float(labelled.float().mean()),
                    foreground_fraction=float((targets == 1).sum() / labelled.sum().clamp(min=1)))
        rounds.append(info)
    return model, rounds


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
# Real images

def sample_images(dataset, n: int, seed: int = 0) -> torch.Tensor:
    """``min(n, len(dataset))`` images of ``dataset`` (items: uint8 ``[3,R,R]`` or ``(image, ...)``),
    drawn without replacement with ``seed``, as one uint8 tensor ``[n,3,R,R]``."""
    if n < 1:
        raise ValueError(f"sample_images: n (--self-train-images) must be >= 1, got {n}")
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    items = [dataset[i] for i in idx]
    return torch.stack([it[0] if isinstance(it, (tuple, list)) else it for it in items])


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


def departs_from_paper(cfg: ProtocolConfig) -> bool:
    """Whether ``cfg`` trains the segmenter differently from the paper (augmentation or pair shift)."""
    return cfg.augment != "colour" or cfg.pair_shift > 0


def run_protocol(G, test_dataset=None, cfg: ProtocolConfig | None = None, device="cpu",
                 protocol: str = "unet", real_images: torch.Tensor | None = None) -> dict:
    """Full protocol on a layered generator. ``protocol``: "unet", "direct" or "both".

    ``real_images`` uint8 ``[M,3,R,R]``: unlabeled real *training* images, needed when
    ``cfg.self_train > 0``; they also give the realism score (``fidelity``, see
    :func:`ilsgan.metrics.real_vs_generated_accuracy`), which compares them with generated composites.

    The paper's protocol always runs: ``direct`` (statistics of the generator's own masks),
    ``unet_info``, ``model`` and ``metrics`` (on ``test_dataset``) come from a UNet trained on plain
    pairs with the colour augmentation, whatever ``cfg.augment`` and ``cfg.pair_shift`` say. When they
    depart from it (:func:`departs_from_paper`), a second UNet is trained with them: ``transfer_info``,
    ``transfer_model``, ``transfer_metrics``. Self-training starts from that second UNet when there is
    one (else from the paper's): ``self_train_info`` (one dict per round), ``self_trained_model``,
    ``self_trained_metrics``. ``fidelity`` when ``real_images`` are given."""
    if protocol not in ("unet", "direct", "both"):
        raise ValueError(f"protocol (--protocol) must be unet, direct or both, got {protocol!r}")
    cfg = cfg or ProtocolConfig()
    if cfg.self_train and protocol != "direct" and real_images is None:
        raise ValueError("self-training (--self-train > 0) needs the unlabeled real training images")
    images, masks, stats = generate_pairs(G, cfg.pairs, cfg.gen_batch, device, cfg.seed)
    res = {"direct": stats}
    if real_images is not None:
        from ..metrics.realism import real_vs_generated_accuracy
        real_images = _resize_uint8(real_images, images.shape[-1])
        res["fidelity"] = real_vs_generated_accuracy(real_images, images, seed=cfg.seed, device=device)
    if protocol not in ("unet", "both"):
        return res

    def test(model):
        return evaluate_model(model, test_dataset, cfg.unet_resolution, cfg.batch, device)

    model, info = train_unet(images, masks, replace(cfg, augment="colour", pair_shift=0.0), device)
    res.update(unet_info=info, model=model)
    res["direct"]["unet_val_iou"] = info["val_iou"]
    if test_dataset is not None:
        res["metrics"] = test(model)
    if departs_from_paper(cfg):
        if cfg.pair_shift > 0:
            images, masks = generate_pairs(G, cfg.pairs, cfg.gen_batch, device, cfg.seed, with_stats=False,
                                           shift=cfg.pair_shift)
        model, info = train_unet(images, masks, cfg, device)
        res.update(transfer_info=info, transfer_model=model)
        if test_dataset is not None:
            res["transfer_metrics"] = test(model)
    if cfg.self_train:
        st_model, rounds = self_train(model, images, masks, real_images, cfg, device)
        res.update(self_train_info=rounds, self_trained_model=st_model)
        if test_dataset is not None:
            res["self_trained_metrics"] = test(st_model)
    return res
