"""upfirdn2d on the hot ILSGAN shapes (batch 32, filter setup_filter([1, 3, 3, 1]) = 4x4), forward
and forward+backward, for ref, torch.compile(ref) and the fast backends of this device:

- ``up2``: ``upsample2d`` (conv up-sampling / ToRGB skip path; 3 channels = the RGB skip);
- ``down2``: ``downsample2d`` (discriminator);
- ``filt``: ``upfirdn2d(x, f, padding=1, gain=4)`` on the (2H+1)-sized output of a stride-2
  transposed 3x3 conv, as ``conv2d_resample`` runs it for up-sampling convs.

``bytes`` is what an ideal kernel moves: fwd = read x + write y; fwd+bwd adds read dy + write dx.
"""

import pytest
import torch

from conftest import DEVICE, IMPLS, compiled, impl_skip_reason, run, shape_str, sync

from ilsgan.ops._upfirdn2d import SPEC, downsample2d, setup_filter, upfirdn2d, upsample2d

CASES = [
    ("up2", (32, 256, 8, 8)),
    ("up2", (32, 256, 16, 16)),
    ("up2", (32, 256, 32, 32)),
    ("up2", (32, 128, 64, 64)),
    ("up2", (32, 3, 64, 64)),
    ("down2", (32, 256, 16, 16)),
    ("down2", (32, 256, 32, 32)),
    ("down2", (32, 256, 64, 64)),
    ("down2", (32, 128, 128, 128)),
    ("filt", (32, 256, 17, 17)),
    ("filt", (32, 256, 33, 33)),
    ("filt", (32, 256, 65, 65)),
    ("filt", (32, 128, 129, 129)),
]


def _op(desc, impl, f):
    if desc == "up2":
        return lambda x: upsample2d(x, f, impl=impl)
    if desc == "down2":
        return lambda x: downsample2d(x, f, impl=impl)
    return lambda x: upfirdn2d(x, f, padding=1, gain=4, impl=impl)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("kind", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("desc,shape", CASES, ids=[f"{d}-{shape_str(s)}" for d, s in CASES])
def test_upfirdn2d(benchmark, desc, shape, kind, impl):
    reason = impl_skip_reason(SPEC, impl)
    if reason is not None:
        pytest.skip(reason)
    f = setup_filter([1, 3, 3, 1], device=DEVICE)
    if impl == "compile":
        fwd = compiled(("upfirdn2d", desc, kind, shape), _op(desc, "ref", f))
    else:
        fwd = _op(desc, impl, f)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(DEVICE)
    with torch.no_grad():
        y_shape = _op(desc, "ref", f)(x[:1]).shape[1:]
    nx = x.numel() * x.element_size()
    ny = shape[0] * y_shape.numel() * x.element_size()
    if kind == "fwd":
        def fn():
            with torch.no_grad():
                fwd(x)
            sync()
        nbytes = nx + ny
    else:
        x.requires_grad_(True)
        dy = torch.randn((shape[0],) + tuple(y_shape), generator=g).to(DEVICE)

        def fn():
            y = fwd(x)
            torch.autograd.grad(y, x, dy)
            sync()
        nbytes = 2 * (nx + ny)
    run(benchmark, fn, group=f"upfirdn2d {kind} {desc} {shape_str(shape)}", impl=impl, bytes=nbytes)
