"""Synthetic benchmark: determinism, split disjointness, exact masks, coverage, tiers, dataset API."""

import numpy as np
import pytest
import torch

from ilsgan.data import TIERS, SyntheticDataset, open_dataset, render
from ilsgan.data.baselines import evaluate


def test_deterministic_bytes():
    for tier in TIERS:
        a = render(7, 64, tier, "train", seed=3)
        b = render(7, 64, tier, "train", seed=3)
        assert a.image.tobytes() == b.image.tobytes()
        assert a.mask.tobytes() == b.mask.tobytes()
        assert a.image.dtype == np.uint8 and a.image.shape == (64, 64, 3)
        assert a.mask.dtype == bool and a.mask.shape == (64, 64)


def test_splits_seeds_indices_differ():
    base = render(5, 64, "medium", "train", 0)
    for other in (render(5, 64, "medium", "test", 0), render(5, 64, "medium", "train", 1),
                  render(6, 64, "medium", "train", 0), render(5, 64, "hard", "train", 0)):
        assert not np.array_equal(base.image, other.image)
    train = {render(i, 32, "easy", "train").image.tobytes() for i in range(30)}
    test = {render(i, 32, "easy", "test").image.tobytes() for i in range(30)}
    assert len(train) == 30 and len(test) == 30 and not (train & test)


@pytest.mark.parametrize("tier", sorted(TIERS))
def test_mask_exactly_where_fg_painted(tier):
    magenta, green = (255, 0, 255), (0, 255, 0)
    for i in range(10):
        ref = render(i, 64, tier, "test")
        s = render(i, 64, tier, "test", fg_colour=magenta, bg_colour=green)
        assert np.array_equal(s.mask, ref.mask)
        is_fg = (s.image == np.array(magenta, np.uint8)).all(-1)
        is_bg = (s.image == np.array(green, np.uint8)).all(-1)
        assert np.array_equal(is_fg, s.mask) and np.array_equal(is_bg, ~s.mask)
        # the real image is exactly the composite of the two layers
        assert np.array_equal(ref.image, np.where(ref.mask[..., None], ref.fg, ref.bg))
        # known fg over the real bg: bg pixels untouched
        k = render(i, 64, tier, "test", fg_colour=magenta)
        assert np.array_equal(k.image[~k.mask], ref.image[~ref.mask])


@pytest.mark.parametrize("tier", sorted(TIERS))
def test_coverage_and_border_cut(tier):
    masks = [render(i, 64, tier, "test").mask for i in range(80)]
    cov = np.array([m.mean() for m in masks])
    lo, hi = TIERS[tier].coverage
    assert cov.min() >= lo - 0.04 and cov.max() <= hi + 0.01  # holes remove a little
    assert cov.max() - cov.min() > 0.3  # varied sizes
    touches = [m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any() for m in masks]
    assert 0.2 < np.mean(touches) < 1.0  # some objects cut by the border, not all
    centres = np.array([np.argwhere(m).mean(0) for m in masks]) / 64
    assert np.abs(centres - 0.5).max() > 0.2  # off-centre objects


def test_resolution_independent_scene():
    for i in range(5):
        a = render(i, 64, "medium").mask
        b = render(i, 128, "medium").mask
        b64 = b.reshape(64, 2, 64, 2).mean((1, 3)) > 0.5
        assert (a & b64).sum() / (a | b64).sum() > 0.85


def test_tiers_get_harder_and_medium_below_0_6():
    res = {t: evaluate(((s.image, s.mask) for s in (render(i, 64, t, "test") for i in range(60))))
           for t in ("easy", "medium", "hard")}
    best = {t: max(r["iou"] for r in res[t].values()) for t in res}
    assert best["easy"] > best["medium"] > best["hard"]
    assert best["medium"] < 0.6


def test_dataset_api():
    ds = open_dataset("synthetic:easy", 32, split="test", seed=2, length=10)
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == 10
    x = ds[3]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32)
    assert torch.equal(x, torch.from_numpy(render(3, 32, "easy", "test", 2).image).permute(2, 0, 1))
    assert ds.num_skipped == 0 and "easy" in ds.description
    assert len(open_dataset("synthetic", 16)) == 50000
    img, m = SyntheticDataset(16, "hard", with_masks=True, length=2)[1]
    assert m.shape == (1, 16, 16) and m.dtype == torch.bool
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch.shape == (4, 3, 32, 32)
    with pytest.raises(IndexError):
        ds[10]
    with pytest.raises(ValueError, match="tier"):
        open_dataset("synthetic:extreme", 32)
