"""Triton kernels for ``ilsgan.ops.bias_act`` (see that module for the semantics).

Entry points (same contract as the C++ ops ``ilsgan_cpu.bias_act_fwd`` / ``bias_act_grad``):
    bias_act_fwd(x, b, dim, act, alpha, gain, clamp) -> y
    bias_act_grad(g, x, b, y, dy, order, dim, act, alpha, gain, clamp, need_db) -> (dx, db)

x, y, g, dy are dense with identical strides (contiguous or channels_last). The element at memory
offset o has channel (o // inner) % C, inner = stride(dim). Forward and gradients without a bias
gradient are flat element-wise kernels. With the bias gradient the reduction is fused:
  * inner > 1 (NCHW, dim=1): grid (C, SPLIT); each program walks [BO, BI] tiles of its channel
    (contiguous along inner) and writes one partial sum;
  * inner == 1 (channels_last, or the last dim): grid (C / BC, SPLIT); [BM, BC] tiles contiguous
    along the channel, per-channel partial sums.
The partials ([SPLIT, C], float32 or float64) are then summed in a fixed order: deterministic, no
atomics. fp16/bf16 are computed in float32, float64 in float64 (scalars then come from a small
float64 tensor, since Triton passes Python floats as float32).
"""

from __future__ import annotations

import functools
import math

import torch
import triton
import triton.language as tl

SELU_SCALE = 1.0507009873554804934193349852946
SELU_ALPHA = 1.6732632423543772848170429916717
_INTERPRET = not torch.cuda.is_available()


@triton.jit
def _act(v, alpha, A: tl.constexpr):
    if A == 1:
        r = v
    elif A == 2:
        r = tl.where(v > 0, v, 0.0 * v)
    elif A == 3:
        r = tl.where(v > 0, v, v * alpha)
    elif A == 4:
        e = tl.exp(-2.0 * tl.abs(v))
        t = (1.0 - e) / (1.0 + e)
        r = tl.where(v < 0, -t, t)
    elif A == 5:
        r = 1.0 / (1.0 + tl.exp(-v))
    elif A == 6:
        r = tl.where(v >= 0, v, tl.exp(tl.minimum(v, 0.0 * v)) - 1.0)
    elif A == 7:
        r = tl.where(v >= 0, 1.0507009873554804934193349852946 * v,
                     (1.0507009873554804934193349852946 * 1.6732632423543772848170429916717)
                     * (tl.exp(tl.minimum(v, 0.0 * v)) - 1.0))
    elif A == 8:
        r = tl.maximum(v, 0.0 * v) + tl.log(1.0 + tl.exp(-tl.abs(v)))
    else:
        r = v / (1.0 + tl.exp(-v))
    return r


@triton.jit
def _grad_elem(g, xr, yv, dyv, alpha, gain, inv_gain, clamp,
               A: tl.constexpr, ORDER: tl.constexpr, XSRC: tl.constexpr, CLAMP: tl.constexpr):
    yy = yv * inv_gain
    zero = 0.0 * g
    if A == 1:
        d = zero + 1.0
    elif A == 2:
        if XSRC:
            d = tl.where(xr > 0, zero + 1.0, zero)
        else:
            d = tl.where(yy > 0, zero + 1.0, zero)
    elif A == 3:
        if XSRC:
            d = tl.where(xr > 0, zero + 1.0, zero + alpha)
        else:
            d = tl.where(yy > 0, zero + 1.0, zero + alpha)
    elif A == 4:
        d = 1.0 - yy * yy
        if ORDER == 2:
            d = d * (-2.0 * yy)
    elif A == 5:
        d = yy * (1.0 - yy)
        if ORDER == 2:
            d = d * (1.0 - 2.0 * yy)
    elif A == 6:
        if ORDER == 1:
            d = tl.where(yy >= 0, zero + 1.0, yy + 1.0)
        else:
            d = tl.where(yy >= 0, zero, yy + 1.0)
    elif A == 7:
        if ORDER == 1:
            d = tl.where(yy >= 0, zero + 1.0507009873554804934193349852946,
                         yy + 1.0507009873554804934193349852946 * 1.6732632423543772848170429916717)
        else:
            d = tl.where(yy >= 0, zero, yy + 1.0507009873554804934193349852946 * 1.6732632423543772848170429916717)
    elif A == 8:
        c = tl.exp(-yy)
        d = 1.0 - c
        if ORDER == 2:
            d = d * c
    else:
        xs = tl.minimum(xr, 0.0 * xr + 40.0)
        c = tl.exp(xs)
        dd = c + 1.0
        if ORDER == 1:
            d = tl.where(xr > 40.0, zero + 1.0, c * (xs + dd) / (dd * dd))
        else:
            d = tl.where(xr > 40.0, zero, c * (xs * (2.0 - dd) + 2.0 * dd) / (dd * dd * dd))
    d = d * gain * g
    if ORDER == 2:
        d = d * dyv
    if CLAMP:
        if XSRC:
            v = _act(xr, alpha, A) * gain
        else:
            v = yv
        d = tl.where((v > -clamp) & (v < clamp), d, zero)
    return d


