"""Trivial baselines and their metrics on hand-made data with known answers."""

import json

import numpy as np
import pytest
from PIL import Image

from ilsgan.data import baselines as B
from ilsgan.data.__main__ import main


def _square(h=32, fg=(200, 30, 30), bg=(20, 20, 90), box=(8, 20, 10, 26)):
    img = np.empty((h, h, 3), np.uint8)
    img[:] = bg
    m = np.zeros((h, h), bool)
    y0, y1, x0, x1 = box
    img[y0:y1, x0:x1] = fg
    m[y0:y1, x0:x1] = True
    return img, m


@pytest.mark.parametrize("method", ["otsu", "kmeans", "border"])
def test_trivial_dataset_solved(method):
    for fg, bg in (((200, 30, 30), (20, 20, 90)), ((10, 10, 10), (250, 250, 250))):  # both polarities
        img, m = _square(fg=fg, bg=bg)
        assert np.array_equal(B.predict(method, img), m)


def test_known_iou_values():
    # a perfectly solved image and one whose ground truth is empty (prediction is not): IoU 1 and 0
    pairs = [_square(), (_square()[0], np.zeros((32, 32), bool))]
    r = B.evaluate(pairs, ["otsu"])
    assert r["otsu"]["iou"] == pytest.approx(0.5)  # 1.0 and 0.0
    assert r["otsu"]["dataset_iou"] == pytest.approx(120 / 240)
    assert r["otsu"]["n"] == 2 and r["otsu"]["dice"] == pytest.approx(0.5)
    # empty/empty counts as 1: a flat image (no prediction) with an empty mask
    flat = np.full((16, 16, 3), 77, np.uint8)
    r = B.evaluate([(flat, np.zeros((16, 16), bool))], ["otsu", "kmeans", "border"])
    assert all(v["iou"] == 1.0 and v["dice"] == 1.0 for v in r.values())


def test_polarity_prefers_cluster_off_border():
    lab = np.zeros((20, 20), bool)
    lab[5:15, 5:15] = True
    assert np.array_equal(B.choose_polarity(lab), lab)
    assert np.array_equal(B.choose_polarity(~lab), lab)
    # a big object (more than half of the image) still wins if it stays off the border
    big = np.zeros((20, 20), bool)
    big[1:19, 1:19] = True
    assert np.array_equal(B.choose_polarity(~big), big)


def test_otsu_threshold_bimodal():
    v = np.concatenate([np.full(100, 10.0), np.full(50, 200.0)])
    t = B.otsu_threshold(v)
    assert 10 < t <= 200


def test_grabcut_absent_is_skipped(tmp_path, capsys):
    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(3):
        img, m = _square(box=(4 + i, 20, 6, 24))
        Image.fromarray(img).save(root / "images" / f"{i}.png")
        Image.fromarray(m.astype(np.uint8) * 255).save(root / "masks" / f"{i}.png")
    out = tmp_path / "r.json"
    assert main(["baselines", "--images", str(root / "images"), "--masks", str(root / "masks"),
                 "--methods", "otsu,kmeans,border,grabcut", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    for m in ("otsu", "kmeans", "border"):
        assert res[m]["iou"] == pytest.approx(1.0) and res[m]["n"] == 3
    assert ("grabcut" in res) == ("grabcut" in B.available_methods())
    assert "IoU" in capsys.readouterr().out
