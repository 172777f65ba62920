"""Image folders / zips / image+mask folders, crops, errors, the synthetic CLI."""

import io
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from ilsgan.data import DatasetError, open_dataset, open_image_mask_folder
from ilsgan.data.__main__ import main
from ilsgan.data.folders import square_box


def _img(h, w, seed=0, mode="RGB"):
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(a)
    return im.convert(mode) if mode != "RGB" else im


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    _img(40, 60, 0).save(root / "a.png")
    _img(30, 20, 1).save(root / "sub" / "b.jpg")
    _img(25, 25, 2, "L").save(root / "c.bmp")
    _img(33, 31, 3, "RGBA").save(root / "sub" / "d.webp")
    (root / "broken.png").write_bytes(b"not an image at all")
    (root / "notes.txt").write_text("ignored")
    return root


def test_folder_dataset(folder):
    with pytest.warns(UserWarning, match="broken.png"):
        ds = open_dataset(folder, 16)
    assert len(ds) == 4 and ds.num_skipped == 1
    for i in range(len(ds)):
        x = ds[i]
        assert x.dtype == torch.uint8 and x.shape == (3, 16, 16)
    assert "4 images" in ds.description
    # grayscale -> RGB with equal channels
    gray = ds[ds.names.index("c")]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    with pytest.warns(UserWarning):
        assert len(open_dataset(folder, 16, length=2)) == 2


def test_center_and_none_crop(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, 10:30] = 255  # white centre square, black side bands
    (tmp_path / "d").mkdir()
    Image.fromarray(a).save(tmp_path / "d" / "x.png")
    c = open_dataset(tmp_path / "d", 20, crop="center")[0]
    assert int(c.min()) == 255
    n = open_dataset(tmp_path / "d", 20, crop="none")[0]
    assert int(n.min()) == 0 and n.shape == (3, 20, 20)


def test_box_crop_with_sidecar(tmp_path):
    a = np.zeros((100, 100, 3), np.uint8)
    a[40:60, 20:40] = 255  # the object, box x=20 y=40 w=20 h=20
    d = tmp_path / "d"
    d.mkdir()
    Image.fromarray(a).save(d / "obj.png")
    Image.fromarray(a).save(d / "nobox.png")
    (d / "boxes.txt").write_text("# name x y w h\nobj.png 20 40 20 20\n")
    with pytest.warns(UserWarning, match="no box"):
        ds = open_dataset(d, 30, crop="box")
    assert len(ds) == 1 and ds.num_skipped == 1
    x = ds[0].float().mean(0)
    # 1.5x box square: 30x30 crop, object in the middle 20x20
    assert square_box((20, 40, 20, 20), 100, 100) == (15, 35, 45, 65)
    assert x[15, 15] > 250 and x[2, 2] < 5 and x[27, 27] < 5
    # clipping at the image border
    assert square_box((0, 0, 20, 10), 100, 100) == (0, 0, 25, 20)
    (d / "boxes.txt").unlink()
    with pytest.raises(DatasetError, match="sidecar"):
        open_dataset(d, 30, crop="box")


def test_zip_dataset(tmp_path, folder):
    z = tmp_path / "data.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    with pytest.warns(UserWarning, match="broken.png"):
        ds = open_dataset(z, 8)
    assert len(ds) == 4 and ds.num_skipped == 1 and "zip" in ds.description
    ref = open_dataset(folder, 8, verify="none")
    assert torch.equal(ds[0], ref[0])
    # usable from DataLoader worker processes (zip handle reopened per process)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1)
    assert next(iter(loader)).shape == (2, 3, 8, 8)


def test_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        open_dataset(tmp_path / "nope", 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        open_dataset(tmp_path / "empty", 8)
    (tmp_path / "f.zip").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="f.zip"):
        open_dataset(tmp_path / "f.zip", 8)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="no readable images"), pytest.warns(UserWarning):
        open_dataset(tmp_path / "bad", 8)
    assert issubclass(DatasetError, ValueError)


def test_image_mask_folder(tmp_path):
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(3):
        _img(20, 30, i).save(root / "images" / f"n{i}.jpg")
        m = np.zeros((20, 30), np.uint8)
        m[5:15, 10:20] = 255
        Image.fromarray(m).save(root / "masks" / f"n{i}.png")
    ds = open_image_mask_folder(root)
    img, m = ds[0]
    assert img.shape == (3, 20, 30) and m.shape == (1, 20, 30) and m.dtype == torch.bool
    assert int(m.sum()) == 100 and ds.names == ["n0", "n1", "n2"]
    ds = open_image_mask_folder(root / "images", root / "masks", resolution=10)
    img, m = ds[1]
    assert img.shape == (3, 10, 10) and m.shape == (1, 10, 10)
    _img(20, 30, 9).save(root / "images" / "orphan.png")
    with pytest.raises(DatasetError, match="orphan"):
        open_image_mask_folder(root)
    (tmp_path / "only" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="masks"):
        open_image_mask_folder(tmp_path / "only")


def test_cli_synthetic_layout(tmp_path, capsys):
    out = tmp_path / "syn"
    assert main(["synthetic", "--out", str(out), "--n", "5", "--resolution", "32", "--tier", "hard",
                 "--split", "test", "--seed", "1"]) == 0
    names = sorted(p.name for p in (out / "images").iterdir())
    assert names == sorted(p.name for p in (out / "masks").iterdir()) and len(names) == 5
    m = np.asarray(Image.open(out / "masks" / names[0]))
    assert m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255}
    ds = open_image_mask_folder(out)
    from ilsgan.data import render

    s = render(0, 32, "hard", "test", 1)
    img, mask = ds[0]
    assert np.array_equal(img.permute(1, 2, 0).numpy(), s.image) and np.array_equal(mask[0].numpy(), s.mask)
    assert main(["baselines", "--images", str(tmp_path / "nope"), "--masks", str(out / "masks")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_truncated_image_skipped_at_access(tmp_path):
    d = tmp_path / "t"
    d.mkdir()
    _img(40, 40, 0).save(d / "a.png")
    b = io.BytesIO()
    _img(64, 64, 1).save(b, format="JPEG")
    (d / "b.jpg").write_bytes(b.getvalue()[: len(b.getvalue()) // 3])  # valid header, truncated data
    ds = open_dataset(d, 8)
    assert len(ds) == 2
    with pytest.warns(UserWarning, match="b.jpg"):
        x = ds[1]  # falls back to the next readable image
    assert torch.equal(x, ds[0]) and ds.num_skipped == 1
