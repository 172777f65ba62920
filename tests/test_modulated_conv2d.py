"""modulated_conv2d: ref (both NVlabs paths) against the definition, every fast backend against ref (float64, values and
first-order gradients w.r.t. x, weight, styles, noise, bias), layouts, fp16 pre-normalization,
gradcheck, validation, dispatch, torch.compile."""

import math

import pytest
import torch

from conftest import bf16_randn, bf16_vs_ref64, require_backend
from test_conv2d_resample import conv2d_resample_oracle, ensure_upfirdn2d, make_filter

from ilsgan.ops import ACTIVATIONS, BackendUnavailableError, bias_act, modulated_conv2d
from ilsgan.ops._modulated_conv2d import SPEC

ensure_upfirdn2d()
FAST = ("cpu", "triton", "cuda")

# (k, up, down, padding, demodulate, noise, epilogue)
EPI = {
    "none": dict(),
    "synth": dict(bias=True, act="lrelu", gain=math.sqrt(2) * 0.7, clamp=None),
    "synth_clamp": dict(bias=True, act="lrelu", clamp=0.6),
    "torgb": dict(bias=True, clamp=0.5),
    "relu": dict(bias=False, act="relu", gain=1.3),
    "lrelu_a": dict(bias=True, act="lrelu", alpha=0.3, gain=-0.8, clamp=0.9),
    "tanh": dict(bias=True, act="tanh", clamp=0.4),  # not fused: epilogue + bias_act on the backend
}
CASES = [
    (3, 1, 1, 1, True, "pixel", "synth"),
    (3, 2, 1, 1, True, "pixel", "synth_clamp"),
    (1, 1, 1, 0, False, None, "torgb"),
    (3, 1, 2, 1, True, None, "relu"),
    (3, 1, 1, 1, False, "full", "lrelu_a"),
    (1, 2, 1, 0, True, "one", "none"),
    (3, 1, 1, [1, 0, 2, 0], True, "pixel", "tanh"),
    (1, 1, 2, 0, True, "pixel", "synth"),
    (3, 2, 1, 1, False, "pixel", "none"),
]


def _shape(backend):
    # the Triton interpreter is slow: tiny shapes there
    return (2, 3, 5, 4, 5) if backend == "triton" else (3, 5, 6, 7, 6)  # N, I, O, H, W


def _inputs(shape, case, seed, dtype=torch.float64, device="cpu", layout="contig"):
    k, up, down, padding, demod, noise_kind, epi = CASES[case]
    n, i, o, h, w = shape
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, i, h, w, generator=g, dtype=dtype)
    if layout == "noncontig":
        x = torch.randn(n, i, h, w * 2, generator=g, dtype=dtype)[..., ::2]
    weight = torch.randn(o, i, k, k, generator=g, dtype=dtype)
    styles = torch.randn(n, i, generator=g, dtype=dtype) + 1
    pad = padding if isinstance(padding, list) else [padding] * 4
    if len(pad) == 2:
        pad = [pad[0], pad[0], pad[1], pad[1]]
    oh = (h * up + pad[2] + pad[3] - k + 1) // down
    ow = (w * up + pad[0] + pad[1] - k + 1) // down
    noise = None
    if noise_kind == "pixel":
        noise = torch.randn(n, 1, oh, ow, generator=g, dtype=dtype)
    elif noise_kind == "full":
        noise = torch.randn(n, o, oh, ow, generator=g, dtype=dtype)
    elif noise_kind == "one":
        noise = torch.randn(1, 1, oh, ow, generator=g, dtype=dtype)
    kw = dict(EPI[epi])
    bias = torch.randn(o, generator=g, dtype=dtype) if kw.pop("bias", False) else None
    f = make_filter() if (up > 1 or down > 1) else None
    args = dict(x=x, weight=weight, styles=styles, noise=noise, bias=bias)
    args = {key: (v.to(device) if v is not None else None) for key, v in args.items()}
    if layout == "channels_last":
        args["x"] = args["x"].contiguous(memory_format=torch.channels_last)
    opts = dict(up=up, down=down, padding=padding, resample_filter=None if f is None else f.to(device),
                demodulate=demod, **kw)
    return args, opts


