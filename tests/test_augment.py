"""Augmentation: identity at p=0, shapes, determinism, transforms, gradients of order 1 and 2, ADA."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from ilsgan.augment import AUGMENT_PRESETS, AdaptiveAugment, AugmentPipe, grid_sample

warnings.filterwarnings("ignore", message=".*falling back to the slow 'ref' backend.*")


def _smooth(n=4, c=3, h=32, w=32, dtype=torch.float32):
    """Low-frequency test images (the resampling filters are near-exact on them)."""
    torch.manual_seed(5)
    small = torch.rand(n, c, h // 8, w // 8, dtype=dtype) * 2 - 1
    return F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False)


def test_p0_is_identity():
    x = torch.randn(4, 3, 16, 16)
    pipe = AugmentPipe("bgc", p=0.0)
    assert pipe(x) is x
    assert float(pipe.p) == 0 and "p" in pipe.state_dict()


@pytest.mark.parametrize("preset", sorted(AUGMENT_PRESETS))
@pytest.mark.parametrize("shape", [(4, 3, 16, 16), (3, 3, 12, 20), (2, 1, 16, 16)])
def test_shapes_and_finite(preset, shape):
    torch.manual_seed(0)
    x = torch.randn(shape)
    y = AugmentPipe(preset, p=1.0)(x)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()


def test_determinism_with_seed():
    x = torch.randn(4, 3, 16, 16)
    pipe = AugmentPipe("bgc", p=0.7)
    torch.manual_seed(123)
    a = pipe(x)
    torch.manual_seed(123)
    b = pipe(x)
    torch.manual_seed(124)
    c = pipe(x)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_xflip_and_untouched_samples():
    x = _smooth(8)
    torch.manual_seed(1)
    y = AugmentPipe("blit", p=1.0, rotate90=0, xint=0)(x)
    flipped = unchanged = 0
    for i in range(len(x)):
        if torch.allclose(y[i], x[i], atol=1e-5):
            unchanged += 1
        else:  # the (asymmetric) sym6 resampling blurs a flipped image very slightly
            assert torch.allclose(y[i], x[i].flip(-1), atol=0.05)
            flipped += 1
    assert flipped > 0 and unchanged > 0


def test_integer_translation_exact_in_interior():
    x = _smooth(4, h=32, w=32)
    torch.manual_seed(2)
    y = AugmentPipe("blit", p=1.0, xflip=0, rotate90=0)(x)
    for i in range(len(x)):
        found = False
        for tx in range(-4, 5):
            for ty in range(-4, 5):
                ref = torch.roll(x[i], shifts=(ty, tx), dims=(1, 2))[:, 6:-6, 6:-6]
                if torch.allclose(y[i, :, 6:-6, 6:-6], ref, atol=1e-4):
                    found = True
        assert found, f"sample {i} is not an integer translation"


def test_brightness_is_a_constant_offset():
    x = torch.randn(4, 3, 8, 8)
    torch.manual_seed(3)
    y = AugmentPipe("color", p=1.0, contrast=0, lumaflip=0, hue=0, saturation=0)(x)
    d = (y - x).flatten(1)
    assert torch.allclose(d, d[:, :1].expand_as(d), atol=1e-5)
    assert (d[:, 0].abs() > 0).all()


def test_hue_rotation_keeps_luma_axis():
    x = torch.randn(4, 3, 8, 8)
    torch.manual_seed(4)
    y = AugmentPipe("color", p=1.0, brightness=0, contrast=0, lumaflip=0, saturation=0)(x)
    torch.testing.assert_close(y.mean(1), x.mean(1), atol=1e-5, rtol=1e-5)  # mean over RGB = luma axis
    torch.testing.assert_close(y.square().sum(1), x.square().sum(1), atol=1e-4, rtol=1e-4)  # a rotation


def test_gradient_flows_to_images():
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    torch.manual_seed(0)
    AugmentPipe("bgc", p=1.0)(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gradgradcheck_tiny():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    pipe = AugmentPipe("bgc", p=1.0)

    def fn(t):
        torch.manual_seed(7)
        return pipe(t)

    assert torch.autograd.gradcheck(fn, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


def test_grid_sample_matches_torch_and_double_backward():
    torch.manual_seed(0)
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, requires_grad=True)
    theta = torch.tensor([[[0.9, 0.2, 0.1], [-0.1, 1.1, -0.05]]], dtype=torch.float64).repeat(2, 1, 1)
    grid = F.affine_grid(theta, [2, 2, 7, 4], align_corners=False)
    torch.testing.assert_close(grid_sample(x, grid), F.grid_sample(x, grid, align_corners=False))
    assert torch.autograd.gradgradcheck(lambda t: grid_sample(t, grid), (x,))
    with pytest.raises(ValueError, match="grid"):
        grid_sample(x, grid.clone().requires_grad_(True))


def test_impl_ref_matches_auto():
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    outs = []
    for impl in ("auto", "ref"):
        torch.manual_seed(9)
        outs.append(AugmentPipe("bgc", p=1.0, impl=impl)(x))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-9, atol=1e-10)


def test_validation():
    with pytest.raises(ValueError, match="preset"):
        AugmentPipe("nope")
    with pytest.raises(ValueError, match="bogus"):
        AugmentPipe("bgc", bogus=1)
    with pytest.raises(ValueError, match="4-D"):
        AugmentPipe("bgc", p=1.0)(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="interval"):
        AdaptiveAugment(AugmentPipe(), interval=0)


def test_adaptive_p_moves_toward_target():
    pipe = AugmentPipe("bgc", p=0.0)
    ada = AdaptiveAugment(pipe, target=0.6, interval=4, speed_kimg=1)
    step = 32 * 4 / 1000
    # D too confident on reals (r_t = 1 > 0.6): p increases every `interval` iterations
    for it in range(8):
        ada.accumulate(torch.ones(32, 1))
        updated = ada.step(32)
        assert updated == ((it + 1) % 4 == 0)
    assert ada.rt == 1.0
    assert float(pipe.p) == pytest.approx(2 * step)
    # r_t = -1 < 0.6: p decreases, floored at 0
    for _ in range(12):
        ada.accumulate(-torch.ones(32, 1))
        ada.step(32)
    assert float(pipe.p) == 0.0
    # mixed signs: r_t = 0.5 < 0.6 -> down; 0.75 -> up
    pipe.p.fill_(0.5)
    for _ in range(4):
        ada.accumulate(torch.tensor([1.0, 1.0, 1.0, -1.0]))
        ada.step(32)
    assert ada.rt == pytest.approx(0.5) and float(pipe.p) == pytest.approx(0.5 - step)
    # state round trip
    state = ada.state_dict()
    pipe2 = AugmentPipe("bgc")
    ada2 = AdaptiveAugment(pipe2, target=0.6, interval=4, speed_kimg=1)
    ada2.load_state_dict(state)
    assert float(pipe2.p) == pytest.approx(float(pipe.p)) and ada2.iteration == ada.iteration
