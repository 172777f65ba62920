"""Triton kernels for ``ilsgan.ops.ils_terms`` / ``mask_terms`` (see that module for the semantics).

Entry points (same contract as the C++ ops ``ilsgan_cpu.*``):
    ils_terms_fwd(f, b, m, perm1, perm2, dist) -> [N,4]
    ils_terms_bwd(g, f, b, m, perm1, perm2, inv1, inv2, dist) -> (gf, gb, gm)
    mask_terms_fwd(m) -> [N,2];   mask_terms_bwd(g, m) -> gm

Forward reductions: grid (T, N); program t of sample n sums a fixed chunk of C*H*W elements into a
[N,T,k] partial tensor, and the partials are summed by torch in a fixed order: deterministic, no
atomics. The backward is element-wise over (pixel block, sample) with a loop over the channels
(the mask gradient is a channel sum kept in registers); the negative pairs' gradient into the
permuted side is gathered through the inverse permutation. fp16/bf16 are computed in float32,
float64 in float64; the scale 1/(C*H*W) is applied in torch (float64-exact).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_BLOCK = 1024
_ITERS = 4  # blocks per forward program (a chunk of 4096 elements)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _out_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@triton.jit
def _phi(u, DIST: tl.constexpr):
    if DIST == 0:
        r = tl.abs(u)
    else:
        r = 0.5 * u * u
    return r


@triton.jit
def _dphi(u, DIST: tl.constexpr):
    if DIST == 0:
        r = (u > 0).to(u.dtype) - (u < 0).to(u.dtype)
    else:
        r = u
    return r


@triton.jit
def _ils_fwd_kernel(F, B, M, P1, P2, PART, C, HW, T, DIST: tl.constexpr, ACC: tl.constexpr,
                    BLOCK: tl.constexpr, ITERS: tl.constexpr):
    t = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    p1 = tl.load(P1 + n)
    p2 = tl.load(P2 + n)
    D = C * HW
    a0 = tl.zeros([BLOCK], dtype=ACC)
    a1 = tl.zeros([BLOCK], dtype=ACC)
    a2 = tl.zeros([BLOCK], dtype=ACC)
    a3 = tl.zeros([BLOCK], dtype=ACC)
    for it in range(ITERS):
        d = (t * ITERS + it) * BLOCK + tl.arange(0, BLOCK)
        ok = d < D
        i = d % HW
        m = tl.load(M + n * HW + i, mask=ok, other=0.0).to(ACC)
        f = tl.load(F + n * D + d, mask=ok, other=0.0).to(ACC)
        b = tl.load(B + n * D + d, mask=ok, other=0.0).to(ACC)
        mb1 = tl.load(M + p1 * HW + i, mask=ok, other=0.0).to(ACC)
        bb1 = tl.load(B + p1 * D + d, mask=ok, other=0.0).to(ACC)
        mf2 = 1.0 - tl.load(M + p2 * HW + i, mask=ok, other=0.0).to(ACC)
        ff2 = tl.load(F + p2 * D + d, mask=ok, other=0.0).to(ACC)
        om = 1.0 - m
        y1 = m * f
        x1 = m * b
        x2 = om * f
        y2 = om * b
        a0 += _phi(x1 - y1, DIST)
        a1 += _phi(mb1 * bb1 - y1, DIST)
        a2 += _phi(x2 - y2, DIST)
        a3 += _phi(mf2 * ff2 - y2, DIST)
    o = PART + (n * T + t) * 4
    tl.store(o + 0, tl.sum(a0, axis=0))
    tl.store(o + 1, tl.sum(a1, axis=0))
    tl.store(o + 2, tl.sum(a2, axis=0))
    tl.store(o + 3, tl.sum(a3, axis=0))


@triton.jit
def _ils_bwd_kernel(G, F, B, M, P1, P2, Q1, Q2, GF, GB, GM, C, HW, DIST: tl.constexpr, ACC: tl.constexpr,
                    BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    j = tl.program_id(1).to(tl.int64)
    i = pid * BLOCK + tl.arange(0, BLOCK)
    ok = i < HW
    p1 = tl.load(P1 + j)
    p2 = tl.load(P2 + j)
    q1 = tl.load(Q1 + j)
    q2 = tl.load(Q2 + j)
    g0 = tl.load(G + 4 * j).to(ACC)  # G is already scaled by 1/(C*H*W)
    g1 = tl.load(G + 4 * j + 1).to(ACC)
    g2 = tl.load(G + 4 * j + 2).to(ACC)
    g3 = tl.load(G + 4 * j + 3).to(ACC)
    h1 = tl.load(G + 4 * q1 + 1).to(ACC)
    h3 = tl.load(G + 4 * q2 + 3).to(ACC)
    m = tl.load(M + j * HW + i, mask=ok, other=0.0).to(ACC)
    mp1 = tl.load(M + p1 * HW + i, mask=ok, other=0.0).to(ACC)
    mq1 = tl.load(M + q1 * HW + i, mask=ok, other=0.0).to(ACC)
    omp2 = 1.0 - tl.load(M + p2 * HW + i, mask=ok, other=0.0).to(ACC)
    omq2 = 1.0 - tl.load(M + q2 * HW + i, mask=ok, other=0.0).to(ACC)
    om = 1.0 - m
    gm = tl.zeros([BLOCK], dtype=ACC)
    D = C * HW
    for c in range(C):
        off = c * HW + i
        f = tl.load(F + j * D + off, mask=ok, other=0.0).to(ACC)
        b = tl.load(B + j * D + off, mask=ok, other=0.0).to(ACC)
        bp1 = tl.load(B + p1 * D + off, mask=ok, other=0.0).to(ACC)
        fq1 = tl.load(F + q1 * D + off, mask=ok, other=0.0).to(ACC)
        fp2 = tl.load(F + p2 * D + off, mask=ok, other=0.0).to(ACC)
        bq2 = tl.load(B + q2 * D + off, mask=ok, other=0.0).to(ACC)
        y1 = m * f
        x1 = m * b
        x2 = om * f
        y2 = om * b
        d0 = g0 * _dphi(x1 - y1, DIST)
        d1 = g1 * _dphi(mp1 * bp1 - y1, DIST)
        e1 = h1 * _dphi(x1 - mq1 * fq1, DIST)
        d2 = g2 * _dphi(x2 - y2, DIST)
        d3 = g3 * _dphi(omp2 * fp2 - y2, DIST)
        e3 = h3 * _dphi(x2 - omq2 * bq2, DIST)
        gf = m * (-d0 - d1) + om * (d2 + e3)
        gb = m * (d0 + e1) - om * (d2 + d3)
        gm += d0 * (b - f) - d1 * f + e1 * b - d2 * (f - b) + d3 * b - e3 * f
        gf = tl.where(tl.abs(f) < 1.0, gf, 0.0 * gf)
        gb = tl.where(tl.abs(b) < 1.0, gb, 0.0 * gb)
        tl.store(GF + j * D + off, gf, mask=ok)
        tl.store(GB + j * D + off, gb, mask=ok)
    tl.store(GM + j * HW + i, gm, mask=ok)


@triton.jit
def _mask_fwd_kernel(M, PART, D, T, ACC: tl.constexpr, BLOCK: tl.constexpr, ITERS: tl.constexpr):
    t = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    a0 = tl.zeros([BLOCK], dtype=ACC)
    a1 = tl.zeros([BLOCK], dtype=ACC)
    for it in range(ITERS):
        d = (t * ITERS + it) * BLOCK + tl.arange(0, BLOCK)
        ok = d < D
        v = tl.load(M + n * D + d, mask=ok, other=0.0).to(ACC)
        a0 += tl.where(ok, tl.minimum(v, 1.0 - v), 0.0 * v)
        a1 += v
    o = PART + (n * T + t) * 2
    tl.store(o + 0, tl.sum(a0, axis=0))
    tl.store(o + 1, tl.sum(a1, axis=0))


@triton.jit
def _mask_bwd_kernel(G, M, GM, D, ACC: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    d = pid * BLOCK + tl.arange(0, BLOCK)
    ok = d < D
    g0 = tl.load(G + 2 * n).to(ACC)
    g1 = tl.load(G + 2 * n + 1).to(ACC)
    v = tl.load(M + n * D + d, mask=ok, other=0.0).to(ACC)
    s = (v < 0.5).to(ACC) - (v > 0.5).to(ACC)
    tl.store(GM + n * D + d, g0 * s + g1, mask=ok)


def ils_terms_fwd(f, b, m, perm1, perm2, dist):
    N, C, H, W = f.shape
    HW, D = H * W, C * H * W
    odt = _out_dtype(f.dtype)
    if f.numel() == 0:
        return torch.zeros((N, 4), dtype=odt, device=f.device)
    T = triton.cdiv(D, _BLOCK * _ITERS)
    part = torch.empty((N, T, 4), dtype=odt, device=f.device)
    _ils_fwd_kernel[(T, N)](f, b, m, perm1, perm2, part, C, HW, T, DIST=int(dist), ACC=_acc(f.dtype),
                            BLOCK=_BLOCK, ITERS=_ITERS)
    return (part.to(torch.float64).sum(1) / D).to(odt)


def ils_terms_bwd(g, f, b, m, perm1, perm2, inv1, inv2, dist):
    N, C, H, W = f.shape
    HW, D = H * W, C * H * W
    gf, gb, gm = torch.empty_like(f), torch.empty_like(b), torch.empty_like(m)
    if f.numel() == 0:
        return gf, gb, gm.zero_()
    gk = (g.to(torch.float64) / D).to(_out_dtype(f.dtype)).contiguous()
    _ils_bwd_kernel[(triton.cdiv(HW, _BLOCK), N)](gk, f, b, m, perm1, perm2, inv1, inv2, gf, gb, gm, C, HW,
                                                   DIST=int(dist), ACC=_acc(f.dtype), BLOCK=_BLOCK)
    return gf, gb, gm


def mask_terms_fwd(m):
    N = m.shape[0]
    D = m.numel() // max(N, 1)
    odt = _out_dtype(m.dtype)
    if m.numel() == 0:
        return torch.zeros((N, 2), dtype=odt, device=m.device)
    T = triton.cdiv(D, _BLOCK * _ITERS)
    part = torch.empty((N, T, 2), dtype=odt, device=m.device)
    _mask_fwd_kernel[(T, N)](m, part, D, T, ACC=_acc(m.dtype), BLOCK=_BLOCK, ITERS=_ITERS)
    return (part.to(torch.float64).sum(1) / D).to(odt)


def mask_terms_bwd(g, m):
    N = m.shape[0]
    D = m.numel() // max(N, 1)
    gm = torch.empty_like(m)
    if m.numel() == 0:
        return gm
    gk = (g.to(torch.float64) / D).to(_out_dtype(m.dtype)).contiguous()
    _mask_bwd_kernel[(triton.cdiv(D, _BLOCK), N)](gk, m, gm, D, ACC=_acc(m.dtype), BLOCK=_BLOCK)
    return gm
