"""Triton kernel for ``ilsgan.ops.upfirdn2d`` (see that module for the semantics).

Entry point (same contract as the C++ op ``ilsgan_cpu.upfirdn2d``):
    upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain) -> y
x: contiguous NCHW; f: float32 [taps] (separable) or [fh, fw]; y: contiguous NCHW, x's dtype.

One program computes a [BLOCK_H, BLOCK_W] tile of output pixels of one plane, polyphase: for
output o along an axis, s = o*down - p0, only the taps k = k0 + t*up (k0 = -s mod up) hit a
non-zero of the zero-stuffed image, reading input pixel (s + k0)/up + t. The zero-stuffed image is
never formed; up, down and the filter size are compile-time constants (one specialization per
configuration; the hot ones are up=2 / down=2 / up=down=1 with a 4x4 filter), so the tap loops are
unrolled, and the filter is read as uniform scalars (one per phase, selected per output element)
rather than gathered. The effective filter (flipped for a true convolution, times gain; a separable filter as
its outer product) is prepared in float64 and cast to the compute type: float32 for
float16/bfloat16/float32 inputs, float64 for float64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _upfirdn2d_kernel(
    x_ptr, w_ptr, y_ptr,
    H, W, OH, OW, tiles_x, tiles_per_plane,
    PX0, PY0, OFFX, OFFY,
    UPX: tl.constexpr, UPY: tl.constexpr, DOWNX: tl.constexpr, DOWNY: tl.constexpr,
    FW: tl.constexpr, FH: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, ACC_F64: tl.constexpr,
):
    pid = tl.program_id(0)
    plane = pid // tiles_per_plane
    tile = pid % tiles_per_plane
    ty0 = (tile // tiles_x) * BLOCK_H
    tx0 = (tile % tiles_x) * BLOCK_W

    oy = ty0 + tl.arange(0, BLOCK_H)[:, None]  # [BH, 1]
    ox = tx0 + tl.arange(0, BLOCK_W)[None, :]  # [1, BW]
    out_mask = (oy < OH) & (ox < OW)

    # Polyphase bookkeeping; OFF* (multiples of UP*) keep every operand of % and // non-negative.
    sy = oy * DOWNY - PY0 + OFFY
    sx = ox * DOWNX - PX0 + OFFX
    if UPY == 1:
        k0y = 0
        iy0 = sy - OFFY
    else:
        k0y = (UPY - sy % UPY) % UPY
        iy0 = (sy + k0y) // UPY - OFFY // UPY
    if UPX == 1:
        k0x = 0
        ix0 = sx - OFFX
    else:
        k0x = (UPX - sx % UPX) % UPX
        ix0 = (sx + k0x) // UPX - OFFX // UPX

    plane64 = plane.to(tl.int64)
    x_base = x_ptr + plane64 * H * W
    if ACC_F64:
        acc = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK_H, BLOCK_W], dtype=tl.float32)

    # Tap (ty, tx) of an output with phase (k0y, k0x) is w[k0y + ty*UPY, k0x + tx*UPX]: the filter
    # is read as uniform scalars (one per phase) and selected per element, never gathered.
    TY: tl.constexpr = (FH + UPY - 1) // UPY
    TX: tl.constexpr = (FW + UPX - 1) // UPX
    for ty in tl.static_range(TY):
        iy = iy0 + ty
        vy = (iy >= 0) & (iy < H) & (oy < OH)
        for tx in tl.static_range(TX):
            ix = ix0 + tx
            vx = (ix >= 0) & (ix < W) & (ox < OW)
            if UPY == 1 and UPX == 1:
                wv = tl.load(w_ptr + ty * FW + tx).to(acc.dtype)
            else:
                wv = tl.zeros([BLOCK_H, BLOCK_W], dtype=acc.dtype)
                for py in tl.static_range(UPY):
                    if py + ty * UPY < FH:
                        for px in tl.static_range(UPX):
                            if px + tx * UPX < FW:
                                wsc = tl.load(w_ptr + (py + ty * UPY) * FW + px + tx * UPX).to(acc.dtype)
                                if UPY == 1:
                                    sel = k0x == px
                                elif UPX == 1:
                                    sel = k0y == py
                                else:
                                    sel = (k0y == py) & (k0x == px)
                                wv = tl.where(sel, wsc, wv)
            xv = tl.load(x_base + iy * W + ix, mask=vy & vx, other=0.0)
            acc += wv * xv.to(acc.dtype)

    y_base = y_ptr + plane64 * OH * OW
    tl.store(y_base + oy * OW + ox, acc.to(y_ptr.dtype.element_ty), mask=out_mask)


def _effective_filter(f: torch.Tensor, flip_filter: bool, gain: float, dtype: torch.dtype) -> torch.Tensor:
    fd = f.to(torch.float64)
    if fd.dim() == 1:
        fd = torch.outer(fd, fd)
    if not flip_filter:
        fd = fd.flip([0, 1])
    return (fd * gain).to(dtype).contiguous()


def upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain):
    if x.dim() != 4 or f.dim() not in (1, 2):
        raise ValueError("upfirdn2d (triton): x must be 4-D and f 1-D or 2-D")
    if f.device != x.device:
        raise ValueError("upfirdn2d (triton): f and x must be on the same device")
    x = x.contiguous()
    n, c, h, w = (int(s) for s in x.shape)
    fw, fh = int(f.shape[-1]), int(f.shape[0])
    oh = (h * upy + py0 + py1 - fh + downy) // downy
    ow = (w * upx + px0 + px1 - fw + downx) // downx
    if oh < 1 or ow < 1 or h * upy + py0 + py1 < fh or w * upx + px0 + px1 < fw:
        raise ValueError("upfirdn2d (triton): the output would be smaller than 1x1")
    acc64 = x.dtype == torch.float64
    wf = _effective_filter(f, flip_filter, float(gain), torch.float64 if acc64 else torch.float32)
    y = torch.empty([n, c, oh, ow], dtype=x.dtype, device=x.device)
    planes = n * c
    if planes == 0:
        return y
    block_w = 32 if ow > 16 else 16
    block_h = 16 if oh > 8 else 8
    tiles_x = triton.cdiv(ow, block_w)
    tiles_per_plane = tiles_x * triton.cdiv(oh, block_h)
    offx = upx * (max(px0, 0) // upx + 1)
    offy = upy * (max(py0, 0) // upy + 1)
    grid = (planes * tiles_per_plane,)
    _upfirdn2d_kernel[grid](
        x, wf, y, h, w, oh, ow, tiles_x, tiles_per_plane, px0, py0, offx, offy,
        UPX=upx, UPY=upy, DOWNX=downx, DOWNY=downy, FW=fw, FH=fh,
        BLOCK_H=block_h, BLOCK_W=block_w, ACC_F64=acc64,
        num_warps=4,
    )
    return y