def modconv_oracle(x, weight, styles, noise=None, bias=None, up=1, down=1, padding=0, resample_filter=None,
                   demodulate=True, flip_weight=True, act="linear", alpha=None, gain=None, clamp=None):
    """The definition, one sample at a time: the conv (test_conv2d_resample's oracle) with the weight
    ``w[o,i] * s[n,i] * d[n,o]``, plus noise, then bias_act's epilogue on ``ref``."""
    ys = []
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            w = w * (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
        ys.append(conv2d_resample_oracle(x[n:n + 1], w, resample_filter, up, down, padding, flip_weight=flip_weight))
    y = torch.cat(ys)
    if noise is not None:
        y = y + noise
    return bias_act(y, bias, act=act, alpha=alpha, gain=gain, clamp=clamp, impl="ref")


def _run(fn, args, opts, dy, **extra):
    leaves = {k: (v.detach().clone(memory_format=torch.preserve_format).requires_grad_(True) if v is not None else None)
              for k, v in args.items()}
    y = fn(**leaves, **opts, **extra)
    names = [k for k, v in leaves.items() if v is not None]
    grads = torch.autograd.grad(y, [leaves[k] for k in names], dy)
    return y, dict(zip(names, grads))


def _assert_same(got, want, rtol, atol, msg):
    (y1, g1), (y0, g0) = got, want
    torch.testing.assert_close(y1.cpu(), y0.cpu(), rtol=rtol, atol=atol, msg=lambda m: f"y {msg}: {m}")
    for k in g0:
        torch.testing.assert_close(g1[k].cpu(), g0[k].cpu(), rtol=rtol, atol=atol,
                                   msg=lambda m: f"grad {k} {msg}: {m}")


@pytest.mark.parametrize("case", range(len(CASES)))
def test_ref_both_nvlabs_paths_match_definition(case):
    """ref runs NVlabs' code: per-sample weights and a grouped conv (fused_modconv=True), or scaled
    activations, one shared conv and fma(d, noise) (False)."""
    args, opts = _inputs(_shape("cpu"), case, seed=case)
    g = torch.Generator().manual_seed(100 + case)
    y_ref = modulated_conv2d(**args, **opts, impl="ref")
    dy = torch.randn(y_ref.shape, generator=g, dtype=torch.float64)
    want = _run(modconv_oracle, args, opts, dy)
    for fused in (True, False, None):
        got = _run(modulated_conv2d, args, opts, dy, impl="ref", fused_modconv=fused)
        _assert_same(got, want, 1e-10, 1e-10, f"ref fused={fused} case {case}")


@pytest.mark.parametrize("backend", FAST)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_fast_matches_ref_float64(backend, case):
    device = require_backend(SPEC, backend)
    layouts = ("contig", "channels_last", "noncontig") if backend != "triton" else ("contig", "channels_last")
    for li, layout in enumerate(layouts):
        args, opts = _inputs(_shape(backend), case, seed=10 * case + li, device=device, layout=layout)
        y0 = modulated_conv2d(**args, **opts, impl="ref")
        g = torch.Generator().manual_seed(case)
        dy = torch.randn(y0.shape, generator=g, dtype=torch.float64).to(device)
        want = _run(modulated_conv2d, args, opts, dy, impl="ref", fused_modconv=False)
        for fused in ((False, True, None) if li == 0 else (False, None)):
            got = _run(modulated_conv2d, args, opts, dy, impl=backend, fused_modconv=fused)
            _assert_same(got, want, 1e-10, 1e-10, f"{backend} case {case} {layout} fused={fused}")
            if layout == "channels_last" and fused is not True:
                assert got[0].is_contiguous(memory_format=torch.channels_last), "channels_last lost"


@pytest.mark.parametrize("backend", FAST)
def test_fast_batch1_odd_sizes_and_float32(backend):
    device = require_backend(SPEC, backend)
    shape = (1, 3, 2, 5, 3) if backend == "triton" else (1, 5, 3, 9, 7)
    for case in (0, 1):
        args, opts = _inputs(shape, case, seed=7 + case, device=device)
        y0 = modulated_conv2d(**args, **opts, impl="ref")
        dy = torch.randn(y0.shape, dtype=torch.float64).to(device)
        want = _run(modulated_conv2d, args, opts, dy, impl="ref")
        for fused in (None, False):
            got = _run(modulated_conv2d, args, opts, dy, impl=backend, fused_modconv=fused)
            _assert_same(got, want, 1e-10, 1e-10, f"{backend} batch 1 case {case} fused={fused}")
    # float32 against float64 ref
    args, opts = _inputs(_shape(backend), 1, seed=3, device=device)
    y0 = modulated_conv2d(**args, **opts, impl="ref")
    dy = torch.randn(y0.shape, dtype=torch.float64).to(device)
    want = _run(modulated_conv2d, args, opts, dy, impl="ref")
    args32 = {k: (v.float() if v is not None else None) for k, v in args.items()}
    got = _run(modulated_conv2d, args32, opts, dy.float(), impl=backend)
    _assert_same(((got[0].double()), {k: v.double() for k, v in got[1].items()}), want, 1e-4, 1e-4,
                 f"{backend} float32")


@pytest.mark.parametrize("backend", ("ref",) + FAST)
def test_gradcheck(backend):
    device = torch.device("cpu") if backend == "ref" else require_backend(SPEC, backend)
    # the Triton interpreter is slow and its gradients are already compared with ref's in float64
    shape, cases = ((2, 2, 2, 3, 3), (2, 0)) if backend == "triton" else ((2, 2, 3, 4, 3), (1, 4, 2))
    for case in cases:
        args, opts = _inputs(shape, case, seed=case, device=device)
        opts = {k: v for k, v in opts.items() if k != "clamp"} if case in (0, 1) else opts  # clamp kinks
        names = [k for k, v in args.items() if v is not None]

        def fn(*tensors):
            return modulated_conv2d(**dict(zip(names, tensors)), **opts, impl=backend)

        leaves = [args[k].detach().clone().requires_grad_(True) for k in names]
        assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", ("ref",) + FAST)
def test_half_precision_prenormalization(backend):
    device = torch.device("cpu") if backend == "ref" else require_backend(SPEC, backend)
    args, opts = _inputs(_shape(backend), 0, seed=11, dtype=torch.float32, device=device)
    args["weight"] = args["weight"] * 300  # would overflow fp16 without the pre-normalization
    args["styles"] = args["styles"] * 300
    opts["clamp"] = 256.0
    y32 = modulated_conv2d(**args, **opts, impl="ref")
    h = dict(args, x=args["x"].half())  # NVlabs mixed precision: fp32 weight/styles/noise/bias, fp16 x
    y16 = modulated_conv2d(**h, **opts, impl=backend)
    assert y16.dtype == torch.float16 and torch.isfinite(y16).all()
    torch.testing.assert_close(y16.float(), y32, rtol=2e-2, atol=2e-2)
    leaves = {k: (v.detach().clone().requires_grad_(True) if v is not None else None) for k, v in h.items()}
    y = modulated_conv2d(**leaves, **opts, impl=backend)
    y.float().square().sum().backward()
    for k, v in leaves.items():
        if v is not None:
            assert v.grad is not None and torch.isfinite(v.grad).all(), k


# (k, up, down, act, clamp, noise kind, fused_modconv): the network's layers and the kernels' paths
BF16_CASES = [
    (3, 1, 1, "lrelu", 256.0, "pixel", None),   # SynthesisLayer: shared-weight conv + epilogue
    (3, 2, 1, "lrelu", 2.5, "pixel", None),     # up-sampling SynthesisLayer, a clamp that is hit
    (1, 1, 1, "linear", 256.0, None, None),     # ToRGB: the cpu 1x1 kernel
    (3, 1, 2, "relu", None, "full", False),
    (3, 1, 1, "tanh", None, None, True),        # per-sample weights; unfused act on bias_act
]


# Output elements whose pre-activation lies within this of the activation's kink (relu, lrelu) or
# whose activation lies within this of the clamp get no output gradient in the bf16 test: there the
# bf16 rounding of the conv output may put cpu and ref on different sides (a flipped gradient mask).
BF16_BOUNDARY = 0.1


@pytest.mark.parametrize("case", range(len(BF16_CASES)))
def test_bfloat16_cpu_vs_ref(case):
    """bfloat16 activations with float32 weight and styles (the networks' mixed precision) on the cpu
    backend against ref in float64 on the same values: forward elementwise at bf16 tolerance,
    gradients of x, weight, styles, noise and bias by relative L2 error within BF16_RTOL, with
    the output gradient zeroed next to the kink and the clamp (BF16_BOUNDARY) and the clamp hit
    elsewhere. Odd sizes, non-contiguous x."""
    require_backend(SPEC, "cpu")
    k, up, down, act, clamp, noise_kind, fused = BF16_CASES[case]
    n, i, o, h, w = 3, 5, 6, 7, 9
    x = bf16_randn(n, i, h, w, seed=case, noncontig=True)
    g = torch.Generator().manual_seed(100 + case)
    weight = torch.randn(o, i, k, k, generator=g)
    styles = torch.randn(n, i, generator=g) + 1
    bias = bf16_randn(o, seed=200 + case)
    oh, ow = (h * up) // down, (w * up) // down
    noise = {None: None, "pixel": bf16_randn(n, 1, oh, ow, seed=300 + case),
             "full": bf16_randn(n, o, oh, ow, seed=300 + case)}[noise_kind]
    opts = dict(up=up, down=down, padding=k // 2, resample_filter=make_filter() if up > 1 or down > 1 else None,
                flip_weight=up == 1, demodulate=k == 3, fused_modconv=fused)
    args = dict(x=x, weight=weight, styles=styles, noise=noise, bias=bias)
    dy = bf16_randn(n, o, oh, ow, seed=400 + case)
    u = modulated_conv2d(**{key: None if v is None else v.double() for key, v in args.items()}, **opts,
                         act="linear", gain=1.0, impl="ref")
    spec = ACTIVATIONS[act]
    near = u.abs() < BF16_BOUNDARY if act in ("relu", "lrelu") else torch.zeros_like(u, dtype=torch.bool)
    if clamp is not None:
        v = (spec.fn(u, spec.def_alpha) * spec.def_gain).abs()
        near |= (v - clamp).abs() < BF16_BOUNDARY
        if clamp < 10:
            assert (v > clamp + BF16_BOUNDARY).float().mean() > 0.1, "the clamp must be hit"
    assert near.float().mean() < 0.2
    dy = dy.masked_fill(near, 0)
    grad = dict(norm=True)  # relative L2 error within BF16_RTOL
    bf16_vs_ref64(lambda impl, **a: modulated_conv2d(**a, **opts, act=act, clamp=clamp, impl=impl), args, (dy,),
                  f"modconv bf16 case {case}", ("y",),
                  tol=dict(y=dict(rtol=2e-2), **{key: grad for key in args}))


def test_demodulation_without_per_sample_weight_matches_definition():
    args, opts = _inputs((4, 6, 5, 5, 5), 0, seed=1)
    w, s = args["weight"], args["styles"]
    d_def = ((w[None] * s[:, None, :, None, None]).square().sum([2, 3, 4]) + 1e-8).rsqrt()
    d_fac = (s.square() @ w.square().sum([2, 3]).t() + 1e-8).rsqrt()
    torch.testing.assert_close(d_fac, d_def, rtol=1e-12, atol=0)


def test_validation_errors_name_the_argument():
    x = torch.randn(2, 4, 5, 5)
    w = torch.randn(3, 4, 3, 3)
    s = torch.randn(2, 4)
    ok = dict(padding=1)
    with pytest.raises(ValueError, match="x must be 4-D"):
        modulated_conv2d(x[0], w, s, **ok)
    with pytest.raises(ValueError, match="weight must be 4-D"):
        modulated_conv2d(x, w[0], s, **ok)
    with pytest.raises(ValueError, match=r"weight has 5 input channels"):
        modulated_conv2d(x, torch.randn(3, 5, 3, 3), s, **ok)
    with pytest.raises(ValueError, match=r"styles must have shape \[N, I\]"):
        modulated_conv2d(x, w, torch.randn(2, 3), **ok)
    with pytest.raises(ValueError, match="noise must have shape"):
        modulated_conv2d(x, w, s, noise=torch.randn(2, 1, 4, 5), **ok)
    with pytest.raises(ValueError, match="noise must have shape"):
        modulated_conv2d(x, w, s, noise=torch.randn(2, 2, 5, 5), **ok)
    with pytest.raises(ValueError, match="up must be >= 1"):
        modulated_conv2d(x, w, s, up=0, **ok)
    with pytest.raises(TypeError, match="down must be an int"):
        modulated_conv2d(x, w, s, down=2.0, **ok)
    with pytest.raises(TypeError, match="resample_filter must be float32"):
        modulated_conv2d(x, w, s, up=2, resample_filter=torch.ones(4, dtype=torch.float64), **ok)
    with pytest.raises(ValueError, match="resample_filter must be 1-D"):
        modulated_conv2d(x, w, s, up=2, resample_filter=torch.ones(2, 2, 2), **ok)
    with pytest.raises(ValueError, match="bias must have shape"):
        modulated_conv2d(x, w, s, bias=torch.randn(4), **ok)
    with pytest.raises(ValueError, match="act must be one of"):
        modulated_conv2d(x, w, s, act="gelu", **ok)
    with pytest.raises(ValueError, match="clamp must be >= 0"):
        modulated_conv2d(x, w, s, clamp=-1, **ok)
    with pytest.raises(TypeError, match="fused_modconv"):
        modulated_conv2d(x, w, s, fused_modconv="yes", **ok)
    with pytest.raises(TypeError, match="padding"):
        modulated_conv2d(x, w, s, padding=[1, 1, 1])
    with pytest.raises(ValueError, match="output would be"):
        modulated_conv2d(x, w, s, padding=-2)
    with pytest.raises(ValueError, match="impl must be one of"):
        modulated_conv2d(x, w, s, impl="fast", **ok)


def test_forced_unavailable_backend_raises():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    x, w, s = torch.randn(2, 4, 5, 5), torch.randn(3, 4, 3, 3), torch.randn(2, 4)
    with pytest.raises(BackendUnavailableError, match="impl='cuda'"):
        modulated_conv2d(x, w, s, padding=1, impl="cuda")


@pytest.mark.parametrize("case", (0, 2), ids=("synth", "torgb"))  # torgb: the cpu 1x1 kernel's custom ops
def test_compile_fullgraph_cpu_backend(case):
    require_backend(SPEC, "cpu")
    args, opts = _inputs((2, 4, 3, 6, 6), case, seed=2, dtype=torch.float32)

    def f(x, weight, styles, noise, bias):
        return modulated_conv2d(x, weight, styles, noise=noise, bias=bias, impl="cpu", **opts)

    def fresh_leaves():
        return {k: (v.detach().clone().requires_grad_(True) if v is not None else None) for k, v in args.items()}

    leaves = fresh_leaves()
    cf = torch.compile(f, fullgraph=True, backend="aot_eager")
    y = cf(**leaves)
    y.square().sum().backward()
    want = fresh_leaves()
    y0 = modulated_conv2d(**want, **opts, impl="ref")
    y0.square().sum().backward()
    torch.testing.assert_close(y, y0, rtol=1e-5, atol=1e-5)
    for k, v in leaves.items():
        if v is not None:
            torch.testing.assert_close(v.grad, want[k].grad, rtol=1e-4, atol=1e-4, msg=f"grad {k}")


@pytest.mark.parametrize("backend", FAST)
def test_fast_one_pixel_output_and_noise_kinds(backend):
    # 1x1 outputs: NCHW and channels_last strides are both "contiguous"; full [N,O] and [1,O] noise
    device = require_backend(SPEC, backend)
    g = torch.Generator().manual_seed(4)
    for layout in ("contig", "channels_last"):
        for noise_shape in ((2, 1, 1, 1), (2, 3, 1, 1), (1, 3, 1, 1)):
            x = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64).to(device)
            if layout == "channels_last":
                x = x.contiguous(memory_format=torch.channels_last)
            args = dict(x=x, weight=torch.randn(3, 4, 3, 3, generator=g, dtype=torch.float64).to(device),
                        styles=torch.randn(2, 4, generator=g, dtype=torch.float64).to(device),
                        noise=torch.randn(noise_shape, generator=g, dtype=torch.float64).to(device),
                        bias=torch.randn(3, generator=g, dtype=torch.float64).to(device))
            opts = dict(act="lrelu", clamp=1.0)
            dy = torch.randn(2, 3, 1, 1, generator=g, dtype=torch.float64).to(device)
            want = _run(modulated_conv2d, args, opts, dy, impl="ref")
            got = _run(modulated_conv2d, args, opts, dy, impl=backend)
            _assert_same(got, want, 1e-10, 1e-10, f"{backend} 1x1 {layout} noise {noise_shape}")


