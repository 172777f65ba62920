"""bias_act: every fast backend against the plain-torch reference (float64), gradients of first and
second order, half precision, validation, dispatch, torch.compile."""

import math

import pytest
import torch

from conftest import bf16_randn, bf16_vs_ref64, require_backend

from ilsgan.ops import BackendUnavailableError, bias_act
from ilsgan.ops import ACTIVATIONS
from ilsgan.ops._bias_act import SPEC

FAST = ("cpu", "cuda", "triton")

# The Triton interpreter (triton 3.6) converts 1-element arrays to loop bounds: numpy warns each time.
pytestmark = pytest.mark.filterwarnings("ignore:Conversion of an array with ndim > 0:DeprecationWarning")
ACTS = sorted(ACTIVATIONS)


def _shape(backend):
    # The Triton interpreter is slow: tiny shapes there.
    return (2, 5, 3, 4) if backend == "triton" else (3, 6, 5, 7)


def _make(shape, layout, device, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    if layout == "noncontig":  # a strided slice: the wrapper copies it
        big = torch.randn(shape[0], shape[1], shape[2], shape[3] * 2, generator=g, dtype=dtype).to(device)
        x = big[..., ::2]
        assert not x.is_contiguous()
    else:
        x = (torch.randn(shape, generator=g, dtype=dtype) * 2).to(device)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


# (dim, layout) cases run inside each act x clamp test
CASES = [(1, "contig"), (0, "contig"), (-1, "contig"), (3, "contig"), (1, "channels_last"), (-1, "channels_last"),
         (2, "noncontig")]


def _check_case(backend, device, act, clamp, dim, layout, dtype=torch.float64, rtol=1e-10, atol=1e-12):
    x = _make(_shape(backend), layout, device, dtype)
    g = torch.Generator().manual_seed(1)
    b = torch.randn(x.shape[dim], generator=g, dtype=dtype).to(device)
    dy = torch.randn(x.shape, generator=g, dtype=dtype).to(device)
    kw = dict(dim=dim, act=act, clamp=clamp)
    if act == "lrelu":
        kw["alpha"] = 0.1
    outs = []
    for impl in ("ref", backend):
        xi = x.detach().clone().requires_grad_(True)
        if layout == "channels_last":
            xi = x.detach().clone(memory_format=torch.channels_last).requires_grad_(True)
        bi = b.detach().clone().requires_grad_(True)
        y = bias_act(xi, bi, impl=impl, **kw)
        dx, db = torch.autograd.grad(y, (xi, bi), dy)
        outs.append((y, dx, db))
    (y0, dx0, db0), (y1, dx1, db1) = outs
    msg = f"{backend} act={act} clamp={clamp} dim={dim} layout={layout}"
    torch.testing.assert_close(y1, y0, rtol=rtol, atol=atol, msg=lambda m: f"y {msg}: {m}")
    torch.testing.assert_close(dx1, dx0, rtol=rtol, atol=atol, msg=lambda m: f"dx {msg}: {m}")
    torch.testing.assert_close(db1, db0, rtol=rtol, atol=atol * 100, msg=lambda m: f"db {msg}: {m}")
    if layout == "channels_last" and x.dim() == 4:
        assert y1.is_contiguous(memory_format=torch.channels_last), msg
        assert dx1.stride() == xi.stride() or dx1.is_contiguous(memory_format=torch.channels_last), msg


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("clamp", [None, 0.7])
@pytest.mark.parametrize("act", ACTS)
def test_matches_ref_float64(backend, act, clamp):
    device = require_backend(SPEC, backend)
    for dim, layout in CASES:
        _check_case(backend, device, act, clamp, dim, layout)


@pytest.mark.parametrize("backend", FAST)
def test_no_bias_gain_and_odd_sizes(backend):
    device = require_backend(SPEC, backend)
    g = torch.Generator().manual_seed(3)
    for shape, act, gain, clamp in [((7,), "tanh", 0.5, None), ((3, 1, 5), "lrelu", 2.0, 1.0), ((1, 13), "swish", None, 0.5),
                                    ((2, 3, 1, 1), "relu", -1.5, None), ((5, 4, 3), "softplus", 3.0, 2.0)]:
        x = (torch.randn(shape, generator=g, dtype=torch.float64) * 2).to(device).requires_grad_(True)
        dy = torch.randn(shape, generator=g, dtype=torch.float64).to(device)
        res = []
        for impl in ("ref", backend):
            y = bias_act(x, None, act=act, gain=gain, clamp=clamp, impl=impl)
            res.append((y, torch.autograd.grad(y, x, dy)[0]))
        torch.testing.assert_close(res[1][0], res[0][0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(res[1][1], res[0][1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", FAST)
def test_lrelu_negative_alpha(backend):
    device = require_backend(SPEC, backend)
    _check_case(backend, device, "lrelu", None, 1, "contig")
    x = _make(_shape(backend), "contig", device).requires_grad_(True)
    gen = torch.Generator().manual_seed(6)
    b = torch.randn(x.shape[1], dtype=torch.float64, generator=gen).to(device).requires_grad_(True)
    res = []
    for impl in ("ref", backend):
        y = bias_act(x, b, act="lrelu", alpha=-0.3, clamp=1.0, impl=impl)
        res.append((y, *torch.autograd.grad(y.square().sum(), (x, b))))
    for a, r in zip(res[1], res[0]):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("act", ACTS)
def test_gradcheck_and_gradgradcheck(backend, act):
    device = require_backend(SPEC, backend)
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64) * 2).to(device).requires_grad_(True)
    b = torch.randn(3, generator=g, dtype=torch.float64).to(device).requires_grad_(True)
    # The Triton interpreter is slow: random-projection gradcheck (fast_mode) there.
    fast = backend == "triton" and not torch.cuda.is_available()
    for clamp in (None, 1.5):
        fn = lambda x, b: bias_act(x, b, act=act, clamp=clamp, impl=backend)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, b), eps=1e-6, atol=1e-6, fast_mode=fast)
        assert torch.autograd.gradgradcheck(fn, (x, b), eps=1e-6, atol=1e-6, fast_mode=fast)


@pytest.mark.parametrize("backend", FAST)
def test_second_order_matches_ref(backend):
    """R1-style: gradient of a function of the input gradient, vs ref (all acts, with clamp)."""
    device = require_backend(SPEC, backend)
    for act in ACTS:
        x0 = _make(_shape(backend), "channels_last", device)
        b0 = torch.randn(x0.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(7)).to(device)
        res = []
        for impl in ("ref", backend):
            x = x0.detach().clone(memory_format=torch.channels_last).requires_grad_(True)
            b = b0.clone().requires_grad_(True)
            y = bias_act(x, b, act=act, clamp=2.0, impl=impl)
            (gx,) = torch.autograd.grad(y.sin().sum(), x, create_graph=True)
            pen = gx.square().sum()
            res.append(torch.autograd.grad(pen, (x, b), allow_unused=True))
        for a, r in zip(res[1], res[0]):
            if r is None:
                assert a is None or a.abs().max() == 0
            else:
                torch.testing.assert_close(a, r, rtol=1e-9, atol=1e-11, msg=lambda m: f"{act}: {m}")


@pytest.mark.parametrize("backend", FAST)
def test_half_precision_close_to_float32(backend):
    device = require_backend(SPEC, backend)
    dtypes = [torch.float16, torch.bfloat16]
    for dtype in dtypes:
        for act, layout in [("lrelu", "contig"), ("swish", "channels_last"), ("tanh", "contig")]:
            x32 = _make(_shape(backend), layout, device, torch.float32)
            gen = torch.Generator().manual_seed(5)
            b32 = torch.randn(x32.shape[1], generator=gen).to(device)
            dy32 = torch.randn(x32.shape, generator=gen).to(device)
            x16, b16, dy16 = x32.to(dtype), b32.to(dtype), dy32.to(dtype)
            # Keep pre-clamp values away from the clamp boundary: there the rounded half output
            # legitimately flips the clamp mask of the gradient.
            for _ in range(3):
                v = bias_act(x16.float(), b16.float(), act=act, impl="ref").abs()
                x16 = torch.where((v - 3.0).abs() < 0.1, torch.zeros_like(x16), x16)
            x32, b32, dy32 = x16.float().requires_grad_(True), b16.float().requires_grad_(True), dy16.float()
            x16.requires_grad_(True)
            b16.requires_grad_(True)
            y32 = bias_act(x32, b32, act=act, clamp=3.0, impl="ref")
            dx32, db32 = torch.autograd.grad(y32, (x32, b32), dy32)
            y16 = bias_act(x16, b16, act=act, clamp=3.0, impl=backend)
            dx16, db16 = torch.autograd.grad(y16, (x16, b16), dy16)
            assert y16.dtype == dtype and dx16.dtype == dtype and db16.dtype == dtype
            tol = dict(rtol=1e-2, atol=1e-2) if dtype == torch.float16 else dict(rtol=2e-2, atol=2e-2)
            torch.testing.assert_close(y16.float(), y32, **tol)
            torch.testing.assert_close(dx16.float(), dx32, **tol)
            torch.testing.assert_close(db16.float(), db32, rtol=2e-2, atol=0.1)


@pytest.mark.parametrize("act", [name for name, spec in ACTIVATIONS.items() if spec.has_2nd_grad])
def test_bfloat16_second_order_cpu_vs_ref(act):
    """The second-order cpu kernels on bfloat16 (the first-order ones are also in
    test_half_precision_close_to_float32) against ref in float64 on the same values: y, dx, db and
    the derivatives of <dx, c> by x and b, for the activations whose gradient depends on x (for the
    others the second-order gradient is zero on both sides); odd sizes, a non-contiguous and a
    channels_last x, a clamp (pre-activations within 0.05 of the clamp or of selu's kink at 0 are
    moved to 0.5: bfloat16 rounding there may cross it and flip the gradient)."""
    require_backend(SPEC, "cpu")
    shape, clamp = (3, 7, 9, 5), 2.7123
    for layout in ("noncontig", "channels_last"):
        x = bf16_randn(*shape, seed=1, scale=2.0, noncontig=layout == "noncontig")
        b, dy, c = bf16_randn(shape[1], seed=2), bf16_randn(*shape, seed=3), bf16_randn(*shape, seed=4)
        bb = b.view(1, -1, 1, 1)
        v = bias_act(x.double(), b.double(), act=act, impl="ref").abs()
        near = ((v - clamp).abs() < 0.05) | ((x + bb).abs() < 0.05)  # the clamp, or a kink at 0 (selu)
        x.copy_(torch.where(near, 0.5 - bb, x))  # in place: x stays a strided slice
        assert x.is_contiguous() == (layout != "noncontig")
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)

        # second order by relative L2 error, at twice the first-order tolerance: the cpu side
        # rounds dx to bfloat16 before differentiating it again
        second = dict(norm=True, rtol=2e-2)

        def first_order(x, b, impl):
            y = bias_act(x, b, act=act, clamp=clamp, impl=impl)
            return (y,) + torch.autograd.grad(y, (x, b), dy.to(y.dtype), create_graph=True)

        res = bf16_vs_ref64(first_order, dict(x=x, b=b), (None, c, None), f"bias_act bf16 {act} {layout}",
                            ("y", "dx", "db"), tol=dict(x=second, b=second))
        if layout == "channels_last":
            assert res["y"][0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend", FAST)
def test_float32_parity(backend):
    device = require_backend(SPEC, backend)
    _check_case(backend, device, "lrelu", 256.0, 1, "contig", dtype=torch.float32, rtol=1e-5, atol=1e-5)
    _check_case(backend, device, "sigmoid", None, 1, "channels_last", dtype=torch.float32, rtol=1e-5, atol=1e-5)


def test_ref_is_the_nvlabs_formula():
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    y = bias_act(x, b, act="lrelu", clamp=0.5, impl="ref")
    v = x + b[None, :, None, None]
    expect = (torch.where(v > 0, v, 0.2 * v) * math.sqrt(2)).clamp(-0.5, 0.5)
    torch.testing.assert_close(y, expect)
    y = bias_act(x, b, dim=-1 if False else 1, act="swish", impl="ref")
    torch.testing.assert_close(y, v * torch.sigmoid(v) * math.sqrt(2))
    # elu ignores alpha (as in NVlabs); selu/softplus/tanh/sigmoid default gain 1
    torch.testing.assert_close(bias_act(x, act="elu", alpha=5.0, impl="ref"), torch.nn.functional.elu(x))


@pytest.mark.parametrize("backend", ["ref", "cpu"])
def test_identity_returns_input_and_empty(backend):
    device = require_backend(SPEC, backend) if backend != "ref" else torch.device("cpu")
    x = torch.randn(2, 3, device=device)
    assert bias_act(x, impl=backend) is x
    e = torch.randn(0, 3, device=device)
    assert bias_act(e, torch.randn(3, device=device), act="relu", impl=backend).shape == (0, 3)


def test_validation_errors_name_the_argument():
    x = torch.randn(2, 3, 4, 4)
    b = torch.randn(3)
    with pytest.raises(ValueError, match="act"):
        bias_act(x, b, act="gelu")
    with pytest.raises(ValueError, match="b has length"):
        bias_act(x, torch.randn(4))
    with pytest.raises(ValueError, match="b must be 1-D"):
        bias_act(x, torch.randn(3, 1))
    with pytest.raises(TypeError, match="b has dtype"):
        bias_act(x, b.double())
    with pytest.raises(ValueError, match="b is on"):
        bias_act(x, torch.randn(3, device="meta"))
    with pytest.raises(ValueError, match="clamp"):
        bias_act(x, b, clamp=-1)
    with pytest.raises(ValueError, match="dim"):
        bias_act(x, b, dim=4)
    with pytest.raises(ValueError, match="dim"):
        bias_act(x, b, dim=-5)
    with pytest.raises(TypeError, match="dim"):
        bias_act(x, b, dim=1.0)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        bias_act(torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        bias_act([1.0, 2.0])
    with pytest.raises(TypeError, match="gain"):
        bias_act(x, b, gain="2")
    with pytest.raises(ValueError, match="alpha"):
        bias_act(x, b, act="lrelu", alpha=float("nan"))
    with pytest.raises(ValueError, match="impl"):
        bias_act(x, b, impl="fast")


def test_forced_unavailable_backend_raises():
    x = torch.randn(2, 3, 4, 4)
    with pytest.raises(BackendUnavailableError, match="impl='cuda'"):
        bias_act(x, impl="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError):
            bias_act(x, impl="cuda", strict=True)


def test_compile_fullgraph_cpu_backend():
    require_backend(SPEC, "cpu")
    torch._dynamo.reset()

    def f(x, b):
        return bias_act(x, b, act="lrelu", clamp=256, impl="cpu").square().sum()

    cf = torch.compile(f, fullgraph=True)
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    out = cf(x, b)
    out.backward()
    x2 = x.detach().clone().requires_grad_(True)
    b2 = b.detach().clone().requires_grad_(True)
    f(x2, b2).backward()
    torch.testing.assert_close(out, f(x2, b2))
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(b.grad, b2.grad)


@pytest.mark.parametrize("act", ["lrelu", "tanh", "swish", "linear"])
def test_custom_op_path_cpu(act):
    """The torch.library ops that torch.compile traces (eager calls use autograd.Function)."""
    require_backend(SPEC, "cpu")
    from ilsgan.ops._bias_act import _bias_act_grad_op, _bias_act_op

    spec = ACTIVATIONS[act]
    g = torch.Generator().manual_seed(8)
    x = (torch.randn(2, 3, 2, 2, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    b = torch.randn(3, generator=g, dtype=torch.float64).requires_grad_(True)
    fn = lambda x, b: _bias_act_op(x, b, 1, spec.index, spec.def_alpha, spec.def_gain, 1.5, "cpu")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(fn, (x, b), eps=1e-6, atol=1e-6)
    torch.library.opcheck(_bias_act_op, (x.detach(), b.detach(), 1, spec.index, spec.def_alpha, spec.def_gain, 1.5, "cpu"))
    y = fn(x, b).detach()
    dy = torch.randn(x.shape, generator=g, dtype=torch.float64)
    torch.library.opcheck(_bias_act_grad_op, (dy, x.detach(), b.detach(), y, 1, spec.index, spec.def_alpha,
                                              spec.def_gain, 1.5, True, "cpu"))
