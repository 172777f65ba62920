"""composite: fast backends vs ref (float64), gradients, shifts, layouts, validation, compile."""

import pytest
import torch

from conftest import bf16_randn, bf16_vs_ref64, require_backend
from ilsgan.ops import BackendUnavailableError
from ilsgan.ops._composite import SPEC, composite, shift_ref

FAST = ("cpu", "cuda", "triton")


def _inputs(N, C, H, W, device, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(N, C, H, W, generator=g, dtype=torch.float64)
    b = torch.randn(N, C, H, W, generator=g, dtype=torch.float64)
    m = torch.rand(N, 1, H, W, generator=g, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype) for t in (f, b, m)]


def _shifts(N, H, W, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.stack([torch.randint(-W, W + 1, (N,), generator=g), torch.randint(-H, H + 1, (N,), generator=g)], 1)
    return s.to(device)


def test_shift_semantics():
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    s = torch.tensor([[1, 0]])  # tx=+1: content moves right
    torch.testing.assert_close(shift_ref(x, s)[0, 0, 0], torch.tensor([0.0, 0.0, 1.0, 2.0]))
    s = torch.tensor([[0, -1]])  # ty=-1: content moves up
    torch.testing.assert_close(shift_ref(x, s)[0, 0, 0], torch.tensor([4.0, 5.0, 6.0, 7.0]))
    f, b, m = _inputs(1, 3, 3, 4, "cpu")
    out, ms = composite(f, b, m, torch.tensor([[0, 5]]), impl="ref")  # all shifted out
    assert (ms == 0).all()
    torch.testing.assert_close(out, b)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (1, 3, 5, 7), (3, 1, 1, 9), (2, 4, 9, 1)])
@pytest.mark.parametrize("shifted", [False, True])
def test_parity_float64(backend, shape, shifted):
    device = require_backend(SPEC, backend)
    N, C, H, W = shape
    f, b, m = _inputs(*shape, device)
    with torch.no_grad():
        m.view(-1)[:2] = torch.tensor([0.0, 1.0])  # exact 0 and 1
    shift = _shifts(N, H, W, device) if shifted else None
    want = composite(f, b, m, shift, impl="ref")
    got = composite(f, b, m, shift, impl=backend)
    assert isinstance(got, tuple) and isinstance(want, tuple) and len(got) == len(want) == 2
    for a, w in zip(got, want):
        torch.testing.assert_close(a, w, rtol=1e-10, atol=1e-12)
    if not shifted:
        assert got[1] is m and want[1] is m  # the mask the composite used: m itself


@pytest.mark.parametrize("backend", FAST)
def test_extreme_shifts(backend):
    device = require_backend(SPEC, backend)
    N, C, H, W = 8, 3, 5, 6
    f, b, m = _inputs(N, C, H, W, device)
    shift = torch.tensor(
        [[0, 0], [W - 1, 0], [-(W - 1), 0], [0, H - 1], [0, -(H - 1)], [W, 0], [0, -H - 7], [-10**6, 10**6]],
        device=device,
    )
    for x in (f, b, m):
        x.requires_grad_()
    want = composite(f, b, m, shift, impl="ref")
    got = composite(f, b, m, shift, impl=backend)
    for a, w in zip(got, want):
        torch.testing.assert_close(a, w, rtol=1e-10, atol=1e-12)
    go = torch.randn_like(f)
    gm = torch.randn_like(m)
    gw = torch.autograd.grad((want[0] * go).sum() + (want[1] * gm).sum(), (f, b, m))
    gg = torch.autograd.grad((got[0] * go).sum() + (got[1] * gm).sum(), (f, b, m))
    for a, w in zip(gg, gw):
        torch.testing.assert_close(a, w, rtol=1e-10, atol=1e-12)
    assert (got[1][5:] == 0).all()


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("shifted", [False, True])
def test_gradcheck(backend, shifted):
    device = require_backend(SPEC, backend)
    f, b, m = _inputs(2, 2, 4, 5, device)
    shift = torch.tensor([[1, -2], [-3, 1]], device=device) if shifted else None
    inputs = [t.requires_grad_() for t in (f, b, m)]
    fn = (lambda f, b, m: composite(f, b, m, shift, impl=backend)) if shifted else (  # noqa: E731
        lambda f, b, m: composite(f, b, m, impl=backend)[0])
    fast = backend == "triton" and device.type == "cpu"  # the interpreter is slow: fast-mode checks
    assert torch.autograd.gradcheck(fn, inputs, fast_mode=fast)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=fast)


@pytest.mark.parametrize("backend", FAST)
def test_grad_only_through_mask_output(backend):
    device = require_backend(SPEC, backend)
    f, b, m = _inputs(2, 3, 4, 4, device)
    m.requires_grad_()
    shift = torch.tensor([[1, 1], [0, -1]], device=device)
    (g,) = torch.autograd.grad(composite(f, b, m, shift, impl=backend)[1].sum(), m)
    (w,) = torch.autograd.grad(composite(f, b, m, shift, impl="ref")[1].sum(), m)
    torch.testing.assert_close(g, w)


