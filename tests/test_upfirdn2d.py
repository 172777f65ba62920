"""upfirdn2d and its helpers: ref against a from-the-definition oracle, every fast backend against
ref (float64, random grid), gradients of first and second order, helpers, dtypes, layouts,
validation, backend selection and torch.compile."""

import random

import numpy as np
import pytest
import torch

from conftest import bf16_randn, bf16_vs_ref64, require_backend

from ilsgan.ops import BackendUnavailableError
from ilsgan.ops._upfirdn2d import SPEC, downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

FAST = ["cpu", "cuda", "triton"]


# ------------------------------------------------------------------------------------------------
# Oracle straight from the definition (zero insertion, pad/crop, FIR, decimation, gain), numpy.


def oracle(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1.0):
    x = x.detach().double().cpu().numpy()
    upx, upy = (up, up) if isinstance(up, int) else up
    downx, downy = (down, down) if isinstance(down, int) else down
    if isinstance(padding, int):
        padding = [padding, padding]
    if len(padding) == 2:
        padding = [padding[0], padding[0], padding[1], padding[1]]
    px0, px1, py0, py1 = padding
    if f is None:
        f2 = np.ones((1, 1))
    else:
        fn = f.detach().double().cpu().numpy()
        f2 = np.outer(fn, fn) if fn.ndim == 1 else fn
    f2 = f2 * gain
    if not flip_filter:
        f2 = f2[::-1, ::-1]
    n, c, h, w = x.shape
    ch, cw = h * upy + py0 + py1, w * upx + px0 + px1
    canvas = np.zeros((n, c, ch, cw))
    for j in range(ch):
        u = j - py0
        if u < 0 or u % upy or u // upy >= h:
            continue
        for i in range(cw):
            v = i - px0
            if v < 0 or v % upx or v // upx >= w:
                continue
            canvas[:, :, j, i] = x[:, :, u // upy, v // upx]
    fh, fw = f2.shape
    oh, ow = (ch - fh + downy) // downy, (cw - fw + downx) // downx
    y = np.zeros((n, c, oh, ow))
    for oy in range(oh):
        for ox in range(ow):
            win = canvas[:, :, oy * downy: oy * downy + fh, ox * downx: ox * downx + fw]
            y[:, :, oy, ox] = (win * f2).sum(axis=(2, 3))
    return torch.from_numpy(y)


def random_config(rng: random.Random, small=False):
    """One random upfirdn2d configuration (kwargs and input size) with an output >= 1x1."""
    while True:
        upx, upy = rng.choice([1, 2, 4]), rng.choice([1, 2, 4])
        downx, downy = rng.choice([1, 2, 4]), rng.choice([1, 2, 4])
        kind = rng.choice(["sep", "2d", "2d", "none"])
        if kind == "sep":
            taps = rng.randint(1, 12)
            f = torch.randn(taps, dtype=torch.float32)
        elif kind == "2d":
            f = torch.randn(rng.randint(1, 7), rng.randint(1, 7), dtype=torch.float32)
        else:
            f = None
        pad = [rng.randint(-3, 5) for _ in range(4)]
        h, w = rng.randint(1, 6 if small else 9), rng.randint(1, 6 if small else 9)
        fw = 1 if f is None else f.shape[-1]
        fh = 1 if f is None else f.shape[0]
        oh = (h * upy + pad[2] + pad[3] - fh + downy) // downy
        ow = (w * upx + pad[0] + pad[1] - fw + downx) // downx
        if oh >= 1 and ow >= 1:
            kw = dict(up=(upx, upy), down=(downx, downy), padding=pad, flip_filter=rng.random() < 0.5,
                      gain=rng.choice([1.0, 1.0, 0.5, 3.0, -2.0]))
            return (rng.randint(1, 2), rng.randint(1, 3), h, w), f, kw


# ------------------------------------------------------------------------------------------------
# ref vs the oracle


@pytest.mark.parametrize("seed", range(30))
def test_ref_matches_oracle(seed):
    rng = random.Random(seed)
    shape, f, kw = random_config(rng)
    torch.manual_seed(seed)
    x = torch.randn(shape, dtype=torch.float64)
    y = upfirdn2d(x, f, impl="ref", **kw)
    torch.testing.assert_close(y, oracle(x, f, **kw), rtol=1e-10, atol=1e-12)


def test_ref_int_padding_and_scalars():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    f = torch.randn(3, 4)
    for kw in [dict(up=2, padding=1), dict(down=2, padding=[1, 2]), dict(up=(1, 2), down=(2, 1), padding=[0, 1, 2, 3])]:
        torch.testing.assert_close(upfirdn2d(x, f, impl="ref", **kw), oracle(x, f, **kw), rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Helpers vs the NVlabs formulas


def test_setup_filter():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    f = setup_filter([1, 3, 3, 1], separable=True, gain=4)
    torch.testing.assert_close(f, torch.tensor([1.0, 3, 3, 1]) / 8 * 2)
    f = setup_filter([1] * 8)  # >= 8 taps: separable by default
    assert f.shape == (8,)
    torch.testing.assert_close(setup_filter([[1, 2], [3, 4]], flip_filter=True), torch.tensor([[4.0, 3], [2, 1]]) / 10)
    assert setup_filter(None).shape == (1, 1)
    assert setup_filter(2.0, normalize=False).item() == 4.0  # [2] -> outer product, as NVlabs


@pytest.mark.parametrize("impl", ["ref"] + FAST)
@pytest.mark.parametrize("sep", [False, True])
def test_helpers_formulas(impl, sep):
    device = torch.device("cpu") if impl == "ref" else require_backend(SPEC, impl)
    torch.manual_seed(1)
    x = torch.randn(1, 2, 5, 6, dtype=torch.float64, device=device)
    f = setup_filter([1, 3, 3, 1], separable=sep, device=device)
    fw = fh = 4
    y = upsample2d(x, f, impl=impl)
    assert y.shape == (1, 2, 10, 12)
    exp = oracle(x, f, up=2, padding=[(fw + 1) // 2, (fw - 2) // 2, (fh + 1) // 2, (fh - 2) // 2], gain=4)
    torch.testing.assert_close(y.cpu(), exp, rtol=1e-10, atol=1e-12)
    y = upsample2d(x, f, up=(2, 1), padding=[1, 0, 0, 2], gain=0.5, impl=impl)
    exp = oracle(x, f, up=(2, 1), padding=[1 + 2, 0 + 1, 0 + 2, 2 + 1], gain=0.5 * 2)
    torch.testing.assert_close(y.cpu(), exp, rtol=1e-10, atol=1e-12)
    y = downsample2d(x, f, impl=impl)
    assert y.shape == (1, 2, 2, 3)
    exp = oracle(x, f, down=2, padding=[(fw - 1) // 2, (fw - 2) // 2, (fh - 1) // 2, (fh - 2) // 2])
    torch.testing.assert_close(y.cpu(), exp, rtol=1e-10, atol=1e-12)
    y = filter2d(x, f, padding=[1, 2, 0, 1], flip_filter=True, gain=2, impl=impl)
    exp = oracle(x, f, padding=[1 + 2, 2 + 1, 0 + 2, 1 + 1], flip_filter=True, gain=2)
    torch.testing.assert_close(y.cpu(), exp, rtol=1e-10, atol=1e-12)
    assert filter2d(x, f, impl=impl).shape == x.shape
    # DC is kept by upsample2d / downsample2d / filter2d away from the borders.
    ones = torch.ones(1, 1, 8, 8, dtype=torch.float64, device=device)
    for y in (upsample2d(ones, f, impl=impl), downsample2d(ones, f, impl=impl), filter2d(ones, f, impl=impl)):
        torch.testing.assert_close(y[..., 2:-2, 2:-2].cpu(), torch.ones_like(y[..., 2:-2, 2:-2]).cpu())


def test_separable_equals_outer_product():
    torch.manual_seed(2)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    f1 = torch.randn(5)
    for kw in [dict(up=2, padding=[2, 1, 3, 0]), dict(down=(2, 4), padding=2, gain=3.0, flip_filter=True)]:
        a = upfirdn2d(x, f1, impl="ref", **kw)
        b = upfirdn2d(x, torch.outer(f1, f1), impl="ref", **kw)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Fast backends vs ref


@pytest.mark.parametrize("backend", FAST)
def test_parity_random_grid(backend):
    device = require_backend(SPEC, backend)
    n = 12 if backend == "triton" else 40
    for seed in range(n):
        rng = random.Random(1000 + seed)
        shape, f, kw = random_config(rng, small=backend == "triton")
        torch.manual_seed(seed)
        x = torch.randn(shape, dtype=torch.float64, device=device)
        if f is not None:
            f = f.to(device)
        y = upfirdn2d(x, f, impl=backend, **kw)
        r = upfirdn2d(x, f, impl="ref", **kw)
        assert y.shape == r.shape, (seed, kw)
        torch.testing.assert_close(y, r, rtol=1e-10, atol=1e-10, msg=lambda m: f"seed {seed} {kw} f={None if f is None else tuple(f.shape)}: {m}")


HOT = [
    dict(up=2, padding=[2, 1, 2, 1]),  # upsample2d with a 4x4 filter
    dict(down=2, padding=[1, 1, 1, 1]),  # downsample2d with a 4x4 filter
    dict(padding=[2, 1, 2, 1]),  # filter2d
    dict(padding=[3, 2, 3, 2], gain=4.0),  # filter2d after a transposed conv (pad 1)
]


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("sep", [False, True])
def test_parity_hot_cases(backend, sep):
    device = require_backend(SPEC, backend)
    f = setup_filter([1, 3, 3, 1], separable=sep, device=device)
    torch.manual_seed(3)
    for kw in HOT:
        for flip in (False, True):
            for hw in ((8, 8), (7, 5)):
                x = torch.randn(2, 3, *hw, dtype=torch.float64, device=device)
                y = upfirdn2d(x, f, impl=backend, flip_filter=flip, **kw)
                torch.testing.assert_close(y, upfirdn2d(x, f, impl="ref", flip_filter=flip, **kw), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", FAST)
def test_parity_separable_no_resampling(backend):
    """up = down = 1 with a separable filter (the cpu backend's whole-plane path): every tap count,
    1-D and rank-1 2-D filters, crops and pads on each side, planes from 1x1 up."""
    device = require_backend(SPEC, backend)
    rng = random.Random(7)
    sizes = [(1, 1), (1, 5), (4, 1), (3, 7), (17, 17)] if backend != "triton" else [(1, 1), (3, 7), (5, 4)]
    for taps in (1, 2, 3, 4, 5, 12):
        u, v = torch.randn(taps), torch.randn(taps)
        for f in (u, torch.outer(u, v)):
            for h, w in sizes:
                for _ in range(3):
                    pad = [rng.randint(-2, taps + 2) for _ in range(4)]
                    if h + pad[2] + pad[3] < taps or w + pad[0] + pad[1] < taps:
                        continue
                    kw = dict(padding=pad, flip_filter=rng.random() < 0.5, gain=rng.choice([1.0, -2.5]))
                    x = torch.randn(2, 3, h, w, dtype=torch.float64, device=device)
                    y = upfirdn2d(x, f.to(device), impl=backend, **kw)
                    torch.testing.assert_close(y, oracle(x, f, **kw).to(device), rtol=1e-10, atol=1e-10,
                                               msg=lambda m: f"taps {taps} f{tuple(f.shape)} {h}x{w} {kw}: {m}")


@pytest.mark.parametrize("backend", FAST)
def test_parity_nonseparable_and_asymmetric_filters(backend):
    device = require_backend(SPEC, backend)
    torch.manual_seed(4)
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64, device=device)
    for f in (torch.randn(4, 4), torch.randn(3, 5), torch.randn(1, 6), torch.randn(12)):
        f = f.to(device)
        for kw in (dict(up=(2, 4), padding=[3, -1, 2, 0]), dict(down=(4, 2), padding=[-1, 6, 5, 6]),
                   dict(up=2, down=2, padding=[4, 4, 4, 4], flip_filter=True, gain=0.3)):
            y = upfirdn2d(x, f, impl=backend, **kw)
            torch.testing.assert_close(y, upfirdn2d(x, f, impl="ref", **kw), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", FAST)
def test_layouts(backend):
    device = require_backend(SPEC, backend)
    torch.manual_seed(5)
    f = setup_filter([1, 3, 3, 1], device=device)
    x = torch.randn(2, 4, 6, 5, dtype=torch.float64, device=device)
    xcl = x.contiguous(memory_format=torch.channels_last)
    for kw in (dict(up=2, padding=[2, 1, 2, 1]), dict(down=2, padding=1)):
        r = upfirdn2d(x, f, impl="ref", **kw)
        y = upfirdn2d(xcl, f, impl=backend, **kw)
        assert y.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(y, r, rtol=1e-10, atol=1e-10)
        # non-contiguous views: a transposed and a sliced tensor
        xt = x.transpose(2, 3).contiguous().transpose(2, 3)
        torch.testing.assert_close(upfirdn2d(xt, f, impl=backend, **kw), r, rtol=1e-10, atol=1e-10)
        big = torch.randn(2, 8, 12, 10, dtype=torch.float64, device=device)
        xs = big[:, ::2, ::2, ::2]
        torch.testing.assert_close(upfirdn2d(xs, f, impl=backend, **kw), upfirdn2d(xs, f, impl="ref", **kw),
                                   rtol=1e-10, atol=1e-10)
        yc = upfirdn2d(x, f, impl=backend, **kw)
        assert yc.is_contiguous()


@pytest.mark.parametrize("backend", FAST)
def test_float16_and_bfloat16(backend):
    device = require_backend(SPEC, backend)
    torch.manual_seed(6)
    f = setup_filter([1, 3, 3, 1], device=device)
    x = torch.randn(2, 3, 8, 8, device=device)
    dtypes = [torch.float16] + ([torch.bfloat16] if device.type == "cuda" or backend == "cpu" else [])
    for kw in (dict(up=2, padding=[2, 1, 2, 1]), dict(down=2, padding=1), dict(padding=2, gain=2.0)):
        r32 = upfirdn2d(x, f, impl=backend, **kw)
        torch.testing.assert_close(r32, upfirdn2d(x, f, impl="ref", **kw), rtol=1e-5, atol=1e-5)
        for dt in dtypes:
            y = upfirdn2d(x.to(dt), f, impl=backend, **kw)
            assert y.dtype == dt
            torch.testing.assert_close(y.float(), r32, rtol=0, atol=2e-2 if dt == torch.bfloat16 else 4e-3)



def test_bfloat16_cpu_vs_ref():
    """cpu kernel on bfloat16 (float32 math) against ref in float64 on the same values, forward and
    gradient (itself an upfirdn2d), odd sizes, non-contiguous input, separable and 2-D filters."""
    require_backend(SPEC, "cpu")
    f1 = setup_filter([1, 3, 3, 1], separable=True)
    f2 = torch.outer(f1, torch.tensor([1.0, 2.0, 1.0]) / 4).contiguous()  # non-square 2-D
    x = bf16_randn(3, 5, 9, 7, seed=1, noncontig=True)
    for f, kw in ((f1, dict(up=2, padding=[2, 1, 2, 1])), (f1, dict(down=2, padding=1)),
                  (f2, dict(padding=[1, 2, 2, 1], gain=2.0)), (f1, dict(up=(1, 2), down=(2, 1), padding=1))):
        dy = bf16_randn(*upfirdn2d(x.float(), f, impl="ref", **kw).shape, seed=2)
        bf16_vs_ref64(lambda x, impl: upfirdn2d(x, f, impl=impl, **kw), dict(x=x), (dy,), f"upfirdn2d bf16 {kw}",
                      ("y",))

# ------------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("impl", ["ref"] + FAST)
def test_gradcheck(impl):
    device = torch.device("cpu") if impl == "ref" else require_backend(SPEC, impl)
    torch.manual_seed(7)
    configs = [
        (torch.randn(4, 4), dict(up=2, padding=[2, 1, 2, 1])),
        (torch.randn(4), dict(down=2, padding=[1, 1, 1, 1], flip_filter=True, gain=2.0)),
        (torch.randn(3, 2), dict(up=(1, 2), down=(2, 1), padding=[1, -1, 0, 2])),
    ]
    fast = impl == "triton" and device.type == "cpu"  # the interpreter: one op call ~0.1 s
    for f, kw in configs:
        f = f.to(device)
        x = torch.randn(1, 2, 5, 4, dtype=torch.float64, device=device, requires_grad=True)
        fn = lambda t: upfirdn2d(t, f, impl=impl, **kw)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x,), fast_mode=fast)
        assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=fast)


@pytest.mark.parametrize("backend", FAST)
def test_grad_matches_ref(backend):
    device = require_backend(SPEC, backend)
    torch.manual_seed(8)
    for seed in range(4):
        shape, f, kw = random_config(random.Random(50 + seed), small=True)
        f = None if f is None else f.to(device)
        x = torch.randn(shape, dtype=torch.float64, device=device, requires_grad=True)
        outs = []
        g = None
        for impl in (backend, "ref"):
            y = upfirdn2d(x, f, impl=impl, **kw)
            if g is None:
                g = torch.randn(y.shape, dtype=y.dtype, device=device, requires_grad=True)
            (dx,) = torch.autograd.grad(y, x, g, create_graph=True)
            (dg,) = torch.autograd.grad((dx * dx).sum(), g)  # through the backward op
            outs.append((dx, dg))
        torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-10, atol=1e-10)


# ------------------------------------------------------------------------------------------------
# Validation and backend selection


def test_validation_errors():
    x = torch.randn(1, 2, 4, 4)
    f = torch.ones(3, 3)
    with pytest.raises(ValueError, match="x must be 4-D"):
        upfirdn2d(torch.randn(2, 4, 4), f, impl="ref")
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        upfirdn2d([1.0], f)
    with pytest.raises(TypeError, match="x must be a floating"):
        upfirdn2d(torch.ones(1, 1, 4, 4, dtype=torch.int32), f)
    with pytest.raises(ValueError, match="f must be 1-D"):
        upfirdn2d(x, torch.ones(1, 3, 3))
    with pytest.raises(TypeError, match="f must be float32"):
        upfirdn2d(x, torch.ones(3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="f must not require grad"):
        upfirdn2d(x, torch.ones(3, 3, requires_grad=True))
    with pytest.raises(ValueError, match="f must not be empty"):
        upfirdn2d(x, torch.ones(0))
    with pytest.raises(TypeError, match="f must be a torch.Tensor"):
        upfirdn2d(x, [1.0, 2.0])
    with pytest.raises(ValueError, match="up must be >= 1"):
        upfirdn2d(x, f, up=0)
    with pytest.raises(ValueError, match="down must be >= 1"):
        upfirdn2d(x, f, down=(1, 0))
    with pytest.raises(TypeError, match="up must be an int"):
        upfirdn2d(x, f, up=1.5)
    with pytest.raises(TypeError, match="padding must be"):
        upfirdn2d(x, f, padding=[1, 2, 3])
    with pytest.raises(ValueError, match="output would be"):
        upfirdn2d(x, f, padding=-2)
    with pytest.raises(ValueError, match="output would be"):
        upfirdn2d(x, torch.ones(7, 7))
    with pytest.raises(TypeError, match="gain must be a number"):
        upfirdn2d(x, f, gain="2")
    with pytest.raises(TypeError, match="flip_filter must be a bool"):
        upfirdn2d(x, f, flip_filter=None)
    with pytest.raises(ValueError, match="impl must be one of"):
        upfirdn2d(x, f, impl="fast")
    with pytest.raises(ValueError, match="padding must be|f must not require grad"):
        filter2d(x, torch.ones(3, 3, requires_grad=True))
    with pytest.raises(ValueError, match="up must be >= 1"):
        upsample2d(x, f, up=0)
    with pytest.raises(ValueError, match="down must be >= 1"):
        downsample2d(x, f, down=-1)


def test_device_mismatch():
    x = torch.randn(1, 1, 4, 4)
    f = torch.ones(3, 3, device="meta")
    with pytest.raises(ValueError, match="f is on"):
        upfirdn2d(x, f)


def test_forced_unavailable_backend():
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(BackendUnavailableError, match="cuda"):
        upfirdn2d(x, torch.ones(3, 3), impl="cuda")


def test_strict_mode_fallback(monkeypatch):
    from ilsgan.ops import _dispatch

    x = torch.randn(1, 1, 4, 4)
    # an upfirdn2d without fast backends: auto falls back to ref
    monkeypatch.setitem(_dispatch._REGISTRY, "upfirdn2d", _dispatch.OpSpec("upfirdn2d", ("ref",)))
    with pytest.raises(BackendUnavailableError, match="strict"):
        upfirdn2d(x, torch.ones(3, 3), strict=True)


def test_compile_smoke():
    require_backend(SPEC, "cpu")
    f = setup_filter([1, 3, 3, 1])

    def fn(t):
        t = upfirdn2d(t, f, up=(2, 1), padding=[2, 1, 0, 1], flip_filter=True, gain=2.0, impl="cpu")
        return downsample2d(upsample2d(t, f, impl="cpu"), f, impl="cpu").sum()

    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    cfn = torch.compile(fn, fullgraph=True, backend="aot_eager")
    y = cfn(x)
    (g,) = torch.autograd.grad(y, x)
    x2 = x.detach().requires_grad_()
    (g2,) = torch.autograd.grad(fn(x2), x2)
    torch.testing.assert_close(y, fn(x))
    torch.testing.assert_close(g, g2)


def test_package_exports_any_order():
    import ilsgan.ops as ops

    x = torch.randn(1, 1, 4, 4)
    f = setup_filter([1, 3, 3, 1])
    for name in ("upsample2d", "downsample2d", "filter2d", "setup_filter", "upfirdn2d"):
        assert callable(getattr(ops, name))
    torch.testing.assert_close(ops.upfirdn2d(x, f, padding=2, impl="ref"), upfirdn2d(x, f, padding=2, impl="ref"))


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_opcheck(backend):
    device = require_backend(SPEC, backend)
    from ilsgan.ops._upfirdn2d import _upfirdn2d_op

    f = setup_filter([1, 3, 3, 1], device=device)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, device=device, requires_grad=True)
    for args in ((x, f, [2, 2], [1, 1], [2, 1, 2, 1], False, 4.0, backend),
                 (x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(), f, [1, 1], [2, 2],
                  [1, 1, 1, 1], True, 1.0, backend)):
        torch.library.opcheck(_upfirdn2d_op, args)
