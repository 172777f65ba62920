"""`python -m ilsgan.evaluate` and `python -m ilsgan.segment` end to end on a tiny setup (seconds)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from _fake_generator import FakeLayeredGenerator
from ilsgan import evaluate, segment
from test_segmentation_protocol import write_pairs

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

TESTS = os.path.dirname(os.path.abspath(__file__))
# the fixture's checkpoint is a whole pickled module: it loads only with the explicit opt-in
TRUST = ["--trust-pickle"]
QUICK = ["--pairs", "16", "--unet-iters", "3", "--unet-batch", "8", "--unet-base", "4", "--unet-resolution", "16",
         "--batch", "8"]


class _TinyFeatures(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


@pytest.fixture
def setup(tmp_path):
    G = FakeLayeredGenerator(img_resolution=16)
    ckpt = tmp_path / "G.pkl"
    torch.save(G, ckpt)  # a whole pickled module with the LayeredGenerator interface
    images, masks = write_pairs(G, tmp_path / "real", 6)
    inc = tmp_path / "inc.pt"
    torch.jit.script(_TinyFeatures()).save(str(inc))
    return tmp_path, ckpt, images, masks, inc


def test_evaluate_and_segment_end_to_end(setup, capsys):
    tmp, ckpt, images, masks, inc = setup
    out = tmp / "report.json"
    unet = tmp / "unet.pt"
    rep = evaluate.main(["--checkpoint", str(ckpt), "--images", str(images), "--masks", str(masks), "--fid",
                         "--inception", str(inc), "--fid-n", "12", "--mi", "--mi-iters", "3", "--mi-samples", "16",
                         "--mi-hidden", "8", "--save-unet", str(unet), "--out", str(out), "--device", "cpu"] + QUICK + TRUST)
    saved = json.loads(out.read_text())
    for k in ("iou", "dice", "dataset_iou", "miou", "pixel_acc"):
        assert 0 <= saved[k] <= 1, k
    for k in ("fid", "kid", "mi", "mi_fg_bg"):
        assert isinstance(saved[k], float), k
    assert saved["n_test"] == 6 and saved["direct"]["n_pairs"] == 16 and saved["fid_n_generated"] == 12
    assert saved["iou"] == rep["iou"]
    table = capsys.readouterr().out
    assert "pixel_acc" in table and "fid" in table
    # segment the real images with the saved UNet
    masks_out = tmp / "pred"
    written = segment.main(["--model", str(unet), "--images", str(images), "--out", str(masks_out), "--device", "cpu"])
    assert sorted(os.listdir(masks_out)) == sorted(os.listdir(images)) and len(written) == 6
    m = np.asarray(Image.open(masks_out / "im000.png"))
    assert m.shape == (16, 16) and set(np.unique(m)) <= {0, 255}


def test_evaluate_direct_only(setup):
    tmp, ckpt, *_ = setup
    rep = evaluate.main(["--checkpoint", str(ckpt), "--protocol", "direct", "--device", "cpu"] + QUICK + TRUST)
    assert rep["iou"] is None and 0 < rep["direct"]["soft_iou"] <= 1 and "unet" not in rep


def test_cli_errors_name_the_option(setup, capsys):
    tmp, ckpt, images, masks, inc = setup
    cases = [
        (["--checkpoint", str(tmp / "none.pt"), "--images", str(images), "--masks", str(masks)], "--checkpoint"),
        (["--checkpoint", str(ckpt), "--images", str(tmp / "nope"), "--masks", str(masks)], "--images"),
        (["--checkpoint", str(ckpt), "--images", str(images), "--masks", str(tmp / "nope")], "--masks"),
        (["--checkpoint", str(ckpt), "--images", str(images)], "--masks"),
        (["--checkpoint", str(ckpt), "--images", str(tmp / "empty_imgs"), "--masks", str(masks)], "--images"),
        (["--checkpoint", str(ckpt), "--images", str(images), "--masks", str(masks), "--fid",
          "--inception", str(tmp / "missing.pt")], "--inception"),
    ]
    (tmp / "empty_imgs").mkdir()
    for argv, opt in cases:
        with pytest.raises(SystemExit, match=opt):
            evaluate.main(argv + QUICK + TRUST)
    with pytest.raises(SystemExit, match="--model"):
        segment.main(["--model", str(tmp / "none.pt"), "--images", str(images), "--out", str(tmp / "o")])
    (tmp / "empty").mkdir()
    unet = tmp / "u.pt"
    from ilsgan.segmentation import UNet, save_unet
    save_unet(UNet(base=4), unet, 16)
    with pytest.raises(SystemExit, match="--images"):
        segment.main(["--model", str(unet), "--images", str(tmp / "empty"), "--out", str(tmp / "o")])
    with pytest.raises(SystemExit, match="--model"):
        segment.main(["--model", str(ckpt), "--images", str(images), "--out", str(tmp / "o")])


def test_module_entry_points_run():
    for mod in ("ilsgan.evaluate", "ilsgan.segment"):
        r = subprocess.run([sys.executable, "-m", mod, "--help"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "usage" in r.stdout


def test_evaluate_on_real_training_checkpoint(tmp_path):
    """End to end on a checkpoint in the training format (ilsgan.checkpoints), tiny 'quick' networks at 16 px."""
    import ilsgan.checkpoints as ckpts
    from ilsgan.config import get_preset
    from ilsgan.networks import build_networks

    cfg = get_preset("quick").replace(resolution=16, z_dim=16, w_dim=16, channel_base=128, channel_max=16)
    torch.manual_seed(0)
    G, D = build_networks(cfg)
    path = ckpts.save_checkpoint(tmp_path / "run" / "checkpoint-000000.pt", config=cfg, G=G, D=D, G_ema=G)
    images, masks = write_pairs(FakeLayeredGenerator(img_resolution=16), tmp_path / "real", 4)
    rep = evaluate.main(["--checkpoint", str(path), "--images", str(tmp_path / "real"),  # DIR/images + DIR/masks
                         "--out", str(tmp_path / "r.json"), "--device", "cpu"] + QUICK)
    assert rep["generator_resolution"] == 16 and rep["n_test"] == 4
    for k in ("iou", "dice", "dataset_iou", "miou", "pixel_acc"):
        assert 0 <= rep[k] <= 1
    # a run directory resolves to its latest checkpoint
    rep2 = evaluate.main(["--checkpoint", str(tmp_path / "run"), "--protocol", "direct", "--device", "cpu"] + QUICK)
    for k in ("soft_iou", "coverage_mean", "collapsed_fraction"):
        assert rep2["direct"][k] == rep["direct"][k]
