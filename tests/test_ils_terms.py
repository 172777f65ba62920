"""ils_terms / mask_terms: fast backends vs ref (float64), gradients, gate, validation, compile."""

import pytest
import torch

from conftest import bf16_randn, bf16_vs_ref64, require_backend
from ilsgan.ops import BackendUnavailableError
from ilsgan.ops._ils_terms import MASK_SPEC, SPEC, ils_terms, mask_terms

FAST = ("cpu", "cuda", "triton")
DISTS = ("laplace", "gaussian")


def _inputs(N, C, H, W, device, dtype=torch.float64, seed=0, scale=1.2):
    g = torch.Generator().manual_seed(seed)
    f = (torch.rand(N, C, H, W, generator=g, dtype=torch.float64) * 2 - 1) * scale
    b = (torch.rand(N, C, H, W, generator=g, dtype=torch.float64) * 2 - 1) * scale
    m = torch.rand(N, 1, H, W, generator=g, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype) for t in (f, b, m)]


def _perms(N, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(N, generator=g).to(device), torch.randperm(N, generator=g).to(device)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("shape", [(4, 3, 8, 8), (1, 3, 5, 7), (3, 2, 1, 9), (5, 3, 7, 3)])
def test_parity_and_grads_float64(backend, dist, shape):
    device = require_backend(SPEC, backend)
    f, b, m = _inputs(*shape, device)
    with torch.no_grad():
        # gate boundary values, exact mask 0/1, and equal f/b (u = 0)
        f.view(-1)[:4] = torch.tensor([1.0, -1.0, 0.999, -1.001])
        b.view(-1)[:4] = torch.tensor([-1.0, 1.0, 1.5, 0.25])
        m.view(-1)[:2] = torch.tensor([0.0, 1.0])
    for t in (f, b, m):
        t.requires_grad_()
    p1, p2 = _perms(shape[0], device)
    want = ils_terms(f, b, m, p1, p2, dist, impl="ref")
    got = ils_terms(f, b, m, p1, p2, dist, impl=backend)
    assert got.shape == (shape[0], 4) and got.dtype == torch.float64
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    w = torch.randn(shape[0], 4, dtype=torch.float64, device=device)
    gw = torch.autograd.grad((want * w).sum(), (f, b, m))
    gg = torch.autograd.grad((got * w).sum(), (f, b, m))
    for a, r in zip(gg, gw):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dist", DISTS)
def test_gradcheck(backend, dist):
    device = require_backend(SPEC, backend)
    f, b, m = _inputs(3, 2, 3, 4, device, scale=0.9)  # inside the gate, away from kinks
    p1, p2 = torch.tensor([2, 0, 1], device=device), torch.tensor([1, 2, 0], device=device)
    inputs = [t.requires_grad_() for t in (f, b, m)]
    fast = backend == "triton" and device.type == "cpu"  # the interpreter is slow: fast-mode check
    assert torch.autograd.gradcheck(lambda f, b, m: ils_terms(f, b, m, p1, p2, dist, impl=backend), inputs, fast_mode=fast)


@pytest.mark.parametrize("backend", FAST)
def test_gate_blocks_saturated_pixels(backend):
    device = require_backend(SPEC, backend)
    f, b, m = _inputs(2, 1, 2, 2, device)
    with torch.no_grad():
        f.fill_(1.0)
        b.fill_(-1.0)
    f.requires_grad_()
    b.requires_grad_()
    p = torch.tensor([1, 0], device=device)
    gf, gb = torch.autograd.grad(ils_terms(f, b, m, p, p, impl=backend).sum(), (f, b))
    assert (gf == 0).all() and (gb == 0).all()


@pytest.mark.parametrize("backend", FAST)
def test_mask_terms(backend):
    device = require_backend(MASK_SPEC, backend)
    for shape in [(4, 1, 6, 7), (1, 1, 1, 3), (2, 1, 9, 5)]:
        _, _, m = _inputs(shape[0], 1, shape[2], shape[3], device)
        with torch.no_grad():
            m.view(-1)[:3] = torch.tensor([0.0, 1.0, 0.5])
        m.requires_grad_()
        want = mask_terms(m, impl="ref")
        got = mask_terms(m, impl=backend)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        w = torch.randn(shape[0], 2, dtype=torch.float64, device=device)
        (g1,) = torch.autograd.grad((got * w).sum(), m)
        (g2,) = torch.autograd.grad((want * w).sum(), m)
        torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)
    m = torch.rand(2, 1, 3, 3, dtype=torch.float64, device=device) * 0.4 + 0.05
    fast = backend == "triton" and device.type == "cpu"
    assert torch.autograd.gradcheck(lambda m: mask_terms(m, impl=backend), (m.requires_grad_(),), fast_mode=fast)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.bfloat16])
