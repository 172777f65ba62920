"""ILS and mask losses vs a plain-torch transcription of the formulas (the oracle): the CLUB terms of the
ILS loss with its gradient gate at |v| >= 1, L_bin = mean min(m, 1 - m), L_area = relu(area_min - mean m)."""

import pytest
import torch

from conftest import require_backend
from ilsgan.losses import area_loss, binarization_loss, ils_loss, mask_diversity, mask_loss
from ilsgan.ops import composite
from ilsgan.ops._ils_terms import SPEC

BACKENDS = ("ref", "cpu", "cuda", "triton")


# ---- the oracle: the loss formulas written out literally ----------------------------------------
def oracle_ils(f, b, m, sigma, perm1, perm2, gaussian=False):
    f = torch.where(f.abs() >= 1, f.detach(), f)  # gradient gate
    b = torch.where(b.abs() >= 1, b.detach(), b)
    x1, y1 = m * b, m * f
    x2, y2 = (1 - m) * f, (1 - m) * b

    def dist(x, y):
        d = (x - y).abs() if not gaussian else 0.5 * (x - y) ** 2
        return d.reshape(d.shape[0], -1).mean(1)

    def club(x, y, perm):
        return -dist(x, y).mean() + dist(x[perm], y).mean()

    return sigma * (club(x1, y1, perm1) + club(x2, y2, perm2))


def oracle_bin(m):
    return torch.minimum(m, 1 - m).reshape(m.shape[0], -1).mean(1)


def oracle_area(m, area_min=0.25, mirror=False):
    a = m.reshape(m.shape[0], -1).mean(1)
    v = torch.relu(area_min - a)
    if mirror:
        v = v + torch.relu(area_min - (1 - a))
    return v


def _inputs(N, C, H, W, device, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = (torch.randn(N, C, H, W, generator=g, dtype=dtype) * 0.8).to(device).requires_grad_()
    b = (torch.randn(N, C, H, W, generator=g, dtype=dtype) * 0.8).to(device).requires_grad_()
    m = torch.rand(N, 1, H, W, generator=g, dtype=dtype).to(device).requires_grad_()
    return f, b, m


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("gaussian", [False, True])
def test_ils_loss_matches_oracle(backend, gaussian):
    device = require_backend(SPEC, backend) if backend != "ref" else torch.device("cpu")
    f, b, m = _inputs(5, 3, 6, 7, device)
    with torch.no_grad():
        f[0, 0, 0, :3] = torch.tensor([1.0, -1.0, 1.5])  # gate boundary
    p1 = torch.tensor([3, 0, 4, 1, 2], device=device)
    p2 = torch.tensor([1, 2, 3, 4, 0], device=device)
    dist = "gaussian" if gaussian else "laplace"
    got = ils_loss(f, b, m, 0.2, p1, p2, distribution=dist, impl=backend)
    want = oracle_ils(f, b, m, 0.2, p1, p2, gaussian)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    gg = torch.autograd.grad(got, (f, b, m))
    gw = torch.autograd.grad(want, (f, b, m))
    for a, w in zip(gg, gw):
        torch.testing.assert_close(a, w, rtol=1e-10, atol=1e-12)


def test_ils_loss_random_perms_are_permutations():
    f, b, m = _inputs(6, 3, 4, 4, "cpu")
    gen = torch.Generator().manual_seed(3)
    v1 = ils_loss(f, b, m, 1.0, impl="ref", generator=gen)
    gen = torch.Generator().manual_seed(3)
    p1 = torch.randperm(6, generator=gen)
    p2 = torch.randperm(6, generator=gen)
    torch.testing.assert_close(v1, oracle_ils(f, b, m, 1.0, p1, p2))
    # identity permutations: I = 0 exactly
    ident = torch.arange(6)
    assert ils_loss(f, b, m, 1.0, ident, ident, impl="ref").abs().item() < 1e-12


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mirror", [False, True])
def test_mask_losses_match_oracle(backend, mirror):
    device = require_backend(SPEC, backend) if backend != "ref" else torch.device("cpu")
    _, _, m = _inputs(4, 1, 5, 9, device, seed=1)
    with torch.no_grad():
        m[0] = 0.0  # empty mask: area prior active
        m[1, 0, 0, :3] = torch.tensor([0.0, 1.0, 0.5])
    kw = dict(impl=backend)
    torch.testing.assert_close(binarization_loss(m, **kw), oracle_bin(m), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(area_loss(m, 0.3, mirror, **kw), oracle_area(m, 0.3, mirror), rtol=1e-10, atol=1e-12)
    got = mask_loss(m, 2.0, 3.0, 0.25, mirror, reduction="mean", **kw)
    want = (2.0 * oracle_bin(m) + 3.0 * oracle_area(m, 0.25, mirror)).mean()
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    (g1,) = torch.autograd.grad(got, m)
    (g2,) = torch.autograd.grad(want, m)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mask_loss_mirror_bounds_the_unperturbed_mask(backend):
    # The G loss passes the perturbed mask m_T and the layer's own mask m: bin and the minimum act on
    # m_T, the ceiling on m (a zero-filled border must not let a full mask slip under it).
    device = require_backend(SPEC, backend) if backend != "ref" else torch.device("cpu")
    _, _, m = _inputs(4, 1, 6, 7, device, seed=2)
    with torch.no_grad():
        m[0] = 1.0  # full mask: only the ceiling on m is active
        m[1] = 0.0  # empty mask: only the minimum is active
    shift = torch.tensor([[2, -1], [0, 3], [-3, 0], [1, 1]], device=device)
    m_T = composite(m, m, m, shift=shift, impl="ref")[1]
    got = mask_loss(m_T, 2.0, 3.0, 0.25, True, reduction="none", mirror_mask=m, impl=backend)
    a = m.reshape(4, -1).mean(1)
    want = 2.0 * oracle_bin(m_T) + 3.0 * (oracle_area(m_T, 0.25, False) + torch.relu(0.25 - (1 - a)))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # the full mask pays the whole ceiling 3 * 0.25, though its shifted copy covers only 25/42 < 0.75
    assert got[0].item() == pytest.approx(0.75)
    assert mask_loss(m_T, 2.0, 3.0, 0.25, True, impl=backend)[0].item() == 0.0
    (g1,) = torch.autograd.grad(got.sum(), m, retain_graph=True)
    (g2,) = torch.autograd.grad(want.sum(), m)
    torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="mirror_mask"):
        mask_loss(m_T, mirror=True, mirror_mask=m[:, :, :3], impl=backend)


def test_mask_loss_validation():
    m = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="reduction"):
        mask_loss(m, reduction="avg", impl="ref")
    with pytest.raises(TypeError, match="sigma"):
        ils_loss(m.expand(2, 3, 4, 4), m.expand(2, 3, 4, 4), m, "big", impl="ref")


