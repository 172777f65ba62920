"""Networks: shapes for every preset, gradients to every parameter, the layered output, truncation,
the CPU float16 fallback, ref vs auto backends, and R1 (double backward) through D."""

import copy
import dataclasses
import math
import warnings

import pytest
import torch

from ilsgan.config import NetworkConfig, get_preset
from ilsgan.networks import (Discriminator, LayeredGenerator, build_networks, compute_dtype, discriminator_kwargs,
                             generator_kwargs, set_impl)

warnings.filterwarnings("ignore", message=".*falling back to the slow 'ref' backend.*")

# A tiny config (16x16, few channels) for the expensive checks.
TINY = NetworkConfig(resolution=16, z_dim=8, w_dim=8, mapping_layers=2, channel_base=128, channel_max=16,
                     num_fp16_res=0)


def _params_without_grad(module):
    return [n for n, p in module.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
            or (p.grad == 0).all()]


# ------------------------------------------------------------------------------------------------
# Presets and API


def test_build_api():
    with pytest.raises(TypeError, match="preset name"):
        build_networks(3)
    with pytest.raises(ValueError, match="resolution"):
        build_networks(get_preset("quick").replace(resolution=48))
    with pytest.raises(ValueError, match="unknown preset"):
        build_networks("nope")


@pytest.mark.parametrize("name,res", [("paper64", 64), ("paper128", 128)])
def test_paper_build_shapes(name, res):
    torch.manual_seed(0)
    G, D = build_networks(name)
    assert (G.z_dim, G.img_resolution, G.img_channels) == (512, res, 3)
    for sub in (G.fg, G.bg):
        syn = sub.synthesis
        chans = {r: syn.channels[r] for r in syn.block_resolutions}
        assert all(c == 256 for r, c in chans.items() if r <= 64)
        if res == 128:
            assert chans[128] == 128
        assert len(sub.mapping.layers) == 8
        assert syn.num_ws == 2 * int(math.log2(res)) - 2
        fp16 = [r for r in syn.block_resolutions if getattr(syn, f"b{r}").use_fp16]
        assert fp16 == syn.block_resolutions[-4:]
    assert G.fg.synthesis.img_channels == 4 and G.bg.synthesis.img_channels == 3
    assert D.block_resolutions[0] == res and D.block_resolutions[-1] == 8
    assert sum(p.numel() for p in G.parameters()) > 1e7


def test_paper64_forward_batch1():
    torch.manual_seed(0)
    G, D = build_networks("paper64")
    with torch.no_grad():
        out = G(torch.randn(1, 512), return_layers=True)
        assert out["composite"].shape == (1, 3, 64, 64) and out["mask"].shape == (1, 1, 64, 64)
        assert D(out["composite"]).shape == (1, 1)
        assert all(torch.isfinite(v).all() for v in out.values())


# ------------------------------------------------------------------------------------------------
# quick preset: full checks


@pytest.fixture(scope="module")
def quick():
    torch.manual_seed(0)
    return build_networks("quick")