@triton.jit
def _load_params(P, alpha, gain, inv_gain, clamp, P_PTR: tl.constexpr):
    if P_PTR:
        alpha = tl.load(P + 0)
        gain = tl.load(P + 1)
        inv_gain = tl.load(P + 2)
        clamp = tl.load(P + 3)
    return alpha, gain, inv_gain, clamp


@triton.jit
def _to_compute(v, F64: tl.constexpr):
    if F64:
        r = v.to(tl.float64)
    else:
        r = v.to(tl.float32)
    return r


@triton.jit
def _fwd_kernel(X, B, Y, P, N, C, INNER, alpha, gain, inv_gain, clamp,
                A: tl.constexpr, HAS_B: tl.constexpr, CLAMP: tl.constexpr, F64: tl.constexpr,
                P_PTR: tl.constexpr, BIG: tl.constexpr, BLOCK: tl.constexpr):
    alpha, gain, inv_gain, clamp = _load_params(P, alpha, gain, inv_gain, clamp, P_PTR)
    pid = tl.program_id(0)
    if BIG:
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    else:
        offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    v = _to_compute(tl.load(X + offs, mask=mask, other=0.0), F64)
    if HAS_B:
        c = (offs // INNER) % C
        v = v + _to_compute(tl.load(B + c, mask=mask, other=0.0), F64)
    r = _act(v, alpha, A) * gain
    if CLAMP:
        r = tl.minimum(tl.maximum(r, -clamp), clamp)
    tl.store(Y + offs, r.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _load_grad_inputs(G, X, B, Yt, DY, offs, c, mask, F64: tl.constexpr, ORDER: tl.constexpr,
                      XSRC: tl.constexpr, HAS_B: tl.constexpr, READ_Y: tl.constexpr):
    g = _to_compute(tl.load(G + offs, mask=mask, other=0.0), F64)
    zero = 0.0 * g
    xr = zero
    yv = zero
    dyv = zero
    if XSRC:
        xr = _to_compute(tl.load(X + offs, mask=mask, other=0.0), F64)
        if HAS_B:
            xr = xr + _to_compute(tl.load(B + c, mask=mask, other=0.0), F64)
    if READ_Y:
        yv = _to_compute(tl.load(Yt + offs, mask=mask, other=0.0), F64)
    if ORDER == 2:
        dyv = _to_compute(tl.load(DY + offs, mask=mask, other=0.0), F64)
    return g, xr, yv, dyv


@triton.jit
def _grad_flat_kernel(G, X, B, Yt, DY, OUT, P, N, C, INNER, alpha, gain, inv_gain, clamp,
                      A: tl.constexpr, ORDER: tl.constexpr, XSRC: tl.constexpr, HAS_B: tl.constexpr,
                      READ_Y: tl.constexpr, CLAMP: tl.constexpr, F64: tl.constexpr, P_PTR: tl.constexpr,
                      BIG: tl.constexpr, BLOCK: tl.constexpr):
    alpha, gain, inv_gain, clamp = _load_params(P, alpha, gain, inv_gain, clamp, P_PTR)
    pid = tl.program_id(0)
    if BIG:
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    else:
        offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N
    c = (offs // INNER) % C
    g, xr, yv, dyv = _load_grad_inputs(G, X, B, Yt, DY, offs, c, mask, F64, ORDER, XSRC, HAS_B, READ_Y)
    d = _grad_elem(g, xr, yv, dyv, alpha, gain, inv_gain, clamp, A, ORDER, XSRC, CLAMP)
    tl.store(OUT + offs, d.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _grad_rows_db_kernel(G, X, B, Yt, DY, OUT, PART, P, O, C, I, alpha, gain, inv_gain, clamp,
                         A: tl.constexpr, ORDER: tl.constexpr, XSRC: tl.constexpr, HAS_B: tl.constexpr,
                         READ_Y: tl.constexpr, CLAMP: tl.constexpr, F64: tl.constexpr, P_PTR: tl.constexpr,
                         BO: tl.constexpr, BI: tl.constexpr):
    # inner > 1: program (c, s) reduces channel c over rows o = s*BO, s*BO + SPLIT*BO, ...
    alpha, gain, inv_gain, clamp = _load_params(P, alpha, gain, inv_gain, clamp, P_PTR)
    c = tl.program_id(0)
    s = tl.program_id(1)
    split = tl.num_programs(1)
    ro = tl.arange(0, BO)
    ri = tl.arange(0, BI)
    if F64:
        acc = tl.zeros([BO, BI], dtype=tl.float64)
    else:
        acc = tl.zeros([BO, BI], dtype=tl.float32)
    cc = tl.zeros([BO, BI], dtype=tl.int32) + c
    for o0 in range(s * BO, O, split * BO):
        o = o0 + ro
        row = (o.to(tl.int64) * C + c) * I
        for i0 in range(0, I, BI):
            i = i0 + ri
            mask = (o < O)[:, None] & (i < I)[None, :]
            offs = row[:, None] + i[None, :]
            g, xr, yv, dyv = _load_grad_inputs(G, X, B, Yt, DY, offs, cc, mask, F64, ORDER, XSRC, HAS_B, READ_Y)
            d = _grad_elem(g, xr, yv, dyv, alpha, gain, inv_gain, clamp, A, ORDER, XSRC, CLAMP)
            tl.store(OUT + offs, d.to(OUT.dtype.element_ty), mask=mask)
            acc += tl.where(mask, d, 0.0 * d)
    total = tl.sum(tl.sum(acc, axis=1), axis=0)
    tl.store(PART + s * C + c, total)


@triton.jit
def _grad_cl_db_kernel(G, X, B, Yt, DY, OUT, PART, P, M, C, alpha, gain, inv_gain, clamp,
                       A: tl.constexpr, ORDER: tl.constexpr, XSRC: tl.constexpr, HAS_B: tl.constexpr,
                       READ_Y: tl.constexpr, CLAMP: tl.constexpr, F64: tl.constexpr, P_PTR: tl.constexpr,
                       BM: tl.constexpr, BC: tl.constexpr):
    # inner == 1: the tensor is [M, C] row-major; program (cb, s) reduces channels cb*BC.. over rows.
    alpha, gain, inv_gain, clamp = _load_params(P, alpha, gain, inv_gain, clamp, P_PTR)
    cb = tl.program_id(0)
    s = tl.program_id(1)
    split = tl.num_programs(1)
    ch = cb * BC + tl.arange(0, BC)
    cmask = ch < C
    rm = tl.arange(0, BM)
    if F64:
        acc = tl.zeros([BM, BC], dtype=tl.float64)
    else:
        acc = tl.zeros([BM, BC], dtype=tl.float32)
    cc = tl.zeros([BM, BC], dtype=tl.int32) + ch[None, :]
    for m0 in range(s * BM, M, split * BM):
        m = m0 + rm
        mask = (m < M)[:, None] & cmask[None, :]
        offs = m.to(tl.int64)[:, None] * C + ch[None, :]
        g, xr, yv, dyv = _load_grad_inputs(G, X, B, Yt, DY, offs, cc, mask, F64, ORDER, XSRC, HAS_B, READ_Y)
        d = _grad_elem(g, xr, yv, dyv, alpha, gain, inv_gain, clamp, A, ORDER, XSRC, CLAMP)
        tl.store(OUT + offs, d.to(OUT.dtype.element_ty), mask=mask)
        acc += tl.where(mask, d, 0.0 * d)
    tl.store(PART + s * C + ch, tl.sum(acc, axis=0), mask=cmask)


# ------------------------------------------------------------------------------------------------
# Host side.


@functools.lru_cache(maxsize=None)
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _layout(t: torch.Tensor, dim: int, channels: bool):
    n = t.numel()
    if channels and t.dim() > 0 and t.size(dim) > 1:
        return n, t.size(dim), max(1, t.stride(dim))
    return n, 1, max(1, n)


def _params(dtype, device, alpha, gain, clamp):
    inv_gain = 1.0 / gain if gain != 0 else 0.0
    f64 = dtype == torch.float64
    if f64:
        p = torch.tensor([alpha, gain, inv_gain, clamp], dtype=torch.float64, device=device)
        return f64, True, p, (alpha, gain, inv_gain, clamp)
    return f64, False, None, (alpha, gain, inv_gain, clamp)


def _check(x: torch.Tensor, name: str, like: torch.Tensor = None):
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x.is_contiguous()):
        raise ValueError(f"bias_act (triton): {name} must be dense (contiguous or channels_last)")
    if like is not None and (x.shape != like.shape or (x.stride() != like.stride() and x.numel() > 1)):
        raise ValueError(f"bias_act (triton): {name} must have the shape and strides of the other inputs")


def bias_act_fwd(x, b, dim, act, alpha, gain, clamp):
    _check(x, "x")
    y = torch.empty_like(x)
    n, C, inner = _layout(x, dim, b is not None)
    if n == 0:
        return y
    f64, p_ptr, p, (alpha, gain, inv_gain, clamp_v) = _params(x.dtype, x.device, alpha, gain, clamp)
    block = 1024 if _INTERPRET else 2048
    grid = (triton.cdiv(n, block),)
    _fwd_kernel[grid](
        x, b if b is not None else x, y, p if p is not None else x, n, C, inner, alpha, gain, inv_gain, clamp_v,
        A=act, HAS_B=b is not None, CLAMP=clamp >= 0, F64=f64, P_PTR=p_ptr, BIG=n >= 2**31 - block,
        BLOCK=block, num_warps=8 if not _INTERPRET else 1,
    )
    return y


def bias_act_grad(g, x, b, y, dy, order, dim, act, alpha, gain, clamp, need_db):
    _check(g, "g")
    for t, name in ((x, "x"), (y, "y"), (dy, "dy")):
        if t is not None:
            _check(t, name, g)
    if order not in (1, 2):
        raise ValueError("bias_act_grad (triton): order must be 1 or 2")
    if act == 9:
        xsrc = True
    elif act <= 3:
        xsrc = y is None and x is not None
    else:
        xsrc = False
    if xsrc and x is None:
        raise ValueError("bias_act_grad (triton): this activation needs x")
    if not xsrc and y is None and not (act == 1 and clamp < 0):
        raise ValueError("bias_act_grad (triton): this activation needs y")
    if order == 2 and (dy is None or act < 4):
        raise ValueError("bias_act_grad (triton): order 2 needs dy and a smooth activation")
    read_y = (not xsrc) and (act != 1 or clamp >= 0)
    has_b = xsrc and b is not None

    out = torch.empty_like(g)
    n, C, inner = _layout(g, dim, need_db or b is not None)
    db = torch.zeros([g.size(dim)] if need_db else [0], dtype=g.dtype, device=g.device)
    if n == 0:
        return out, db
    f64, p_ptr, p, (alpha, gain, inv_gain, clamp_v) = _params(g.dtype, g.device, alpha, gain, clamp)
    dummy = g
    ptrs = (g, x if x is not None else dummy, b if b is not None else dummy, y if y is not None else dummy,
            dy if dy is not None else dummy, out)
    flags = dict(A=act, ORDER=order, XSRC=xsrc, HAS_B=has_b, READ_Y=read_y, CLAMP=clamp >= 0, F64=f64, P_PTR=p_ptr)
    scalars = (alpha, gain, inv_gain, clamp_v)
    pp = p if p is not None else dummy
    warps = 1 if _INTERPRET else 8
    if not need_db:
        block = 1024 if _INTERPRET else 2048
        grid = (triton.cdiv(n, block),)
        _grad_flat_kernel[grid](*ptrs, pp, n, C, inner, *scalars, **flags, BIG=n >= 2**31 - block,
                                BLOCK=block, num_warps=warps)
        return out, db
    part_dtype = torch.float64 if f64 else torch.float32
    target = 1 if _INTERPRET else 4 * _sm_count(g.device.index if g.device.index is not None else 0)
    if inner > 1 or C == 1:
        C_eff = C if C > 1 else 1
        I = inner if C > 1 else n
        O = n // (C_eff * I)
        bi = min(triton.next_power_of_2(I), 1024 if _INTERPRET else 512)
        bo = max(1, (4096 if _INTERPRET else 2048) // bi)
        bo = min(bo, triton.next_power_of_2(O))
        split = max(1, min(triton.cdiv(O, bo), triton.cdiv(target, C_eff)))
        part = torch.empty([split, C_eff], dtype=part_dtype, device=g.device)
        _grad_rows_db_kernel[(C_eff, split)](*ptrs, part, pp, O, C_eff, I, *scalars, **flags, BO=bo, BI=bi,
                                            num_warps=warps)
    else:
        M = n // C
        bc = min(triton.next_power_of_2(C), 128)
        bm = max(1, (4096 if _INTERPRET else 2048) // bc)
        bm = min(bm, triton.next_power_of_2(M))
        nb = triton.cdiv(C, bc)
        split = max(1, min(triton.cdiv(M, bm), triton.cdiv(target, nb)))
        part = torch.empty([split, C], dtype=part_dtype, device=g.device)
        _grad_cl_db_kernel[(nb, split)](*ptrs, part, pp, M, C, *scalars, **flags, BM=bm, BC=bc, num_warps=warps)
    db.copy_(part.sum(0))
    return out, db