@pytest.mark.parametrize("outputs", (1, 3, 4, 8, 9))
def test_cpu_torgb_kernel_matches_ref(outputs):
    # The cpu backend runs 1x1 layers with up to 8 outputs on its own kernel (one pass over x per
    # direction) and more outputs as a batched matmul: both against ref in float64, odd sizes, batch 1.
    require_backend(SPEC, "cpu")
    for n, i, h, w, seed in ((1, 7, 5, 3, 0), (3, 33, 17, 9, 1)):
        g = torch.Generator().manual_seed(seed + 10 * outputs)
        args = dict(x=torch.randn(n, i, h, w, generator=g, dtype=torch.float64),
                    weight=torch.randn(outputs, i, 1, 1, generator=g, dtype=torch.float64),
                    styles=torch.randn(n, i, generator=g, dtype=torch.float64) + 1,
                    bias=torch.randn(outputs, generator=g, dtype=torch.float64))
        dy = torch.randn(n, outputs, h, w, generator=g, dtype=torch.float64)
        want = _run(modulated_conv2d, args, dict(demodulate=False), dy, impl="ref")
        got = _run(modulated_conv2d, args, dict(demodulate=False), dy, impl="cpu")
        _assert_same(got, want, 1e-12, 1e-12, f"torgb outputs={outputs} n={n}")
    x = args["x"][:, :, :3, :2].clone().requires_grad_(True)
    wt, s = (args[k].clone().requires_grad_(True) for k in ("weight", "styles"))
    assert torch.autograd.gradcheck(lambda a, b, c: modulated_conv2d(a, b, c, demodulate=False, impl="cpu"),
                                    (x, wt, s), eps=1e-6, atol=1e-6)