def test_low_precision(backend, dtype):
    device = require_backend(SPEC, backend)
    f, b, m = _inputs(4, 3, 8, 9, device, dtype)
    p1, p2 = _perms(4, device)
    got = ils_terms(f, b, m, p1, p2, impl=backend)
    assert got.dtype == torch.float32
    want = ils_terms(f.double(), b.double(), m.double(), p1, p2, impl="ref")
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)  # fp32 math on the same values
    got = mask_terms(m, impl=backend)
    torch.testing.assert_close(got.double(), mask_terms(m.double(), impl="ref"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dist", DISTS)
def test_bfloat16_cpu_vs_ref(dist):
    """cpu kernels on bfloat16 against ref in float64 on the same values. The terms come back in
    float32, summed in float32: within float32 rounding of the float64 sums over 3x33x31 elements
    (bfloat16 sums would be off by ~1e-2). Gradients (bfloat16) at bf16 tolerance; odd sizes, a
    non-contiguous f, values across the gradient gate at |v| = 1."""
    require_backend(SPEC, "cpu")
    N, C, H, W = 3, 3, 33, 31
    f = bf16_randn(N, C, H, W, seed=1, scale=0.8, noncontig=True)
    b = bf16_randn(N, C, H, W, seed=2, scale=0.8)
    m = torch.rand(N, 1, H, W, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    p1, p2 = torch.tensor([2, 0, 1]), torch.tensor([1, 2, 0])
    w = torch.randn(N, 4, generator=torch.Generator().manual_seed(4))
    sums = dict(rtol=2e-6, atol=1e-7)
    bf16_vs_ref64(lambda f, b, m, impl: (ils_terms(f, b, m, p1, p2, dist, impl=impl), mask_terms(m, impl=impl)),
                  dict(f=f, b=b, m=m), (w, torch.ones(N, 2)), f"ils_terms bf16 {dist}", ("terms", "mask_terms"),
                  out_dtype=torch.float32, tol=dict(terms=sums, mask_terms=sums))


@pytest.mark.parametrize("backend", FAST)
def test_deterministic(backend):
    """Bitwise the same on every run (no atomics); on cpu whatever the thread count (one thread
    reduces one sample)."""
    device = require_backend(SPEC, backend)
    f, b, m = _inputs(4, 3, 16, 16, device, torch.float32)
    for t in (f, b, m):
        t.requires_grad_()
    p1, p2 = _perms(4, device)
    threads = (1, 2) if backend == "cpu" else (torch.get_num_threads(),) * 2
    runs = []
    before = torch.get_num_threads()
    try:
        for n in threads:
            torch.set_num_threads(n)
            v = ils_terms(f, b, m, p1, p2, impl=backend)
            w = mask_terms(m, impl=backend)
            runs.append((v, w) + torch.autograd.grad(v.sum() + w.sum(), (f, b, m)))
    finally:
        torch.set_num_threads(before)
    for a, c in zip(*runs):
        assert torch.equal(a, c)


def test_validation():
    f, b, m = _inputs(3, 3, 4, 4, "cpu")
    p = torch.tensor([2, 0, 1])
    with pytest.raises(ValueError, match="perm1"):
        ils_terms(f, b, m, torch.tensor([0, 0, 1]), p, impl="ref")
    with pytest.raises(ValueError, match="perm2"):
        ils_terms(f, b, m, p, torch.tensor([0, 1]), impl="ref")
    with pytest.raises(TypeError, match="perm1"):
        ils_terms(f, b, m, p.double(), p, impl="ref")
    with pytest.raises(ValueError, match="distribution"):
        ils_terms(f, b, m, p, p, distribution="cauchy", impl="ref")
    with pytest.raises(ValueError, match="m must"):
        ils_terms(f, b, m[:, :, :3], p, p, impl="ref")
    with pytest.raises(ValueError, match="b must"):
        ils_terms(f, b[:2], m, p, p, impl="ref")
    ils_terms(f, b, m, torch.tensor([0, 0, 1]), p, impl="ref", validate_perms=False)  # the caller vouches
    with pytest.raises(TypeError, match="m must"):
        mask_terms(m.long())
    with pytest.raises(ValueError, match="m must"):
        mask_terms(m[0])
    meta = torch.device("meta")  # a second device on any machine
    with pytest.raises(ValueError, match="perm1 is on meta"):
        ils_terms(f, b, m, p.to(meta), p, impl="ref")
    with pytest.raises(ValueError, match="m is on meta"):
        ils_terms(f, b, m.to(meta), p, p, impl="ref")
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="perm1 is on"):
            ils_terms(f, b, m, p.cuda(), p, impl="ref")
        with pytest.raises(ValueError, match="m is on"):
            ils_terms(f, b, m.cuda(), p, p, impl="ref")


def test_backend_unavailable():
    f, b, m = _inputs(2, 3, 4, 4, "cpu")
    p = torch.tensor([1, 0])
    with pytest.raises(BackendUnavailableError, match="cuda"):
        ils_terms(f, b, m, p, p, impl="cuda")
    with pytest.raises(BackendUnavailableError, match="cuda"):
        mask_terms(m, impl="cuda")


def test_compile_fullgraph_cpu():
    require_backend(SPEC, "cpu")
    f, b, m = _inputs(3, 3, 5, 6, "cpu", torch.float32)
    for t in (f, b, m):
        t.requires_grad_()
    p1, p2 = torch.tensor([2, 0, 1]), torch.tensor([1, 2, 0])

    def fn(f, b, m, p1, p2):
        t = ils_terms(f, b, m, p1, p2, impl="cpu")
        return (t[:, 1] - t[:, 0] + t[:, 3] - t[:, 2]).mean() + mask_terms(m, impl="cpu").sum()

    cf = torch.compile(fn, fullgraph=True, backend="aot_eager")
    v = cf(f, b, m, p1, p2)
    torch.testing.assert_close(v, fn(f, b, m, p1, p2))
    for a, w in zip(torch.autograd.grad(v, (f, b, m)), torch.autograd.grad(fn(f, b, m, p1, p2), (f, b, m))):
        torch.testing.assert_close(a, w)
