"""Triton kernels for ``ilsgan.ops.composite`` (see that module for the semantics).

Entry points (same contract as the C++ ops ``ilsgan_cpu.composite_fwd`` / ``composite_bwd``):
    composite_fwd(f, b, m, shift) -> (out, ms)           ms is empty when shift is None
    composite_bwd(go, gms, f, b, m, shift) -> (gf, gb, gm)
on contiguous NCHW tensors, shift int64 [N,2] (tx, ty) or None.

Grid (cdiv(H*W, BLOCK), N): each program owns BLOCK pixels of one sample and loops over the
channels, so the mask (and its shifted address) is computed once per pixel. Shifted reads are
masked loads at the translated address (zero fill): no shifted copy exists. The backward computes,
for the same pixel index, gb at the output position and gf, gm at the input position (adjoint
shift), with gm summed over the channels in registers: one pass, no atomics. fp16/bf16 are
computed in float32, float64 in float64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_BLOCK = 1024


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


@triton.jit
def _fwd_kernel(F, B, M, S, O, MS, C, H, W, HAS_SHIFT: tl.constexpr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    HW = H * W
    i = pid * BLOCK + tl.arange(0, BLOCK)
    inb = i < HW
    y = i // W
    x = i % W
    if HAS_SHIFT:
        tx = tl.load(S + 2 * n)
        ty = tl.load(S + 2 * n + 1)
        sy = y - ty
        sx = x - tx
        valid = inb & (sy >= 0) & (sy < H) & (sx >= 0) & (sx < W)
        src = sy * W + sx
    else:
        valid = inb
        src = i
    ms = tl.load(M + n * HW + src, mask=valid, other=0.0).to(ACC)
    if HAS_SHIFT:
        tl.store(MS + n * HW + i, ms, mask=inb)
    for c in range(C):
        base = (n * C + c) * HW
        fv = tl.load(F + base + src, mask=valid, other=0.0).to(ACC)
        bv = tl.load(B + base + i, mask=inb, other=0.0).to(ACC)
        tl.store(O + base + i, ms * fv + (1.0 - ms) * bv, mask=inb)


@triton.jit
def _bwd_kernel(GO, GMS, F, B, M, S, GF, GB, GM, C, H, W, HAS_SHIFT: tl.constexpr, HAS_GMS: tl.constexpr,
                ACC: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    HW = H * W
    i = pid * BLOCK + tl.arange(0, BLOCK)
    inb = i < HW
    y = i // W
    x = i % W
    if HAS_SHIFT:
        tx = tl.load(S + 2 * n)
        ty = tl.load(S + 2 * n + 1)
        sy = y - ty
        sx = x - tx
        v_in = inb & (sy >= 0) & (sy < H) & (sx >= 0) & (sx < W)  # source of output pixel i
        src = sy * W + sx
        oy = y + ty
        ox = x + tx
        v_out = inb & (oy >= 0) & (oy < H) & (ox >= 0) & (ox < W)  # target of input pixel i
        dst = oy * W + ox
    else:
        v_in = inb
        src = i
        v_out = inb
        dst = i
    ms = tl.load(M + n * HW + src, mask=v_in, other=0.0).to(ACC)  # shifted mask at output pixel i
    mi = tl.load(M + n * HW + i, mask=inb, other=0.0).to(ACC)  # mask at input pixel i
    if HAS_GMS:
        gm = tl.load(GMS + n * HW + dst, mask=v_out, other=0.0).to(ACC)
    else:
        gm = tl.zeros([BLOCK], dtype=ACC)
    for c in range(C):
        base = (n * C + c) * HW
        g_o = tl.load(GO + base + i, mask=inb, other=0.0).to(ACC)
        tl.store(GB + base + i, g_o * (1.0 - ms), mask=inb)
        g_t = tl.load(GO + base + dst, mask=v_out, other=0.0).to(ACC)
        b_t = tl.load(B + base + dst, mask=v_out, other=0.0).to(ACC)
        f_i = tl.load(F + base + i, mask=inb, other=0.0).to(ACC)
        tl.store(GF + base + i, g_t * mi, mask=inb)
        gm += g_t * f_i - g_t * b_t
    tl.store(GM + n * HW + i, gm, mask=inb)


def _grid(N, HW):
    return (triton.cdiv(HW, _BLOCK), N)


def composite_fwd(f, b, m, shift):
    N, C, H, W = f.shape
    out = torch.empty_like(f)
    ms = torch.empty_like(m) if shift is not None else m.new_empty((0,))
    if f.numel() == 0:
        return out, ms
    s = shift if shift is not None else f.new_zeros((1,), dtype=torch.long)
    _fwd_kernel[_grid(N, H * W)](
        f, b, m, s, out, ms if shift is not None else out, C, H, W,
        HAS_SHIFT=shift is not None, ACC=_acc(f.dtype), BLOCK=_BLOCK,
    )
    return out, ms


def composite_bwd(go, gms, f, b, m, shift):
    N, C, H, W = f.shape
    gf, gb, gm = torch.empty_like(f), torch.empty_like(b), torch.empty_like(m)
    if f.numel() == 0:
        return gf, gb, gm.zero_()
    s = shift if shift is not None else f.new_zeros((1,), dtype=torch.long)
    _bwd_kernel[_grid(N, H * W)](
        go, gms if gms is not None else go, f, b, m, s, gf, gb, gm, C, H, W,
        HAS_SHIFT=shift is not None, HAS_GMS=gms is not None, ACC=_acc(f.dtype), BLOCK=_BLOCK,
    )
    return gf, gb, gm
