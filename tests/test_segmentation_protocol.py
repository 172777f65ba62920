"""The segmentation protocol on a tiny fake layered generator (seconds)."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from _fake_generator import FakeLayeredGenerator
from ilsgan.segmentation import (ProtocolConfig, UNet, colour_agreement, colour_augment, direct_stats, evaluate_model,
                                 generate_pairs, load_unet, open_test_set, predict_logits, predict_masks, run_protocol,
                                 save_unet, train_unet)

TINY = dict(pairs=24, unet_iters=4, batch=8, unet_base=4, unet_resolution=16, gen_batch=8, val_every=2)


def write_pairs(G, root, n, seed=7):
    images, masks = generate_pairs(G, n, seed=seed, with_stats=False)
    os.makedirs(root / "images", exist_ok=True)
    os.makedirs(root / "masks", exist_ok=True)
    for i in range(n):
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(root / "images" / f"im{i:03d}.png")
        Image.fromarray(masks[i, 0].numpy().astype(np.uint8) * 255).save(root / "masks" / f"im{i:03d}.png")
    return root / "images", root / "masks"


def test_generate_pairs_exact_and_deterministic():
    G = FakeLayeredGenerator(img_resolution=16)
    imgs, masks, stats = generate_pairs(G, 10, batch=4, seed=3)
    assert imgs.shape == (10, 3, 16, 16) and imgs.dtype == torch.uint8
    assert masks.shape == (10, 1, 16, 16) and masks.dtype == torch.bool
    g = torch.Generator().manual_seed(3)
    z = torch.cat([torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g), torch.randn(2, 8, generator=g)])
    out = G(z)
    assert torch.equal(masks, out["mask"] > 0.5)
    assert torch.equal(imgs, ((out["composite"].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
    imgs2, masks2 = generate_pairs(G, 10, batch=4, seed=3, with_stats=False)
    assert torch.equal(imgs, imgs2) and torch.equal(masks, masks2)
    assert 0 < stats["soft_iou"] <= 1 and 0 < stats["coverage_mean"] < 1
    assert stats["collapsed_fraction"] == 0.0


def test_direct_stats_detect_collapse():
    G = FakeLayeredGenerator(img_resolution=16)
    with torch.no_grad():
        G.proj.weight.zero_()
    G.forward_orig = G.forward

    class Collapsed(torch.nn.Module):
        z_dim, img_resolution = 8, 16

        def forward(self, z, **kw):
            out = G.forward_orig(z)
            out["mask"] = torch.zeros_like(out["mask"])
            return out

    s = direct_stats(Collapsed(), n=6, batch=4)
    assert s["collapsed_fraction"] == 1.0 and s["coverage_mean"] == 0.0


def test_colour_agreement_scores_masks_and_swaps():
    # a mid-grey square on a dark frame: 2-means finds the square; the inverted mask is a swap
    imgs = torch.full((5, 3, 12, 12), 20, dtype=torch.uint8)
    imgs[:, :, 3:9, 4:10] = 200
    imgs[:, 0] += torch.arange(5, dtype=torch.uint8)[:, None, None]  # five different images
    truth = torch.zeros(5, 1, 12, 12, dtype=torch.bool)
    truth[:, :, 3:9, 4:10] = True
    s = colour_agreement(imgs, truth)
    assert s == {"kmeans_iou": 1.0, "kmeans_swapped_fraction": 0.0}
    mixed = truth.clone()
    mixed[:2] = ~mixed[:2]  # two of five take the surround
    s = colour_agreement(imgs, mixed)
    assert s["kmeans_swapped_fraction"] == pytest.approx(0.4) and s["kmeans_iou"] == pytest.approx(0.6)
    assert colour_agreement(imgs, mixed, max_images=2)["kmeans_swapped_fraction"] == 1.0
    with pytest.raises(ValueError, match="masks"):
        colour_agreement(imgs, truth[:, :, :6])
    with pytest.raises(ValueError, match="images"):
        colour_agreement(imgs.float(), truth)
    # the fake generator's masks are its discs: they agree with the colour segmentation
    stats = generate_pairs(FakeLayeredGenerator(img_resolution=16), 12, batch=4, seed=0)[2]
    assert stats["kmeans_iou"] > 0.5 and stats["kmeans_swapped_fraction"] < 0.5


def test_colour_augment():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 8) * 2 - 1
    assert torch.equal(colour_augment(x, p=0.0, generator=g), x)
    y = colour_augment(x, p=1.0, generator=torch.Generator().manual_seed(1))
    y2 = colour_augment(x, p=1.0, generator=torch.Generator().manual_seed(1))
    assert y.shape == x.shape and torch.equal(y, y2) and not torch.allclose(y, x)
    # grey images stay grey under hue/saturation/luma flip (only luma-axis operations touch them)
    grey = x[:, :1].expand(-1, 3, -1, -1)
    yg = colour_augment(grey, p=1.0, generator=g)
    assert torch.allclose(yg[:, 0], yg[:, 1], atol=1e-5) and torch.allclose(yg[:, 1], yg[:, 2], atol=1e-5)


def test_unet_shapes_and_validation():
    net = UNet(base=4)
    assert net(torch.zeros(2, 3, 32, 16)).shape == (2, 2, 32, 16)
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.zeros(1, 3, 20, 20))
    full = UNet()
    widths = [full.inc[3].out_channels] + [d[3].out_channels for d in full.downs]
    assert widths == [64, 128, 256, 512, 512]


def test_train_unet_and_release_upsampling_variant(tmp_path):
    G = FakeLayeredGenerator(img_resolution=32)
    imgs, masks = generate_pairs(G, 20, seed=0, with_stats=False)
    cfg = ProtocolConfig(**TINY)  # UNet at 16 px on 32 px data: logits upsampled x2 (release quirk)
    model, info = train_unet(imgs, masks, cfg)
    assert 0 <= info["val_iou"] <= 1 and info["n_val"] == 2 and info["n_train"] == 18
    assert [h["iter"] for h in info["history"]] == [2, 4]
    assert not model.training
    logits = predict_logits(model, imgs[:3], 16)
    assert logits.shape == (3, 2, 32, 32)
    assert predict_masks(model, imgs[:3], 16, out_size=48).shape == (3, 1, 48, 48)
    path = tmp_path / "u.pt"
    save_unet(model, path, 16)
    m2, res = load_unet(str(path))
    assert res == 16
    assert torch.equal(predict_masks(m2, imgs[:3], 16), predict_masks(model, imgs[:3], 16))
    with pytest.raises(FileNotFoundError, match="--model"):
        load_unet(str(tmp_path / "nope.pt"))


def test_run_protocol_on_real_folder(tmp_path):
    G = FakeLayeredGenerator(img_resolution=16)
    images, masks = write_pairs(G, tmp_path, 5)
    ds = open_test_set(str(images), str(masks), 16)
    res = run_protocol(G, ds, ProtocolConfig(**TINY), protocol="both")
    for k in ("iou", "dice", "dataset_iou", "miou", "pixel_acc"):
        assert 0 <= res["metrics"][k] <= 1
    assert res["metrics"]["n_images"] == 5
    assert "unet_val_iou" in res["direct"]
    direct = run_protocol(G, None, ProtocolConfig(**TINY), protocol="direct")
    assert "model" not in direct and direct["direct"]["n_pairs"] == 24
    # a perfect "UNet" scores 1 on the real folder
    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            gt = torch.stack([ds[i][1] for i in range(len(ds))]).float()
            return torch.cat([1 - gt, gt], 1) + self.w
    r = evaluate_model(Oracle(), ds, 16, batch=8)
    assert r["iou"] == 1.0 and r["pixel_acc"] == 1.0


def test_protocol_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--images"):
        open_test_set(str(tmp_path / "x"), str(tmp_path), 16)
    with pytest.raises(FileNotFoundError, match="--masks"):
        open_test_set(str(tmp_path), str(tmp_path / "y"), 16)
    with pytest.raises(ValueError, match="--protocol"):
        run_protocol(FakeLayeredGenerator(), None, protocol="nope")
    with pytest.raises(ValueError, match="--pairs"):
        generate_pairs(FakeLayeredGenerator(), 0)
