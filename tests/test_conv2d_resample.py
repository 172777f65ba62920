"""conv2d_resample: every NVlabs fast path against the generic NVlabs composition (FIR-upsample,
conv, FIR-downsample) built from an independent upfirdn2d oracle; gradients; validation."""

import pytest
import torch
import torch.nn.functional as F

from conftest import bf16_randn, bf16_vs_ref64, require_backend

from ilsgan.ops import BackendUnavailableError, conv2d_resample
from ilsgan.ops._conv2d_resample import SPEC, output_size
from ilsgan.ops._validate import parse_padding

# Test-only oracles (also used by test_modulated_conv2d.py): upfirdn2d written from its definition
# (insert zeros, pad/crop, FIR, decimate, gain), independent of ilsgan.ops.upfirdn2d.


def upfirdn2d_oracle(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    if isinstance(padding, int):
        padding = [padding] * 4
    if len(padding) == 2:
        padding = [padding[0], padding[0], padding[1], padding[1]]
    px0, px1, py0, py1 = padding
    n, c, h, w = x.shape
    xu = x.new_zeros(n, c, h * up, w * up)
    xu[:, :, ::up, ::up] = x
    xu = F.pad(xu, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    xu = xu[:, :, max(-py0, 0): xu.shape[2] - max(-py1, 0), max(-px0, 0): xu.shape[3] - max(-px1, 0)]
    if f is None:
        f2 = torch.ones(1, 1, dtype=torch.float32)
    elif f.dim() == 1:
        f2 = torch.outer(f, f)
    else:
        f2 = f
    f2 = (f2.to(x.dtype) * gain).to(x.device)
    if not flip_filter:  # true convolution (conv2d correlates)
        f2 = f2.flip([0, 1])
    y = F.conv2d(xu, f2[None, None].expand(c, 1, *f2.shape), groups=c)
    return y[:, :, ::down, ::down]


def conv2d_resample_oracle(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """The NVlabs 'generic reference' composition: FIR-upsample + pad, conv, FIR-downsample."""
    if isinstance(padding, int):
        padding = [padding, padding]
    if len(padding) == 2:
        padding = [padding[0], padding[0], padding[1], padding[1]]
    px0, px1, py0, py1 = padding
    fw, fh = (1, 1) if f is None else (f.shape[-1], f.shape[0])
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    y = upfirdn2d_oracle(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], flip_filter=flip_filter,
                         gain=up**2)
    if not flip_weight:
        w = w.flip([2, 3])
    y = F.conv2d(y, w, groups=groups)
    if down > 1:
        y = upfirdn2d_oracle(y, f, down=down, flip_filter=flip_filter)
    return y


def ensure_upfirdn2d():
    """Import the real ilsgan.ops.upfirdn2d (conv2d_resample's FIR steps run on it)."""
    import ilsgan.ops._upfirdn2d  # noqa: F401

    return True


def make_filter(taps=(1, 3, 3, 1), ndim=2):
    f = torch.tensor(taps, dtype=torch.float32)
    if ndim == 2:
        f = torch.outer(f, f)
    return f / f.sum()

REAL_UFD = ensure_upfirdn2d()
IMPLS = ["ref", "cpu", "triton", "cuda"]

# (k, up, down, padding, groups, filter)
CASES = [
    (3, 1, 1, 1, 1, "2d"),
    (3, 1, 1, 0, 2, None),
    (3, 1, 1, [1, 0], 1, None),
    (3, 1, 1, [2, 0, 1, -1], 1, None),  # asymmetric / negative: generic path
    (1, 1, 1, 0, 1, None),
    (3, 2, 1, 1, 1, "2d"),  # synthesis up conv
    (3, 2, 1, 1, 2, "1d"),
    (3, 2, 1, [1, 0, 2, 1], 1, "2d"),
    (3, 1, 2, 1, 1, "2d"),  # discriminator down conv
    (3, 1, 2, 0, 2, "1d"),
    (1, 1, 2, 0, 1, "2d"),  # D skip: 1x1 down
    (1, 2, 1, 0, 1, "2d"),  # 1x1 up
    (3, 2, 2, 1, 1, "2d"),  # up then down
    (2, 2, 1, [1, 0], 1, "1d"),  # even kernel
    (3, 3, 1, 1, 1, (1, 2, 1)),
    (3, 1, 1, 1, 1, None),
]


def _filt(spec):
    if spec is None:
        return None
    if spec == "2d":
        return make_filter(ndim=2)
    if spec == "1d":
        return make_filter(ndim=1)
    return make_filter(spec, ndim=1)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", range(len(CASES)))
def test_matches_nvlabs_generic_formula(impl, case):
    device = torch.device("cpu") if impl == "ref" else require_backend(SPEC, impl)
    k, up, down, padding, groups, fspec = CASES[case]
    f = _filt(fspec)
    g = torch.Generator().manual_seed(case)
    x = torch.randn(2, 4, 7, 6, generator=g, dtype=torch.float64)
    w = torch.randn(6, 4 // groups, k, k, generator=g, dtype=torch.float64)
    for flip_weight, flip_filter in ((True, False), (False, True)):
        want = conv2d_resample_oracle(x, w, f, up, down, padding, groups, flip_weight, flip_filter)
        xi = x.to(device).requires_grad_(True)
        wi = w.to(device).requires_grad_(True)
        got = conv2d_resample(xi, wi, None if f is None else f.to(device), up=up, down=down, padding=padding,
                              groups=groups, flip_weight=flip_weight, flip_filter=flip_filter, impl=impl)
        torch.testing.assert_close(got.cpu(), want, rtol=1e-10, atol=1e-10)
        pad = parse_padding("test", "padding", padding)
        assert tuple(got.shape[2:]) == output_size(7, 6, k, k, up, down, pad)
        # gradients against the oracle's
        dy = torch.randn(want.shape, generator=g, dtype=torch.float64)
        xo = x.clone().requires_grad_(True)
        wo = w.clone().requires_grad_(True)
        want_g = torch.autograd.grad(
            conv2d_resample_oracle(xo, wo, f, up, down, padding, groups, flip_weight, flip_filter), (xo, wo), dy)
        got_g = torch.autograd.grad(got, (xi, wi), dy.to(device))
        for a, b in zip(got_g, want_g):
            torch.testing.assert_close(a.cpu(), b, rtol=1e-10, atol=1e-10)


def test_channels_last_and_gradcheck():
    f = make_filter()
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    w = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    got = conv2d_resample(x, w, f, up=2, padding=1)
    torch.testing.assert_close(got, conv2d_resample_oracle(x.contiguous(), w, f, 2, 1, 1))
    xs = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    ws = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    for up, down in ((2, 1), (1, 2)):
        assert torch.autograd.gradcheck(lambda a, b: conv2d_resample(a, b, f, up=up, down=down, padding=1, impl="ref"),
                                        (xs, ws))



def test_bfloat16_cpu_vs_ref():
    """bfloat16 on the cpu backend (torch's conv, our upfirdn2d) against ref in float64 on the same
    values: forward and gradients (relative L2 error: each is a sum over the kernel of bf16
    products), odd sizes, non-contiguous input."""
    require_backend(SPEC, "cpu")
    f = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    x = bf16_randn(3, 5, 9, 7, seed=1, noncontig=True)
    for k, kw in ((3, dict(up=2, padding=1, flip_weight=False)), (3, dict(down=2, padding=1)), (1, dict(down=2))):
        w = bf16_randn(6, 5, k, k, seed=2)
        dy = bf16_randn(*conv2d_resample(x.float(), w.float(), f=f, impl="ref", **kw).shape, seed=3)
        bf16_vs_ref64(lambda x, w, impl: conv2d_resample(x, w, f=f, impl=impl, **kw), dict(x=x, w=w), (dy,),
                      f"conv2d_resample bf16 k={k} {kw}", ("y",), tol={n: dict(norm=True) for n in ("y", "x", "w")})

def test_validation_errors_name_the_argument():
    x = torch.randn(2, 4, 5, 5)
    w = torch.randn(3, 4, 3, 3)
    with pytest.raises(ValueError, match="x must be 4-D"):
        conv2d_resample(x[0], w)
    with pytest.raises(ValueError, match="w must be 4-D"):
        conv2d_resample(x, w[0])
    with pytest.raises(ValueError, match=r"x.shape\[1\]"):
        conv2d_resample(x, torch.randn(3, 5, 3, 3))
    with pytest.raises(TypeError, match="w has dtype"):
        conv2d_resample(x, w.double())
    with pytest.raises(ValueError, match="up must be >= 1"):
        conv2d_resample(x, w, up=0)
    with pytest.raises(TypeError, match="down must be an int"):
        conv2d_resample(x, w, down=1.5)
    with pytest.raises(ValueError, match="groups"):
        conv2d_resample(x, torch.randn(3, 2, 3, 3), groups=2)
    with pytest.raises(TypeError, match="f must be float32"):
        conv2d_resample(x, w, f=torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="f must be 1-D"):
        conv2d_resample(x, w, f=torch.ones(1, 2, 3))
    with pytest.raises(TypeError, match="padding"):
        conv2d_resample(x, w, padding=[1, 2, 3])
    with pytest.raises(ValueError, match="output would be"):
        conv2d_resample(x, w, padding=-3)
    with pytest.raises(ValueError, match="impl must be one of"):
        conv2d_resample(x, w, impl="gpu")


def test_forced_unavailable_backend_raises():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailableError, match="impl='cuda'"):
        conv2d_resample(torch.randn(1, 2, 4, 4), torch.randn(2, 2, 3, 3), padding=1, impl="cuda")
