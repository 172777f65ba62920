"""The typed configuration: the presets keep the values they had as flat dicts (the paper's exactly),
one name per setting, --cfg parsing and its errors, round trips through dicts."""

import dataclasses
import json

import pytest

from ilsgan import checkpoints as ck
from ilsgan.config import (FIELDS, PRESETS, ConfigError, LossConfig, SessionConfig, TrainConfig, get_preset,
                           parse_cfg_items)

# The presets as they were written before the typed config (flat dicts, earlier names): the paper's
# settings, and the quick preset's departures from them.
OLD_PAPER = dict(
    resolution=64, z_dim=512, w_dim=512, mapping_layers=8, mapping_lr_multiplier=0.01, w_avg_beta=0.995,
    channel_base=16384, channel_max=256, num_fp16_res=4, conv_clamp=256, mbstd_group_size=4, mbstd_num_channels=1,
    use_noise=True, batch=32, G_lr=0.0025, D_lr=0.0025, betas=(0.0, 0.99), eps=1e-8, gamma=None, r1_gamma_coef=0.0002,
    D_reg_interval=16, G_reg_interval=4, ema_kimg=None, ema_rampup=0.05, kimg=8000, snap_kimg=200, augment="bgc",
    aug_p=0.0, ada_target=0.6, ada_interval=4, ada_kimg=500, shift_max=0.125, lambda_bin=2.0, bin_ramp_kimg=0.0,
    lambda_area=2.0, area_min=0.25, area_mirror=None, ils=True, ils_distribution="laplace", ils_sigma=(0.2, 1.0),
    ils_sigma_kimg=400, style_mixing=0.0, pl_weight=0.0, truncation_psi=1.0)
OLD_PRESETS = {
    "paper64": dict(OLD_PAPER, name="paper64", resolution=64),
    "paper128": dict(OLD_PAPER, name="paper128", resolution=128),
    "quick": dict(OLD_PAPER, name="quick", resolution=64, z_dim=128, w_dim=128, mapping_layers=2, channel_base=1024,
                  channel_max=128, num_fp16_res=0, batch=16, G_lr=0.002, D_lr=0.002, kimg=10, snap_kimg=2,
                  ada_kimg=20, area_mirror=True),
}
OLD_DEMO = dict(preset="quick", data="synthetic:easy", resolution=32, kimg=300.0, snap=5.0, minutes=14.0)


@pytest.mark.parametrize("name", sorted(OLD_PRESETS))
def test_presets_keep_their_values(name):
    old = OLD_PRESETS[name]
    new = PRESETS[name]
    # config_from_v1 starts from the new preset and sets every old value on it (an unknown name is an
    # error): equal only if each old value is the new preset's. The diversity term came later: quick's
    # w_div is its one departure from a version-1 quick, and a version-1 run resumes without it.
    assert ck.config_from_v1(old) == new.replace(w_div=0.0)
    assert new.loss.w_div == (10.0 if name == "quick" else 0.0)


def test_the_paper_presets():
    for name, res in (("paper64", 64), ("paper128", 128)):
        cfg = get_preset(name)
        assert cfg.network == dataclasses.replace(PRESETS["paper64"].network, resolution=res)
        n, o, a, L = cfg.network, cfg.optim, cfg.augment, cfg.loss
        assert (n.z_dim, n.w_dim, n.mapping_layers, n.mapping_lr_multiplier) == (512, 512, 8, 0.01)
        assert (o.batch, o.glr, o.dlr, o.betas) == (32, 0.0025, 0.0025, (0.0, 0.99))
        assert n.num_fp16_res == 4 and n.conv_clamp == 256 and (n.mbstd_group_size, n.mbstd_num_channels) == (4, 1)
        assert (a.aug, a.aug_pipe, a.ada_target, a.ada_kimg) == ("ada", "bgc", 0.6, 500)
        assert (L.w_bin, L.w_area, L.area_min, L.shift, L.ils_switch_kimg) == (2, 2, 0.25, 0.125, 400)
        assert o.resolved_ema_kimg() == 10
    assert PRESETS["paper64"].r1_weight() == pytest.approx(0.0256)
    assert PRESETS["paper128"].r1_weight() == pytest.approx(0.1024)
    assert PRESETS["paper64"].replace(r1_gamma=1.5).r1_weight() == 1.5


def test_the_demo_is_the_quick_preset_at_32px_for_14_minutes():
    demo, quick = PRESETS["demo"], PRESETS["quick"]
    assert (demo.data.data, demo.network.resolution, demo.run.kimg, demo.run.snap, demo.session.minutes) == (
        OLD_DEMO["data"], OLD_DEMO["resolution"], OLD_DEMO["kimg"], OLD_DEMO["snap"], OLD_DEMO["minutes"])
    same = quick.replace(resolution=32, kimg=300, snap=5, minutes=14, data="synthetic:easy")
    assert dataclasses.replace(same, preset="demo") == demo


def test_one_name_per_setting():
    # (unique names across the sections are asserted when ilsgan.config is imported)
    assert not {"style_mixing", "pl_weight", "truncation_psi"} & set(FIELDS)  # never read: gone


def test_configs_are_frozen_checked_and_round_trip():
    cfg = PRESETS["quick"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.loss.w_bin = 1.0
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # lists back to tuples
    assert cfg.replace(kimg=5).run.kimg == 5.0 and cfg.run.kimg == 10.0
    for bad, msg in ((dict(resolution=48), "power of two"), (dict(batch=0), "batch must be > 0"),
                     (dict(area_min=1.5), "area_min must be <= 1"), (dict(shift=2), "shift must be <= 1"),
                     (dict(div_min=0.6), "div_min must be <= 0.5"), (dict(w_div=-1), "w_div must be >= 0"),
                     (dict(w_bin="x"), "w_bin must be a float"), (dict(ils=1), "ils must be a bool"),
                     (dict(crop="square"), "crop must be one of"), (dict(wbin=1), "did you mean 'w_bin'")):
        with pytest.raises(ConfigError, match=msg):
            cfg.replace(**bad)
    with pytest.raises(ConfigError, match="unknown config section"):
        TrainConfig.from_dict({"networks": {}})
    with pytest.raises(ConfigError, match="section 'loss'.*unknown key 'resolution'"):
        TrainConfig.from_dict({"loss": {"resolution": 16}})
    assert LossConfig(ils_switch_kimg=400) == LossConfig()  # int and float of one value are one value
    assert cfg.differences(cfg.replace(w_bin=1.0, device="cpu")) == [("w_bin", 2.0, 1.0), ("device", None, "cpu")]


def test_cfg_items():
    assert parse_cfg_items(["ils_sigma=0.1,2", "area_mirror=auto", "keep=all", "z_dim=16", "use_noise=off",
                            "r1_gamma=None", "aug=noaug", "ema_kimg=2.5"]) == {
        "ils_sigma": (0.1, 2.0), "area_mirror": None, "keep": None, "z_dim": 16, "use_noise": False,
        "r1_gamma": None, "aug": "noaug", "ema_kimg": 2.5}
    for item, msg in (("nope=1", "unknown key 'nope'"), ("z_dim=1.5", "z_dim=1.5: expected int"),
                      ("w_bin=x", "w_bin=x: expected float"), ("ils=maybe", "expected bool"),
                      ("keep=some", "expected int, or 'all'"), ("z_dim", "KEY=VALUE")):
        with pytest.raises(ConfigError, match=msg):
            parse_cfg_items([item])
