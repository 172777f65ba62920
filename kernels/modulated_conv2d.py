"""Triton kernels of modulated_conv2d: the passes around the shared-weight conv.

- ``modconv_epilogue_fwd``: one flat elementwise pass ``y = clamp(act(z*d + noise + b) * gain)``.
- ``modconv_epilogue_bwd``: one pass over ``(dy, z)``; a program owns one sample and a tile of
  pixels and walks all channels in [BLOCK_O, BLOCK_P] tiles, writing ``dz`` and reducing, in the same
  pass, ``sum_hw du*z`` and ``sum_hw du`` per (sample, channel) into per-tile partials (summed
  deterministically afterwards, no atomics) and ``sum_o du`` per pixel (the noise gradient) in
  registers.
- ``modconv_scale_bwd``: same tiling for ``dx = dxs*s`` and ``ds[n,i] = sum_hw dxs*x``.

Layouts: NCHW- or channels_last-contiguous (``CL``), the same for every big tensor of a call.
float16/bfloat16 are converted to float32 after loading; float64 computes in float64 (tests). Scalar
parameters (alpha, gain, clamp) travel in a small tensor of the compute dtype, so float64 runs keep
full precision. Every load/store is masked (the interpreter does not bounds-check).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


@triton.jit
def _act(u, alpha, ACT: tl.constexpr):
    if ACT == 1:
        return u
    elif ACT == 2:
        return tl.where(u > 0, u, 0.0 * u)
    else:
        return tl.where(u > 0, u, u * alpha)


@triton.jit
def _act_d(u, alpha, ACT: tl.constexpr):
    one = u * 0.0 + 1.0
    if ACT == 1:
        return one
    elif ACT == 2:
        return tl.where(u > 0, one, 0.0 * one)
    else:
        return tl.where(u > 0, one, one * alpha)


@triton.jit
def _epi_fwd_kernel(z_ptr, d_ptr, nz_ptr, b_ptr, prm_ptr, y_ptr, total, O, HW,
                    NMODE: tl.constexpr, ACT: tl.constexpr, CL: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    if CL:
        o = offs % O
        p = (offs // O) % HW
    else:
        p = offs % HW
        o = (offs // HW) % O
    n = offs // (O * HW)
    alpha = tl.load(prm_ptr)
    gain = tl.load(prm_ptr + 1)
    clampv = tl.load(prm_ptr + 2)
    acc_t = prm_ptr.dtype.element_ty
    zv = tl.load(z_ptr + offs, mask=mask, other=0).to(acc_t)
    dv = tl.load(d_ptr + n * O + o, mask=mask, other=0)
    bv = tl.load(b_ptr + o, mask=mask, other=0)
    u = zv * dv + bv
    if NMODE == 1:
        u += tl.load(nz_ptr + n * HW + p, mask=mask, other=0)
    if NMODE == 2:
        u += tl.load(nz_ptr + offs, mask=mask, other=0)
    v = _act(u, alpha, ACT) * gain
    v = tl.minimum(tl.maximum(v, -clampv), clampv)
    tl.store(y_ptr + offs, v.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _epi_bwd_kernel(dy_ptr, z_ptr, d_ptr, nz_ptr, b_ptr, prm_ptr, dz_ptr, ep_ptr, sp_ptr, dn_ptr, O, HW, NPB,
                    NMODE: tl.constexpr, ACT: tl.constexpr, CL: tl.constexpr,
                    BLOCK_O: tl.constexpr, BLOCK_P: tl.constexpr):
    pb = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < HW
    alpha = tl.load(prm_ptr)
    gain = tl.load(prm_ptr + 1)
    clampv = tl.load(prm_ptr + 2)
    acc_t = prm_ptr.dtype.element_ty
    base = n * O * HW
    dn_acc = tl.zeros([BLOCK_P], dtype=acc_t)
    if NMODE == 1:
        nzp = tl.load(nz_ptr + n * HW + p, mask=pm, other=0)
    for o0 in range(0, O, BLOCK_O):
        o = o0 + tl.arange(0, BLOCK_O)
        om = o < O
        if CL:
            off = base + p[None, :].to(tl.int64) * O + o[:, None]
        else:
            off = base + o[:, None].to(tl.int64) * HW + p[None, :]
        m2 = om[:, None] & pm[None, :]
        zv = tl.load(z_ptr + off, mask=m2, other=0).to(acc_t)
        g = tl.load(dy_ptr + off, mask=m2, other=0).to(acc_t)
        dv = tl.load(d_ptr + n * O + o, mask=om, other=0)
        bv = tl.load(b_ptr + o, mask=om, other=0)
        u = zv * dv[:, None] + bv[:, None]
        if NMODE == 1:
            u += nzp[None, :]
        if NMODE == 2:
            u += tl.load(nz_ptr + off, mask=m2, other=0)
        v = _act(u, alpha, ACT) * gain
        keep = (v >= -clampv) & (v <= clampv) & m2
        du = tl.where(keep, g * gain * _act_d(u, alpha, ACT), 0.0 * g)
        tl.store(dz_ptr + off, (du * dv[:, None]).to(dz_ptr.dtype.element_ty), mask=m2)
        pidx = (n * NPB + pb) * O + o
        tl.store(ep_ptr + pidx, tl.sum(du * zv, axis=1), mask=om)
        tl.store(sp_ptr + pidx, tl.sum(du, axis=1), mask=om)
        if NMODE == 1:
            dn_acc += tl.sum(du, axis=0)
        if NMODE == 2:
            tl.store(dn_ptr + off, du, mask=m2)
    if NMODE == 1:
        tl.store(dn_ptr + n * HW + p, dn_acc, mask=pm)


@triton.jit
def _scale_bwd_kernel(g_ptr, x_ptr, s_ptr, dx_ptr, dsp_ptr, C, HW, NPB, NEED_DS: tl.constexpr, CL: tl.constexpr,
                      BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    pb = tl.program_id(0)
    n = tl.program_id(1).to(tl.int64)
    p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    pm = p < HW
    base = n * C * HW
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cm = c < C
        if CL:
            off = base + p[None, :].to(tl.int64) * C + c[:, None]
        else:
            off = base + c[:, None].to(tl.int64) * HW + p[None, :]
        m2 = cm[:, None] & pm[None, :]
        sv = tl.load(s_ptr + n * C + c, mask=cm, other=0)
        gv = tl.load(g_ptr + off, mask=m2, other=0).to(sv.dtype)
        tl.store(dx_ptr + off, (gv * sv[:, None]).to(dx_ptr.dtype.element_ty), mask=m2)
        if NEED_DS:
            xv = tl.load(x_ptr + off, mask=m2, other=0).to(sv.dtype)
            tl.store(dsp_ptr + (n * NPB + pb) * C + c, tl.sum(gv * xv, axis=1), mask=cm)


# ------------------------------------------------------------------------------------------------
# Host wrappers (same signatures as torch.ops.ilsgan_cpu.*).


def _is_cl(t: torch.Tensor) -> bool:
    if t.is_contiguous():
        return False
    if t.is_contiguous(memory_format=torch.channels_last):
        return True
    raise ValueError("modulated_conv2d (triton): tensors must be NCHW- or channels_last-contiguous")


def _acc(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _interp() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _tiles(rows: int, hw: int):
    """[BLOCK_rows, BLOCK_P] tile: 2K elements on a GPU; as large as possible in the interpreter."""
    if _interp():
        return triton.next_power_of_2(max(rows, 1)), triton.next_power_of_2(max(hw, 1))
    bp = min(128, triton.next_power_of_2(max(hw, 1)))
    bo = max(1, min(triton.next_power_of_2(max(rows, 1)), 2048 // bp))
    return bo, bp


def _params(alpha, gain, clamp, dtype, device):
    c = math.inf if clamp < 0 else clamp
    return torch.tensor([alpha, gain, c], dtype=dtype, device=device)


def _common(z, d, noise, b, noise_mode, act):
    if z.dim() != 4:
        raise ValueError("modulated_conv2d (triton): z must be 4-D")
    if act not in (1, 2, 3):
        raise ValueError("modulated_conv2d (triton): act must be 1, 2 or 3")
    n, o = z.shape[:2]
    hw = z.shape[2] * z.shape[3]
    acc = _acc(z)
    d = torch.ones(n, o, dtype=acc, device=z.device) if d is None else d
    b = torch.zeros(o, dtype=acc, device=z.device) if b is None else b
    if d.dtype != acc or b.dtype != acc or d.shape != (n, o) or b.shape != (o,):
        raise ValueError("modulated_conv2d (triton): d [N,O] and b [O] must have the compute dtype")
    d, b = d.contiguous(), b.contiguous()
    if noise_mode == 0:
        nz = d
    elif noise is None or noise.dtype != acc:
        raise ValueError("modulated_conv2d (triton): noise_mode != 0 needs noise of the compute dtype")
    elif noise_mode == 1:
        if noise.numel() != n * hw or not noise.is_contiguous():
            raise ValueError("modulated_conv2d (triton): noise (mode 1) must be a contiguous [N, H*W] tensor")
        nz = noise
    else:
        if noise.shape != z.shape or noise.stride() != z.stride():
            raise ValueError("modulated_conv2d (triton): noise (mode 2) must have z's shape and layout")
        nz = noise
    return n, o, hw, acc, d, b, nz


def modconv_epilogue_fwd(z, d, noise, b, noise_mode, act, alpha, gain, clamp):
    n, o, hw, acc, d, b, nz = _common(z, d, noise, b, noise_mode, act)
    cl = _is_cl(z)
    y = torch.empty_like(z)
    total = z.numel()
    if total == 0:
        return y
    prm = _params(alpha, gain, clamp, acc, z.device)
    block = triton.next_power_of_2(min(total, 1 << 16)) if _interp() else 1024
    grid = (triton.cdiv(total, block),)
    _epi_fwd_kernel[grid](z, d, nz, b, prm, y, total, o, hw, NMODE=noise_mode, ACT=act, CL=cl, BLOCK=block)
    return y


def modconv_epilogue_bwd(dy, z, d, noise, b, noise_mode, act, alpha, gain, clamp, need_dd, need_db, need_dnoise):
    n, o, hw, acc, d, b, nz = _common(z, d, noise, b, noise_mode, act)
    cl = _is_cl(z)
    if dy.shape != z.shape or dy.stride() != z.stride() or dy.dtype != z.dtype:
        raise ValueError("modulated_conv2d (triton): dy must have z's dtype, shape and layout")
    dz = torch.empty_like(z)
    if noise_mode == 1:
        dn = torch.empty(n, hw, dtype=acc, device=z.device)
    elif noise_mode == 2:
        dn = torch.empty_like(z, dtype=acc)
    else:
        dn = torch.empty(0, dtype=acc, device=z.device)
    def empty():
        return torch.empty(0, dtype=acc, device=z.device)

    if z.numel() == 0:
        dd = torch.zeros(n, o, dtype=acc, device=z.device)
        dbp = torch.zeros(n, o, dtype=acc, device=z.device)
        dn.zero_()
    else:
        bo, bp = _tiles(o, hw)
        npb = triton.cdiv(hw, bp)
        ep = torch.empty(n, npb, o, dtype=acc, device=z.device)
        sp = torch.empty(n, npb, o, dtype=acc, device=z.device)
        prm = _params(alpha, gain, clamp, acc, z.device)
        _epi_bwd_kernel[(npb, n)](dy, z, d, nz, b, prm, dz, ep, sp, dn if noise_mode else ep, o, hw, npb,
                                  NMODE=noise_mode, ACT=act, CL=cl, BLOCK_O=bo, BLOCK_P=bp)
        dd = ep.sum(1)
        dbp = sp.sum(1)
    return (dz, dd if need_dd else empty(), dbp.sum(0) if need_db else empty(), dn if need_dnoise else empty())


def modconv_scale_bwd(dxs, x, s, need_ds):
    if x.dim() != 4:
        raise ValueError("modulated_conv2d (triton): x must be 4-D")
    n, c = x.shape[:2]
    hw = x.shape[2] * x.shape[3]
    acc = _acc(x)
    if s.dtype != acc or s.shape != (n, c):
        raise ValueError("modulated_conv2d (triton): s must be [N, C] of the compute dtype")
    if dxs.shape != x.shape or dxs.stride() != x.stride() or dxs.dtype != x.dtype:
        raise ValueError("modulated_conv2d (triton): dxs must have x's dtype, shape and layout")
    s = s.contiguous()
    cl = _is_cl(x)
    dx = torch.empty_like(x)
    if x.numel() == 0:
        return dx, (torch.zeros(n, c, dtype=acc, device=x.device) if need_ds else torch.empty(0, dtype=acc,
                                                                                               device=x.device))
    bc, bp = _tiles(c, hw)
    npb = triton.cdiv(hw, bp)
    dsp = torch.empty(n, npb, c, dtype=acc, device=x.device) if need_ds else s
    _scale_bwd_kernel[(npb, n)](dxs, x, s, dx, dsp, c, hw, npb, NEED_DS=need_ds, CL=cl, BLOCK_C=bc, BLOCK_P=bp)
    ds = dsp.sum(1) if need_ds else torch.empty(0, dtype=acc, device=x.device)
    return dx, ds
