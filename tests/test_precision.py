"""Precision choice (ilsgan.precision, --precision): native-bf16 detection, the dtype per device, the
networks' mixed-precision blocks really computing in bfloat16 (forward hooks), and tiny training
runs with --precision bf16 / fp32 on CPU."""

import json

import pytest
import torch

from ilsgan import checkpoints as ck
from ilsgan import precision, train
from ilsgan.config import ConfigError, get_preset
from ilsgan.networks import (Conv2dLayer, SynthesisLayer, ToRGBLayer, build_networks, compute_dtype,
                             set_precision)

from _train_tiny import TINY_CFG_ARGS, cli_config, tiny_cfg


def _flags(monkeypatch, *flags):
    monkeypatch.setattr(precision, "cpu_info", lambda: ("", frozenset(("fpu", "avx2") + flags)))


def test_native_bf16_detection(monkeypatch):
    for flags, native in (((), False), (("avx512f", "avx512_vnni"), False), (("avx512_bf16",), True),
                          (("amx_tile", "amx_bf16"), True)):
        _flags(monkeypatch, *flags)
        assert precision.cpu_has_native_bf16() is native
        assert precision.low_precision_dtype("auto", "cpu") == (torch.bfloat16 if native else None)
        assert precision.low_precision_dtype("bf16", "cpu") == torch.bfloat16  # chosen: native or not
        assert precision.low_precision_dtype("fp32", "cpu") is None
        assert precision.low_precision_dtype("auto", "cuda") == torch.float16  # today's CUDA behaviour
        assert precision.effective_precision("auto", "cpu", 4) == ("bf16" if native else "fp32")
        assert precision.effective_precision("bf16", "cpu", 0) == "fp32"  # nothing in mixed precision
        assert compute_dtype(True, torch.device("cpu")) == (torch.bfloat16 if native else torch.float32)
        assert compute_dtype(True, torch.device("cpu"), precision="bf16", force_fp32=True) == torch.float32
        assert compute_dtype(False, torch.device("cpu"), precision="bf16") == torch.float32
        assert compute_dtype(True, torch.device("cpu"), base=torch.float64, precision="bf16") == torch.float64
    info = precision.describe("auto", "cpu", 4)
    assert info["runs"] == "bf16" and info["cpu_native_bf16"] is True and "bfloat16" in info["note"]
    _flags(monkeypatch)
    info = precision.describe("auto", "cpu", 4)
    assert info["runs"] == "fp32" and "no native bfloat16" in info["note"]
    assert "num_fp16_res=0" in precision.summary(precision.describe("bf16", "cpu", 0))
    with pytest.raises(ValueError, match="precision"):
        precision.low_precision_dtype("fp16", "cpu")
    with pytest.raises(ConfigError, match="precision must be one of"):
        tiny_cfg(precision="half")
    with pytest.raises(ValueError, match="precision"):
        set_precision(build_networks(tiny_cfg())[0], "half")


@pytest.fixture
def fresh_cpu_info():
    precision.cpu_info.cache_clear()
    yield
    precision.cpu_info.cache_clear()


def test_cpu_info_sources(monkeypatch, tmp_path, fresh_cpu_info):
    """torch.cpu.get_capabilities() where torch has it (the features reported True), else /proc/cpuinfo."""
    caps = {"architecture": "x86_64", "cpu_name": "Some CPU", "avx2": True, "amx_bf16": True, "avx512_bf16": False,
            "l2_cache_size": 524288, "num_sockets": 1}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps, raising=False)
    assert precision.cpu_info() == ("Some CPU", frozenset({"avx2", "amx_bf16"}))
    assert precision.cpu_has_native_bf16()
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: CPU A\nflags\t\t: fpu avx2 avx512_bf16\n\n"
                       "processor\t: 1\nmodel name\t: CPU B\nflags\t\t: fpu\n")
    assert precision._proc_cpu_info(str(cpuinfo)) == ("CPU A", frozenset({"fpu", "avx2", "avx512_bf16"}))
    assert precision._proc_cpu_info(str(tmp_path / "missing")) == ("", frozenset())
    precision.cpu_info.cache_clear()
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)  # older torch
    monkeypatch.setattr(precision, "_proc_cpu_info", lambda: ("CPU A", frozenset({"fpu", "avx512_bf16"})))
    assert precision.cpu_info() == ("CPU A", frozenset({"fpu", "avx512_bf16"})) and precision.cpu_has_native_bf16()


def _record_dtypes(*modules):
    """Forward hooks on every conv layer: {qualified name: (input dtype, output dtype)}."""
    seen, handles = {}, []
    for root, prefix in zip(modules, ("G", "D")):
        for name, m in root.named_modules():
            if isinstance(m, (SynthesisLayer, ToRGBLayer, Conv2dLayer)):
                def hook(mod, inp, out, key=f"{prefix}.{name}"):
                    seen[key] = (inp[0].dtype, out.dtype)
                handles.append(m.register_forward_hook(hook))
    return seen, handles


def _low_precision_layers(G, D):
    """Names of the conv layers inside the mixed-precision blocks (what _record_dtypes records)."""
    names = set()
    for root, prefix in ((G, "G"), (D, "D")):
        for name, m in root.named_modules():
            if getattr(m, "use_fp16", False):
                names |= {f"{prefix}.{name}.{n}" for n, c in m.named_modules()
                          if isinstance(c, (SynthesisLayer, ToRGBLayer, Conv2dLayer))}
    return names