def test_quick_shapes_and_layers(quick):
    G, D = quick
    assert (G.z_dim, G.img_resolution, G.img_channels) == (128, 64, 3)
    z = torch.randn(4, G.z_dim)
    out = G(z, return_layers=True)
    r = G.img_resolution
    assert set(out) == {"composite", "fg", "bg", "mask", "mask_logits"}
    for k, c in (("composite", 3), ("fg", 3), ("bg", 3), ("mask", 1), ("mask_logits", 1)):
        assert out[k].shape == (4, c, r, r) and out[k].dtype == torch.float32
    assert out["mask"].min() >= 0 and out["mask"].max() <= 1
    assert torch.allclose(out["mask"], torch.sigmoid(out["mask_logits"]), atol=1e-6)
    m, f, b = out["mask"], out["fg"], out["bg"]
    assert torch.allclose(out["composite"], m * f + (1 - m) * b, atol=1e-6)
    assert G(z).shape == (4, 3, r, r)
    logits = D(out["composite"])
    assert logits.shape == (4, 1) and logits.dtype == torch.float32
    with pytest.raises(ValueError, match="z must have shape"):
        G(torch.randn(2, G.z_dim + 1))
    with pytest.raises(ValueError, match="img must have shape"):
        D(torch.randn(2, 3, r // 2, r // 2))
    with pytest.raises(ValueError, match="noise_mode"):
        G(z, noise_mode="bogus")


def test_quick_gradients_reach_every_parameter(quick):
    G, D = quick
    G.zero_grad(set_to_none=True)
    D.zero_grad(set_to_none=True)
    out = G(torch.randn(4, G.z_dim), return_layers=True)
    loss = D(out["composite"]).sum() + out["mask"].mean()
    loss.backward()
    assert _params_without_grad(G) == []
    assert _params_without_grad(D) == []


def test_noise_modes_and_truncation(quick):
    G, _ = quick
    G.eval()
    try:
        z = torch.randn(3, G.z_dim)
        with torch.no_grad():
            for n, p in G.named_parameters():  # initialized to 0: make the noise visible
                if n.endswith("noise_strength"):
                    p.fill_(0.1)
            a, b = G(z, noise_mode="const"), G(z, noise_mode="const")
            assert torch.equal(a, b)
            c, d = G(z, noise_mode="random"), G(z, noise_mode="random")
            assert not torch.equal(c, d)
            G(z, noise_mode="none")
            # psi = 0: every z maps to w_avg -> identical images (const noise)
            for sub in (G.fg, G.bg):
                sub.mapping.w_avg.copy_(torch.randn_like(sub.mapping.w_avg))
            t = G(torch.randn(3, G.z_dim), truncation_psi=0.0, noise_mode="const")
            assert torch.allclose(t[0], t[1], atol=1e-5) and torch.allclose(t[0], t[2], atol=1e-5)
            # cutoff: only the first ws are truncated
            ws = G.fg.mapping(z, truncation_psi=0.5, truncation_cutoff=2)
            full = G.fg.mapping(z)
            w_avg = G.fg.mapping.w_avg
            assert torch.allclose(ws[:, :2], w_avg + 0.5 * (full[:, :2] - w_avg), atol=1e-6)
            assert torch.allclose(ws[:, 2:], full[:, 2:])
            assert torch.equal(G(z, truncation_psi=1.0, noise_mode="const"), a)
    finally:
        G.train()


def test_w_avg_tracking():
    torch.manual_seed(0)
    G, _ = build_networks(TINY)
    m = G.fg.mapping
    before = m.w_avg.clone()
    G.eval()
    G(torch.randn(4, G.z_dim))
    assert torch.equal(m.w_avg, before)  # eval: no update
    G.train()
    z = torch.randn(4, G.z_dim)
    G(z)
    w = m(z, update_emas=False)[:, 0]
    assert torch.allclose(m.w_avg, before.lerp(w.mean(0), 1 - 0.995), atol=1e-6)


def test_fp16_falls_back_to_fp32_on_cpu():
    # float16 never runs on CPU; "auto" picks bfloat16 there only on a CPU with native bf16
    # (tests/test_precision.py covers "auto" on CPUs with and without it, and bfloat16)
    assert compute_dtype(True, torch.device("cpu"), precision="fp32") == torch.float32
    assert compute_dtype(True, torch.device("cuda")) == torch.float16
    assert compute_dtype(True, torch.device("cuda"), force_fp32=True) == torch.float32
    torch.manual_seed(0)
    G16, D16 = build_networks(dataclasses.replace(TINY, num_fp16_res=2, precision="fp32"))
    G32, D32 = build_networks(dataclasses.replace(TINY, num_fp16_res=0))
    assert any(getattr(G16.fg.synthesis, f"b{r}").use_fp16 for r in G16.fg.synthesis.block_resolutions)
    G32.load_state_dict(G16.state_dict())
    D32.load_state_dict(D16.state_dict())
    z = torch.randn(2, G16.z_dim)
    a = G16(z, noise_mode="const")
    assert a.dtype == torch.float32
    assert torch.equal(a, G32(z, noise_mode="const"))
    assert torch.equal(D16(a), D32(a))


# ------------------------------------------------------------------------------------------------
# Backends: impl="ref" vs impl="auto" (float64: the fast CPU kernels run in float64 too)


def _tiny_pair(dtype=torch.float64):
    torch.manual_seed(1)
    G, D = build_networks(TINY, impl="auto")
    G, D = G.to(dtype), D.to(dtype)
    Gr, Dr = copy.deepcopy(G), copy.deepcopy(D)
    set_impl(Gr, "ref")
    set_impl(Dr, "ref")
    return G, D, Gr, Dr


def test_ref_vs_auto_forward_backward():
    G, D, Gr, Dr = _tiny_pair()
    z = torch.randn(4, G.z_dim, dtype=torch.float64)
    outs = []
    for g, d in ((G, D), (Gr, Dr)):
        g.zero_grad(set_to_none=True)
        d.zero_grad(set_to_none=True)
        o = g(z, noise_mode="const", return_layers=True)
        logits = d(o["composite"])
        (logits.sum() + o["mask"].square().mean()).backward()
        outs.append((o, logits, {n: p.grad.clone() for n, p in list(g.named_parameters())},
                     {n: p.grad.clone() for n, p in d.named_parameters()}))
    (oa, la, ga, da), (orf, lr, gr, dr) = outs
    for k in oa:
        torch.testing.assert_close(oa[k], orf[k], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(la, lr, rtol=1e-9, atol=1e-10)
    for n in ga:
        torch.testing.assert_close(ga[n], gr[n], rtol=1e-7, atol=1e-9, msg=f"G grad {n}")
    for n in da:
        torch.testing.assert_close(da[n], dr[n], rtol=1e-7, atol=1e-9, msg=f"D grad {n}")


def test_r1_double_backward_auto_matches_ref():
    _, D, _, Dr = _tiny_pair()
    torch.manual_seed(2)
    x0 = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    grads = []
    for d in (D, Dr):
        d.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
        penalty = g.square().sum(dim=[1, 2, 3]).mean()
        penalty.backward()
        # biases behind the last smooth op (minibatch std) only move lrelu kinks: zero R1 gradient
        assert set(_params_without_grad(d)) == {"b4.conv.bias", "b4.fc.bias", "b4.out.bias"}
        grads.append({n: p.grad.clone() for n, p in d.named_parameters() if p.grad is not None})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-7, atol=1e-10, msg=f"R1 grad {n}")


def test_discriminator_gradgradcheck_tiny():
    torch.manual_seed(3)
    D = Discriminator(img_resolution=8, img_channels=1, channel_base=16, channel_max=2, num_fp16_res=0,
                      mbstd_group_size=2).double()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: D(t), (x,), atol=1e-6, fast_mode=True)


def test_kwargs_helpers():
    g = generator_kwargs("quick")
    d = discriminator_kwargs(get_preset("quick").replace(resolution=32))
    assert g["img_resolution"] == 64 and d["img_resolution"] == 32
    G = LayeredGenerator(**dict(g, img_resolution=16))
    assert G.img_resolution == 16
