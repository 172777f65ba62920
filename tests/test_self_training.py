"""Self-training on unlabeled real images, the 'strong' UNet augmentation, the realism score and the
comparison table with the classical baselines (seconds, on a tiny fake generator)."""

import json
from dataclasses import replace

import pytest
import torch

from _fake_generator import FakeLayeredGenerator
from ilsgan import evaluate
from ilsgan.metrics import real_vs_generated_accuracy
from ilsgan.segmentation import (BASELINES, ProtocolConfig, best_baseline, comparison_table, generate_pairs,
                                 pseudo_labels, run_protocol, self_train, strong_augment, train_unet)
from test_segmentation_protocol import TINY, write_pairs


class _ConstantProbability(torch.nn.Module):
    """A 'UNet' whose foreground probability is a fixed map (to check the pseudo-label thresholds)."""

    def __init__(self, prob):
        super().__init__()
        self.logit = torch.nn.Parameter(torch.logit(prob), requires_grad=False)

    def forward(self, x):
        fg = self.logit.expand(x.shape[0], 1, *x.shape[-2:])
        return torch.cat([torch.zeros_like(fg), fg], 1)


def test_pseudo_labels_keep_only_confident_pixels():
    prob = torch.rand(16, 16, generator=torch.Generator().manual_seed(0)) * 0.98 + 0.01
    prob = 0.5 * (prob + prob.flip(-1))  # mirror-symmetric: the flip average leaves it unchanged
    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    t = pseudo_labels(_ConstantProbability(prob), images, unet_resolution=16, confidence=0.8)
    assert t.shape == (3, 1, 16, 16) and t.dtype == torch.int8
    want = torch.full((16, 16), -1, dtype=torch.int8)
    want[prob > 0.8] = 1
    want[prob < 0.2] = 0
    assert torch.equal(t[1, 0], want) and (want == -1).any() and (want == 1).any() and (want == 0).any()
    with pytest.raises(ValueError, match="confidence"):
        pseudo_labels(_ConstantProbability(prob), images, 16, confidence=0.3)


def test_strong_augment_moves_targets_with_the_image():
    g = torch.Generator().manual_seed(1)
    y = torch.zeros(64, 32, 32, dtype=torch.long)
    for i in range(64):  # a rectangle per sample, some pixels ignored
        a, b = int(torch.randint(2, 14, (1,), generator=g)), int(torch.randint(18, 30, (1,), generator=g))
        y[i, a:b, a + 1:b - 2] = 1
    y[:, :2] = -1
    x = y[:, None].float().clamp(min=0).expand(-1, 3, -1, -1) * 1.6 - 0.8  # object +0.8, background -0.8
    xa, ya = strong_augment(x, y, g, p=1.0)
    assert xa.shape == x.shape and ya.shape == y.shape and set(ya.unique().tolist()) <= {-1, 0, 1}
    assert not torch.equal(ya, y)  # zoom and flips moved the targets
    labelled = ya >= 0
    agree = ((xa.mean(1) > 0) == (ya == 1))[labelled].float().mean()
    assert agree > 0.95, float(agree)  # blur and noise change only pixels near edges


def test_unlabelled_real_pixels_carry_no_loss():
    G = FakeLayeredGenerator(img_resolution=16)
    images, masks = generate_pairs(G, 24, seed=0, with_stats=False)
    cfg = ProtocolConfig(**TINY)
    ref, _ = train_unet(images, masks, cfg, select="last")
    real = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8)
    ignored = torch.full((6, 1, 16, 16), -1, dtype=torch.int8)
    # the real half of each batch is all ignored: same loss as the generated half alone
    cfg_half = ProtocolConfig(**{**TINY, "batch": 16})
    m1, _ = train_unet(images, masks, cfg_half, real_images=real, real_targets=ignored, select="last")
    assert all(torch.isfinite(p).all() for p in m1.parameters())
    with pytest.raises(ValueError, match="go together"):
        train_unet(images, masks, cfg, real_images=real)
    with pytest.raises(ValueError, match="--unet-augment"):
        train_unet(images, masks, ProtocolConfig(**{**TINY, "augment": "heavy"}))
    del ref