@pytest.mark.parametrize("backend", FAST)
def test_layouts(backend):
    device = require_backend(SPEC, backend)
    f, b, m = _inputs(2, 3, 6, 7, device)
    fc, bc = f.contiguous(memory_format=torch.channels_last), b.contiguous(memory_format=torch.channels_last)
    out, _ = composite(fc, bc, m, impl=backend)
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, composite(f, b, m, impl="ref")[0], rtol=1e-10, atol=1e-12)
    big = torch.randn(2, 3, 6, 14, dtype=torch.float64, device=device)
    fn = big[..., ::2]  # non-contiguous
    out = composite(fn, b, m, torch.tensor([[1, 0], [0, 1]], device=device), impl=backend)[0]
    torch.testing.assert_close(out, composite(fn, b, m, torch.tensor([[1, 0], [0, 1]], device=device), impl="ref")[0])


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.bfloat16])
def test_low_precision(backend, dtype):
    device = require_backend(SPEC, backend)
    f, b, m = _inputs(2, 3, 6, 7, device, dtype)
    shift = torch.tensor([[1, 2], [-1, 0]], device=device)
    got = composite(f, b, m, shift, impl=backend)
    want = composite(f.float(), b.float(), m.float(), shift, impl="ref")
    assert got[0].dtype == dtype
    tol = 1e-2 if dtype != torch.float32 else 1e-6
    torch.testing.assert_close(got[0].float(), want[0], rtol=tol, atol=tol)
    torch.testing.assert_close(got[1].float(), want[1], rtol=tol, atol=tol)


@pytest.mark.parametrize("shifted", [False, True])
def test_bfloat16_cpu_vs_ref(shifted):
    """cpu kernels on bfloat16 (float32 math) against ref in float64 on the same values: forward and
    gradients, odd sizes, a non-contiguous f."""
    require_backend(SPEC, "cpu")
    N, C, H, W = 3, 3, 7, 5
    f = bf16_randn(N, C, H, W, seed=1, noncontig=True)
    b = bf16_randn(N, C, H, W, seed=2)
    m = torch.rand(N, 1, H, W, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    go, gms = bf16_randn(N, C, H, W, seed=4), bf16_randn(N, 1, H, W, seed=5)
    shift = torch.tensor([[1, -2], [0, 3], [-4, 1]]) if shifted else None
    bf16_vs_ref64(lambda f, b, m, impl: composite(f, b, m, shift, impl=impl), dict(f=f, b=b, m=m),
                  (go, gms if shifted else None), f"composite bf16 shifted={shifted}", ("out", "ms"))


def test_validation():
    f, b, m = _inputs(2, 3, 4, 4, "cpu")
    with pytest.raises(ValueError, match="b must"):
        composite(f, b[:1], m, impl="ref")
    with pytest.raises(ValueError, match="m must"):
        composite(f, b, m.expand(2, 3, 4, 4), impl="ref")
    with pytest.raises(ValueError, match="f must"):
        composite(f[0], b, m, impl="ref")
    with pytest.raises(TypeError, match="shift"):
        composite(f, b, m, torch.zeros(2, 2), impl="ref")
    with pytest.raises(ValueError, match="shift"):
        composite(f, b, m, torch.zeros(2, 3, dtype=torch.long), impl="ref")
    with pytest.raises(TypeError, match="m has dtype"):
        composite(f, b, m.float(), impl="ref")
    with pytest.raises(ValueError, match="impl"):
        composite(f, b, m, impl="fast")
    meta = torch.device("meta")  # a second device on any machine
    with pytest.raises(ValueError, match="b is on meta"):
        composite(f, b.to(meta), m, impl="ref")
    with pytest.raises(ValueError, match="shift is on meta"):
        composite(f, b, m, torch.zeros(2, 2, dtype=torch.long, device=meta), impl="ref")
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="b is on"):
            composite(f, b.cuda(), m, impl="ref")
        with pytest.raises(ValueError, match="shift is on"):
            composite(f, b, m, torch.zeros(2, 2, dtype=torch.long, device="cuda"), impl="ref")


def test_backend_unavailable():
    f, b, m = _inputs(1, 3, 4, 4, "cpu")
    with pytest.raises(BackendUnavailableError, match="cuda"):
        composite(f, b, m, impl="cuda")


def test_compile_fullgraph_cpu():
    require_backend(SPEC, "cpu")
    f, b, m = _inputs(2, 3, 5, 6, "cpu", torch.float32)
    shift = torch.tensor([[1, -1], [2, 0]])
    for t in (f, b, m):
        t.requires_grad_()

    def fn(f, b, m, s):
        out, ms = composite(f, b, m, s, impl="cpu")
        return out.sum() + ms.sum() + composite(f, b, m, impl="cpu")[0].sum()

    cf = torch.compile(fn, fullgraph=True, backend="aot_eager")
    v = cf(f, b, m, shift)
    torch.testing.assert_close(v, fn(f, b, m, shift))
    g1 = torch.autograd.grad(v, (f, b, m))
    g2 = torch.autograd.grad(fn(f, b, m, shift), (f, b, m))
    for a, w in zip(g1, g2):
        torch.testing.assert_close(a, w)