def _oracle_diversity(m, grid):
    # per-cell std over the batch of the cell means, written out with loops over the cells
    n, _, h, w = m.shape
    cells = []
    for i in range(grid):
        for j in range(grid):
            rows = slice(i * h // grid, -(-(i + 1) * h // grid))
            cols = slice(j * w // grid, -(-(j + 1) * w // grid))
            v = m[:, 0, rows, cols].reshape(n, -1).mean(1)
            cells.append(((v - v.mean()).square().mean() + 1e-8).sqrt())
    return torch.stack(cells).mean()


@pytest.mark.parametrize("shape", [(5, 1, 16, 16), (3, 1, 13, 11), (2, 1, 6, 6)])
def test_mask_diversity_matches_oracle_and_gradcheck(shape):
    torch.manual_seed(sum(shape))
    m = torch.rand(shape, dtype=torch.float64).requires_grad_(True)
    grid = min(8, shape[2], shape[3])
    torch.testing.assert_close(mask_diversity(m), _oracle_diversity(m, grid), rtol=1e-10, atol=1e-12)
    mt = torch.rand(shape[0], 1, shape[3], shape[2], dtype=torch.float64).transpose(2, 3)  # non-contiguous
    torch.testing.assert_close(mask_diversity(mt), _oracle_diversity(mt, grid), rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(mask_diversity, (m,))
    assert torch.autograd.gradgradcheck(mask_diversity, (m,))


def test_mask_diversity_reads_layout_not_speckle():
    torch.manual_seed(0)
    same = torch.rand(1, 1, 32, 32).round().expand(8, 1, 32, 32)
    assert mask_diversity(same).item() < 1e-3
    # per-pixel noise averages out in the 8x8 cells; half-images on opposite sides do not
    speckle = torch.rand(8, 1, 32, 32).round()
    halves = torch.zeros(8, 1, 32, 32)
    halves[::2, :, :, :16] = 1
    halves[1::2, :, :, 16:] = 1
    assert mask_diversity(speckle).item() < 0.15
    assert mask_diversity(halves).item() == pytest.approx(0.5, abs=1e-4)
    # its gradient pushes near-identical masks apart (finite although they barely differ)
    near = (0.5 + 0.01 * torch.randn(8, 1, 32, 32)).requires_grad_(True)
    mask_diversity(near).backward()
    assert torch.isfinite(near.grad).all()
    step = near + 0.1 * near.grad
    assert mask_diversity(step).item() > mask_diversity(near).item()


def test_mask_diversity_validation():
    with pytest.raises(ValueError, match="at least 2 samples"):
        mask_diversity(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"m must be a tensor \[N, 1, H, W\]"):
        mask_diversity(torch.rand(4, 3, 8, 8))