def test_self_train_rounds_and_protocol_reports():
    G = FakeLayeredGenerator(img_resolution=16)
    real, real_masks = generate_pairs(G, 20, seed=5, with_stats=False)
    cfg = ProtocolConfig(**{**TINY, "self_train": 2, "self_train_confidence": 0.6, "augment": "strong"})
    images, masks = generate_pairs(G, 24, seed=0, with_stats=False)
    model, _ = train_unet(images, masks, cfg)
    model2, rounds = self_train(model, images, masks, real, cfg)
    assert [r["round"] for r in rounds] == [1, 2] and model2 is not model
    for r in rounds:
        assert 0 <= r["labelled_fraction"] <= 1 and 0 <= r["foreground_fraction"] <= 1
    test = [(real[i], real_masks[i]) for i in range(real.shape[0])]
    res = run_protocol(G, test, cfg, protocol="unet", real_images=real)
    assert set(res["metrics"]) >= {"iou", "dice"} and set(res["self_trained_metrics"]) >= {"iou", "dice"}
    assert 0 <= res["fidelity"]["accuracy"] <= 1 and len(res["self_train_info"]) == 2
    with pytest.raises(ValueError, match="real training images"):
        run_protocol(G, test, cfg, protocol="unet")


def test_shifted_pairs_move_foreground_and_mask_together():
    G = FakeLayeredGenerator(img_resolution=16, sharpness=1e4)  # a hard mask: no blended edge pixels
    plain, plain_m = generate_pairs(G, 40, seed=3, with_stats=False)
    again, again_m = generate_pairs(G, 40, seed=3, with_stats=False, shift=0.0)
    assert torch.equal(plain, again) and torch.equal(plain_m, again_m)  # shift 0 = the paper's pairs
    moved, moved_m = generate_pairs(G, 40, batch=40, seed=3, with_stats=False, shift=0.25)
    assert not torch.equal(moved_m, plain_m)
    # every pair stays a valid (image, mask): inside the mask the image is the flat foreground colour
    z = torch.randn(40, G.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        fg = ((G(z)["fg"][:, :, 0, 0].clamp(-1, 1) + 1) * 127.5).round()
    inside = moved_m.expand(-1, 3, -1, -1)
    diff = (moved.float() - fg[:, :, None, None]).abs()[inside]
    assert inside.any() and diff.max() <= 1, float(diff.max())
    with pytest.raises(ValueError, match="--pair-shift"):
        generate_pairs(G, 4, shift=1.5)


def test_paper_protocol_is_kept_beside_the_transfer_unet():
    G = FakeLayeredGenerator(img_resolution=16)
    real, real_masks = generate_pairs(G, 12, seed=5, with_stats=False)
    test = [(real[i], real_masks[i]) for i in range(real.shape[0])]
    cfg = ProtocolConfig(**{**TINY, "augment": "strong", "pair_shift": 0.125})
    res = run_protocol(G, test, cfg, protocol="unet")
    assert res["unet_info"]["config"]["augment"] == "colour" and res["unet_info"]["config"]["pair_shift"] == 0
    assert res["transfer_info"]["config"]["augment"] == "strong" and res["transfer_model"] is not res["model"]
    assert set(res["transfer_metrics"]) >= {"iou", "dice"}
    paper_only = run_protocol(G, test, ProtocolConfig(**TINY), protocol="unet")
    assert "transfer_metrics" not in paper_only
    assert paper_only["metrics"]["iou"] == pytest.approx(res["metrics"]["iou"])  # same paper UNet either way


def test_realism_score_separates_only_what_differs():
    g = torch.Generator().manual_seed(0)
    dark = torch.randint(0, 100, (64, 3, 16, 16), generator=g, dtype=torch.uint8)
    bright = torch.randint(150, 256, (64, 3, 16, 16), generator=g, dtype=torch.uint8)
    same = torch.randint(0, 256, (128, 3, 16, 16), generator=g, dtype=torch.uint8)
    assert real_vs_generated_accuracy(dark, bright, iters=60)["accuracy"] > 0.95
    chance = real_vs_generated_accuracy(same[:64], same[64:], iters=60)["accuracy"]
    assert 0.2 <= chance <= 0.8
    with pytest.raises(ValueError, match="generated"):
        real_vs_generated_accuracy(dark, bright.float())
    with pytest.raises(ValueError, match="sizes differ"):
        real_vs_generated_accuracy(dark, bright[..., :8])


def test_comparison_table_margin_over_the_best_baseline():
    r = lambda iou: {"iou": iou, "dice": iou, "dataset_iou": iou, "miou": iou, "pixel_acc": iou}  # noqa: E731
    results = {"ours": r(0.81), "allfg": r(0.9), "otsu": r(0.70), "kmeans": r(0.76), "border": r(0.61)}
    assert best_baseline(results) == "kmeans"  # all-foreground is the floor, never "the best baseline"
    table = comparison_table(results, title="t")
    lines = table.splitlines()
    assert lines[0] == "t" and "IoU vs kmeans" in lines[1]
    assert lines[3].startswith("ours") and lines[3].rstrip().endswith("+0.050")
    assert [ln.split()[0] for ln in lines[4:]] == list(BASELINES)


def test_evaluate_cli_self_training_and_baselines(tmp_path, capsys):
    G = FakeLayeredGenerator(img_resolution=16)
    ckpt = tmp_path / "G.pkl"
    torch.save(G, ckpt)
    images, masks = write_pairs(G, tmp_path / "real", 6)
    train_images, _ = write_pairs(G, tmp_path / "train", 12, seed=3)
    out = tmp_path / "r.json"
    argv = ["--checkpoint", str(ckpt), "--images", str(images), "--masks", str(masks), "--out", str(out),
            "--pairs", "16", "--unet-iters", "3", "--unet-batch", "8", "--unet-base", "4", "--unet-resolution", "16",
            "--batch", "8", "--self-train", "1", "--self-train-confidence", "0.6", "--device", "cpu"]
    for opt in ("--trust-pickle",):  # whole-module checkpoints need the opt-in where the CLI has one
        if opt in evaluate.build_parser().format_help():
            argv.append(opt)
    with pytest.raises(SystemExit, match="--train-images"):
        evaluate.main(argv)  # a pickled module does not say what it was trained on
    rep = evaluate.main(argv + ["--train-images", str(train_images)])
    saved = json.loads(out.read_text())
    assert saved["self_trained"]["iou"] == rep["self_trained"]["iou"] and len(saved["self_train_rounds"]) == 1
    assert set(saved["baselines"]) == set(BASELINES) and 0 <= saved["fidelity"]["accuracy"] <= 1
    text = capsys.readouterr().out
    assert evaluate.PAPER_ROW in text and evaluate.SELF_TRAINED_ROW in text and "IoU vs" in text


def test_evaluate_cli_transfer_row_and_pair_shift(tmp_path, capsys):
    G = FakeLayeredGenerator(img_resolution=16)
    ckpt = tmp_path / "G.pkl"
    torch.save(G, ckpt)
    images, masks = write_pairs(G, tmp_path / "real", 6)
    argv = ["--checkpoint", str(ckpt), "--images", str(images), "--masks", str(masks), "--trust-pickle",
            "--pairs", "16", "--unet-iters", "3", "--unet-batch", "8", "--unet-base", "4", "--unet-resolution", "16",
            "--batch", "8", "--device", "cpu", "--unet-augment", "strong"]
    with pytest.raises(SystemExit, match="does not record its training shift"):
        evaluate.main(argv + ["--pair-shift", "train"])  # a pickled module has no training config
    for bad in ("2", "-0.1", "wide"):
        with pytest.raises(SystemExit, match="--pair-shift"):
            evaluate.main(argv + ["--pair-shift", bad])
    rep = evaluate.main(argv + ["--pair-shift", "0.25"])
    assert rep["transfer"]["pair_shift"] == 0.25 and rep["transfer"]["augment"] == "strong"
    text = capsys.readouterr().out
    assert evaluate.PAPER_ROW in text and evaluate.TRANSFER_ROW in text


def test_targets_keep_their_meaning_when_resized_for_the_unet():
    from ilsgan.segmentation.protocol import _resize_targets
    m = torch.ones(2, 1, 64, 64, dtype=torch.bool)
    m[..., ::2, ::2] = False  # each 2x2 block: 3 of 4 pixels foreground, the top-left one not
    assert _resize_targets(m, 32).eq(1).all()  # area majority, not whichever pixel nearest picks
    t = torch.full((2, 1, 64, 64), -1, dtype=torch.int8)
    t[..., :32, :] = 1
    t[..., 48:, :] = 0
    r = _resize_targets(t, 32)
    assert r.dtype == torch.int8 and set(r.unique().tolist()) == {-1, 0, 1}  # ignored stays ignored
    assert r[..., :16, :].eq(1).all() and r[..., 16:24, :].eq(-1).all() and r[..., 24:, :].eq(0).all()


@pytest.mark.parametrize("field,value,flag", [("augment", "heavy", "--unet-augment"), ("pair_shift", 1.5, "--pair-shift"),
                                              ("pair_shift", -0.1, "--pair-shift"), ("self_train", -1, "--self-train"),
                                              ("self_train_confidence", 0.4, "--self-train-confidence"),
                                              ("unet_resolution", 40, "--unet-resolution")])
def test_protocol_config_rejects_bad_values_naming_the_flag(field, value, flag):
    with pytest.raises(ValueError, match=flag):
        ProtocolConfig(**{field: value})
    with pytest.raises(ValueError, match=flag):
        replace(ProtocolConfig(), **{field: value})  # a changed copy is checked too