def test_networks_compute_in_bf16_where_chosen():
    torch.manual_seed(0)
    G, D = build_networks(tiny_cfg(num_fp16_res=2, precision="bf16"))
    low = _low_precision_layers(G, D)
    assert low and any(n.startswith("G.") for n in low) and any(n.startswith("D.") for n in low)
    seen, _ = _record_dtypes(G, D)
    z = torch.randn(4, G.z_dim)
    out = G(z, return_layers=True)
    logits = D(out["composite"])
    assert all(v.dtype == torch.float32 for v in out.values()) and logits.dtype == torch.float32
    assert set(seen) >= low and len(seen) > len(low)  # 4x4 block, D epilogue: float32
    for name, (din, dout) in seen.items():
        want = torch.bfloat16 if name in low else torch.float32
        assert din == want and dout == want, (name, din, dout)
    (logits.sum() + out["mask"].mean()).backward()
    for net in (G, D):
        for n, p in net.named_parameters():
            assert p.dtype == torch.float32 and (p.grad is None or p.grad.dtype == torch.float32), n
    # fp32 and force_fp32: everything float32; the same weights give nearly the same images
    set_precision(G, "fp32")
    set_precision(D, "fp32")
    seen.clear()
    with torch.no_grad():
        a = G(z, noise_mode="const")
        D(a)
        assert seen and all(v == (torch.float32, torch.float32) for v in seen.values())
        set_precision(G, "bf16")
        b = G(z, noise_mode="const")
        seen.clear()
        G(z, noise_mode="const", force_fp32=True)
        assert all(v == (torch.float32, torch.float32) for v in seen.values())
    assert (a - b).abs().max() < 0.1 * a.abs().max()


@pytest.mark.parametrize("choice", ["bf16", "fp32"])
def test_tiny_training_run(tmp_path, capsys, monkeypatch, choice):
    """A tiny run of `python -m ilsgan.train --precision CHOICE` (2 iterations, the first with R1):
    hooks on the networks the loop builds record each conv layer's dtypes."""
    import ilsgan.networks as networks
    built, original = {}, networks.build_networks

    def build(*a, **kw):
        G, D = original(*a, **kw)
        built["seen"], _ = _record_dtypes(G, D)
        built["low"] = _low_precision_layers(G, D)
        return G, D

    monkeypatch.setattr(networks, "build_networks", build)
    args = TINY_CFG_ARGS + ["--cfg", "num_fp16_res=2", "--precision", choice, "--no-progress", "--no-tensorboard",
                            "--data", "synthetic:easy", "--final-eval", "off", "--outdir", str(tmp_path),
                            "--name", "p", "--kimg", "0.008", "--snap", "0.008", "--device", "cpu"]
    rc = train.main(args)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"precision: {choice} (--precision {choice})" in out
    saved = json.load(open(tmp_path / "p" / "config.json"))
    assert saved["config"]["network"]["precision"] == choice and saved["precision"]["runs"] == choice
    seen, low = built["seen"], built["low"]
    assert low and set(seen) >= low
    for name, (din, dout) in seen.items():
        want = torch.bfloat16 if choice == "bf16" and name in low else torch.float32
        assert din == want and dout == want, (name, din, dout)
    recs = [json.loads(line) for line in open(tmp_path / "p" / "log.jsonl")]
    for k in ("Loss/G/adv", "Loss/D/real", "Loss/D/fake"):
        assert recs[-1][k] == recs[-1][k], k  # finite (not NaN)


def test_precision_option_and_config(capsys):
    assert all(get_preset(name).network.precision == "auto" for name in ("paper64", "paper128", "quick", "demo"))
    assert cli_config([]).network.precision == "auto"
    assert cli_config(["--precision", "bf16"]).network.precision == "bf16"
    assert cli_config(["--preset", "paper64", "--precision", "fp32"])["precision"] == "fp32"
    assert cli_config(["--cfg", "precision=bf16"]).network.precision == "bf16"
    assert train.flag_settings(train.build_parser().parse_args(["--precision", "fp32"])) == {"precision": "fp32"}
    with pytest.raises(SystemExit):
        train.main(["--precision", "fp16"])
    assert "--precision" in capsys.readouterr().err
    assert train.main(["--cfg", "precision=half"]) == 2
    assert "precision must be one of" in capsys.readouterr().err


def test_resume_may_change_the_precision_only():
    """precision leaves the weights as they are: a resume may change it (listed as a change); another
    num_fp16_res is still another network."""
    saved = tiny_cfg(num_fp16_res=2)
    assert ck.check_config_compatible(saved, saved.replace(precision="bf16")) == [("precision", "auto", "bf16")]
    with pytest.raises(ck.CheckpointError, match="num_fp16_res"):
        ck.check_config_compatible(saved, saved.replace(num_fp16_res=1, precision="bf16"))
    # checkpoints written before the setting existed (format 1, or format 2 without it) run "auto"
    assert ck.config_from_v1({"name": "quick", "num_fp16_res": 2}).network.precision == "auto"
    d = saved.to_dict()
    del d["network"]["precision"]
    assert type(saved).from_dict(d).network.precision == "auto"
