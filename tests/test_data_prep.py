"""Preparation of CUB / Stanford Dogs / Stanford Cars from small fake archives with the real layouts."""

import io
import tarfile

import numpy as np
import pytest
from PIL import Image

from ilsgan.data import DatasetError, open_image_mask_folder
from ilsgan.data.__main__ import main
from ilsgan.data.prep import prepare_cars, prepare_dogs

R = 24


def _scene(w, h, box, seed):
    """Image with a bright object filling ``box`` (x, y, bw, bh), and a soft mask: 255 on the object,
    100 (< 0.5) on a ring around it."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    x, y, bw, bh = box
    img[y:y + bh, x:x + bw] = (230, 200, 40)
    m = np.zeros((h, w), np.uint8)
    m[max(0, y - 3):y + bh + 3, max(0, x - 3):x + bw + 3] = 100
    m[y:y + bh, x:x + bw] = 255
    return img, m


def _png(a):
    b = io.BytesIO()
    Image.fromarray(a).save(b, format="PNG")
    return b.getvalue()


def _jpg(a):
    b = io.BytesIO()
    Image.fromarray(a).save(b, format="JPEG", quality=95)
    return b.getvalue()


def _tar(path, files: dict, mode="w:gz"):
    with tarfile.open(path, mode) as t:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))


SCENES = [  # (w, h, box)
    (80, 60, (20, 15, 30, 30)),
    (60, 90, (10, 30, 24, 24)),
    (100, 70, (0, 0, 40, 40)),  # box at the corner: framing square clipped
    (70, 70, (25, 25, 20, 20)),
]


def _check_out(out, n):
    ds = open_image_mask_folder(out)
    assert len(ds) == n
    for i in range(n):
        img, m = ds[i]
        assert img.shape == (3, R, R) and m.shape == (1, R, R)
    return ds


def _fake_cub(tmp_path):
    files, segs = {}, {}
    lines_img, lines_box, lines_split, lines_3 = [], [], [], []
    for i, (w, h, box) in enumerate(SCENES, 1):
        cls = f"{i:03d}.Bird_{i}"
        name = f"Bird_{i}_000{i}_{100 + i}"
        img, m = _scene(w, h, box, i)
        files[f"CUB_200_2011/images/{cls}/{name}.jpg"] = _jpg(img)
        segs[f"segmentations/{cls}/{name}.png"] = _png(m)
        lines_img.append(f"{i} {cls}/{name}.jpg")
        lines_box.append(f"{i} {box[0]}.0 {box[1]}.0 {box[2]}.0 {box[3]}.0")
        lines_split.append(f"{i} {1 if i % 2 else 0}")  # odd ids train, even ids test
        lines_3.append(f"{i} {[0, 1, 2, 2][i - 1]}")
    files["CUB_200_2011/images.txt"] = ("\n".join(lines_img) + "\n").encode()
    files["CUB_200_2011/bounding_boxes.txt"] = ("\n".join(lines_box) + "\n").encode()
    files["CUB_200_2011/train_test_split.txt"] = ("\n".join(lines_split) + "\n").encode()
    files["CUB_200_2011/classes.txt"] = b"1 001.Bird_1\n"
    _tar(tmp_path / "CUB_200_2011.tgz", files)
    _tar(tmp_path / "segmentations.tgz", segs)
    (tmp_path / "train_val_test_split.txt").write_text("\n".join(lines_3) + "\n")


def test_prep_cub_box_framing(tmp_path):
    _fake_cub(tmp_path)
    out = tmp_path / "cub_test"
    assert main(["prep-cub", "--archive", str(tmp_path / "CUB_200_2011.tgz"), "--segmentations",
                 str(tmp_path / "segmentations.tgz"), "--out", str(out), "--split", "test",
                 "--resolution", str(R), "--framing", "box"]) == 0
    ds = _check_out(out, 2)  # ids 2 and 4
    assert ds.names == ["002.Bird_2/Bird_2_0002_102", "004.Bird_4/Bird_4_0004_104"]
    for i in range(2):
        img, m = ds[i]
        m = m[0].numpy()
        # object = the box; the 1.5x square puts it in the middle 2/3 of the frame (soft ring dropped)
        assert abs(m.mean() - (2 / 3) ** 2) < 0.05
        assert m[R // 2, R // 2] and not m[0, 0] and not m[-1, -1]
        assert img[:, R // 2, R // 2].tolist()[0] > 180
    assert (out / "boxes.txt").read_text().startswith("002.Bird_2/Bird_2_0002_102 10 30 24 24")


def test_prep_cub_split_file_center_zip(tmp_path):
    _fake_cub(tmp_path)
    out = tmp_path / "cub"
    assert main(["prep-cub", "--archive", str(tmp_path / "CUB_200_2011.tgz"), "--segmentations",
                 str(tmp_path / "segmentations.tgz"), "--out", str(out), "--split", "test", "--split-file",
                 str(tmp_path / "train_val_test_split.txt"), "--resolution", str(R), "--framing", "center",
                 "--zip"]) == 0
    ds = open_image_mask_folder(out / "images.zip", out / "masks")
    assert open_image_mask_folder(out).names == ds.names
    assert ds.names == ["003.Bird_3/Bird_3_0003_103", "004.Bird_4/Bird_4_0004_104"]
    # corner box (scene 3, 100x70, box 0,0,40,40): centre square x 15..85 -> object x 15..40
    m = ds[0][1][0].numpy()
    assert m[:, 0].any() and not m[:, -1].any()
    # train split (extracted folder works too)
    ex = tmp_path / "extracted"
    with tarfile.open(tmp_path / "CUB_200_2011.tgz") as t:
        t.extractall(ex, filter="data")
    assert main(["prep-cub", "--archive", str(ex / "CUB_200_2011"), "--segmentations",
                 str(tmp_path / "segmentations.tgz"), "--out", str(tmp_path / "tr"), "--split", "train",
                 "--resolution", str(R)]) == 0
    _check_out(tmp_path / "tr", 2)


def test_prep_cub_errors(tmp_path, capsys):
    _fake_cub(tmp_path)
    _tar(tmp_path / "noseg.tgz", {"segmentations/x/y.png": _png(np.zeros((4, 4), np.uint8))})
    assert main(["prep-cub", "--archive", str(tmp_path / "CUB_200_2011.tgz"), "--segmentations",
                 str(tmp_path / "noseg.tgz"), "--out", str(tmp_path / "o")]) == 2
    assert "masks missing" in capsys.readouterr().err
    assert main(["prep-cub", "--archive", str(tmp_path / "missing.tgz"), "--segmentations",
                 str(tmp_path / "noseg.tgz"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def _voc(box):
    x, y, w, h = box
    return (f"<annotation><size><width>9</width></size><object><name>dog</name><bndbox>"
            f"<xmin>{x + 1}</xmin><ymin>{y + 1}</ymin><xmax>{x + w}</xmax><ymax>{y + h}</ymax>"
            f"</bndbox></object><object><name>dog</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>3</xmax>"
            f"<ymax>3</ymax></bndbox></object></annotation>").encode()


def _fake_dogs(tmp_path):
    imgs, anns = {}, {}
    masks = tmp_path / "dog_masks"
    names = []
    for i, (w, h, box) in enumerate(SCENES):
        breed = "n02085620-Chihuahua" if i < 2 else "n02085782-Japanese_spaniel"
        name = f"{breed.split('-')[0]}_{i + 10}"
        img, m = _scene(w, h, box, i)
        imgs[f"Images/{breed}/{name}.jpg"] = _jpg(img)
        anns[f"Annotation/{breed}/{name}"] = _voc(box)
        (masks / breed).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.where(m > 127, 255, 0).astype(np.uint8)).save(masks / breed / f"{name}.png")
        names.append(f"{breed}/{name}.jpg")
    _tar(tmp_path / "images.tar", imgs, "w")
    _tar(tmp_path / "annotation.tar", anns, "w")
    (tmp_path / "test_list.txt").write_text("\n".join(names[1:]) + "\n")
    return names


def test_prep_dogs(tmp_path):
    names = _fake_dogs(tmp_path)
    out = tmp_path / "dogs"
    assert main(["prep-dogs", "--images", str(tmp_path / "images.tar"), "--annotations",
                 str(tmp_path / "annotation.tar"), "--lists", str(tmp_path / "test_list.txt"), "--masks",
                 str(tmp_path / "dog_masks"), "--out", str(out), "--resolution", str(R)]) == 0
    ds = _check_out(out, 3)
    for i in range(3):  # the largest box (the dog), not the 3x3 one
        assert abs(ds[i][1].float().mean().item() - (2 / 3) ** 2) < 0.06 or i == 1  # scene 3 clipped
    with pytest.raises(DatasetError, match="lists"):
        prepare_dogs(tmp_path / "images.tar", tmp_path / "annotation.tar", tmp_path / "dog_masks",
                     tmp_path / "x", split="test", progress=False)


def test_prep_dogs_mat_lists(tmp_path):
    sio = pytest.importorskip("scipy.io")
    names = _fake_dogs(tmp_path)
    buf = io.BytesIO()
    sio.savemat(buf, {"file_list": np.array(names[:2], dtype=object)})
    _tar(tmp_path / "lists.tar", {"train_list.mat": buf.getvalue(), "file_list.mat": buf.getvalue()}, "w")
    info = prepare_dogs(tmp_path / "images.tar", tmp_path / "annotation.tar", tmp_path / "dog_masks",
                        tmp_path / "o", lists=tmp_path / "lists.tar", split="train", resolution=R,
                        progress=False)
    assert info["written"] == 2


def _fake_cars(tmp_path, with_mat):
    imgs = {}
    masks = tmp_path / "car_masks"
    masks.mkdir()
    recs = []
    for i, (w, h, box) in enumerate(SCENES, 1):
        img, m = _scene(w, h, box, i)
        imgs[f"cars_test/{i:05d}.jpg"] = _jpg(img)
        Image.fromarray(np.where(m > 127, 255, 0).astype(np.uint8)).save(masks / f"{i:05d}.png")
        x, y, bw, bh = box
        recs.append((x + 1, y + 1, x + bw, y + bh, f"{i:05d}.jpg"))
    _tar(tmp_path / "cars_test.tgz", imgs)
    (tmp_path / "boxes.txt").write_text(
        "".join(f"{r[4]} {r[0] - 1} {r[1] - 1} {r[2] - r[0] + 1} {r[3] - r[1] + 1}\n" for r in recs))
    if with_mat:
        import scipy.io as sio

        dt = [("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"), ("fname", "O")]
        arr = np.array([tuple(np.array([[v]], dtype=np.uint16) if k < 4 else v for k, v in enumerate(r))
                        for r in recs], dtype=dt)
        buf = io.BytesIO()
        sio.savemat(buf, {"annotations": arr.reshape(1, -1)})
        _tar(tmp_path / "car_devkit.tgz", {"devkit/cars_test_annos.mat": buf.getvalue(),
                                            "devkit/cars_meta.mat": buf.getvalue()})


def test_prep_cars_boxes_txt(tmp_path):
    _fake_cars(tmp_path, with_mat=False)
    out = tmp_path / "cars"
    assert main(["prep-cars", "--images", str(tmp_path / "cars_test.tgz"), "--boxes", str(tmp_path / "boxes.txt"),
                 "--masks", str(tmp_path / "car_masks"), "--out", str(out), "--resolution", str(R)]) == 0
    ds = _check_out(out, 4)
    assert abs(ds[0][1].float().mean().item() - (2 / 3) ** 2) < 0.05
    with pytest.raises(DatasetError, match="devkit"):
        prepare_cars(tmp_path / "cars_test.tgz", tmp_path / "x", tmp_path / "car_masks", progress=False)


def test_prep_cars_devkit_mat(tmp_path):
    pytest.importorskip("scipy.io")
    _fake_cars(tmp_path, with_mat=True)
    a = prepare_cars(tmp_path / "cars_test.tgz", tmp_path / "a", tmp_path / "car_masks",
                     devkit=tmp_path / "car_devkit.tgz", resolution=R, progress=False)
    b = prepare_cars(tmp_path / "cars_test.tgz", tmp_path / "b", tmp_path / "car_masks",
                     boxes=tmp_path / "boxes.txt", resolution=R, progress=False)
    assert a["written"] == b["written"] == 4
    for n in ("00001", "00003"):
        assert (tmp_path / "a" / "images" / f"{n}.png").read_bytes() == (tmp_path / "b" / "images" / f"{n}.png").read_bytes()
