"""Prepare CUB-200-2011, Stanford Dogs and Stanford Cars from their original archives (local paths,
no downloads) into the package's image+mask layout::

    OUT/images/NAME.png   (or OUT/images.zip with --zip)
    OUT/masks/NAME.png    (0 / 255)
    OUT/boxes.txt         (NAME x y w h of the object box in the original image)
    OUT/prep.json         (what was done: dataset, split, framing, resolution, counts)

Framings:
- ``box``   (test framing of DRC): square centred on the object box, side 1.5·max(w, h), clipped to
  the image, resized to R×R;
- ``center``: the centre square of the whole image (what the release trains the GAN on);
- ``none``: the whole image resized to R×R.
Images are resized with LANCZOS; masks with bilinear interpolation and then binarized at 0.5.
Everything is read in RGB order (the release reads Dogs and Cars as BGR; a quirk we do not copy).

Every archive argument accepts the original archive (.tgz / .tar.gz / .tar / .zip) or the folder it
was extracted into. Archives are streamed once in order (gzip does not seek).
"""

from __future__ import annotations

import io
import json
import tarfile
import warnings
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from .folders import DatasetError, IMAGE_EXTS, square_box, center_square, to_rgb, stem

__all__ = ["Archive", "prepare_cub", "prepare_dogs", "prepare_cars", "frame_pair", "FRAMINGS"]

FRAMINGS = ("box", "center", "none")


class Archive:
    """Read-only access to an extracted folder, a tar (any compression) or a zip, by POSIX member name."""

    def __init__(self, path, what: str):
        self.path = Path(path).expanduser()
        self.what = what
        if not self.path.exists():
            raise DatasetError(f"{what}: path does not exist: {self.path}")
        if self.path.is_dir():
            self.kind = "dir"
        elif zipfile.is_zipfile(self.path):
            self.kind = "zip"
        else:
            try:
                ok = tarfile.is_tarfile(self.path)
            except OSError:
                ok = False
            if not ok:
                raise DatasetError(f"{what}: {self.path} is neither a folder, a tar archive nor a zip")
            self.kind = "tar"

    def names(self) -> list[str]:
        if self.kind == "dir":
            return sorted(p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file())
        if self.kind == "zip":
            with zipfile.ZipFile(self.path) as z:
                return [n for n in z.namelist() if not n.endswith("/")]
        with tarfile.open(self.path, "r:*") as t:
            return [m.name for m in t if m.isfile()]

    def iter_files(self, want: Callable[[str], bool]) -> Iterator[tuple[str, bytes]]:
        """(name, bytes) of every member for which ``want(name)``; archive order for tars."""
        try:
            if self.kind == "dir":
                for p in sorted(self.path.rglob("*")):
                    if p.is_file():
                        n = p.relative_to(self.path).as_posix()
                        if want(n):
                            yield n, p.read_bytes()
            elif self.kind == "zip":
                with zipfile.ZipFile(self.path) as z:
                    for n in z.namelist():
                        if not n.endswith("/") and want(n):
                            yield n, z.read(n)
            else:
                with tarfile.open(self.path, "r|*") as t:
                    for m in t:
                        if m.isfile() and want(m.name):
                            f = t.extractfile(m)
                            yield m.name, f.read() if f is not None else b""
        except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError) as e:
            raise DatasetError(f"{self.what}: cannot read {self.path}: {e}") from e

    def read_by_basename(self, basenames: Iterable[str]) -> dict[str, tuple[str, bytes]]:
        """The first member whose file name is one of ``basenames`` -> {basename: (member, bytes)}."""
        wanted = set(basenames)
        out: dict[str, tuple[str, bytes]] = {}
        for n, b in self.iter_files(lambda n: PurePosixPath(n).name in wanted):
            out.setdefault(PurePosixPath(n).name, (n, b))
        return out


def _decode(b: bytes, where: str) -> Image.Image:
    img = Image.open(io.BytesIO(b))
    img.load()
    return img


def frame_pair(img: Image.Image, mask: Image.Image | None, box, framing: str, resolution: int,
               scale: float = 1.5) -> tuple[Image.Image, np.ndarray | None]:
    """Frame and resize an RGB image and its (grayscale) mask; returns (image, uint8 mask 0/255)."""
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")
    img = to_rgb(img)
    w, h = img.size
    if mask is not None:
        if mask.mode in ("RGBA", "LA"):
            mask = mask.getchannel("A")
        mask = mask.convert("L")
        if mask.size != img.size:
            mask = mask.resize(img.size, Image.BILINEAR)
    if framing == "box":
        rect = square_box(box, w, h, scale)
    elif framing == "center":
        rect = center_square(w, h)
    else:
        rect = (0, 0, w, h)
    img = img.crop(rect).resize((resolution, resolution), Image.LANCZOS)
    m = None
    if mask is not None:
        mf = np.asarray(mask.crop(rect), dtype=np.float32) / 255.0
        mr = Image.fromarray(mf, mode="F").resize((resolution, resolution), Image.BILINEAR)
        m = np.where(np.asarray(mr) >= 0.5, 255, 0).astype(np.uint8)
    return img, m


class _Writer:
    def __init__(self, out, as_zip: bool, overwrite: bool = True):
        self.out = Path(out).expanduser()
        try:
            (self.out / "masks").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DatasetError(f"cannot create output folder {self.out}: {e}") from e
        self.zip = None
        if as_zip:
            self.zip = zipfile.ZipFile(self.out / "images.zip", "w", zipfile.ZIP_STORED)
        else:
            (self.out / "images").mkdir(exist_ok=True)
        self.boxes: list[str] = []
        self.n = 0

    def add(self, name: str, img: Image.Image, mask: np.ndarray | None, box) -> None:
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        if self.zip is not None:
            self.zip.writestr(f"{name}.png", buf.getvalue())
        else:
            p = self.out / "images" / f"{name}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(buf.getvalue())
        if mask is not None:
            p = self.out / "masks" / f"{name}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask, "L").save(p)
        if box is not None:
            self.boxes.append(f"{name} {box[0]:g} {box[1]:g} {box[2]:g} {box[3]:g}")
        self.n += 1

    def close(self, info: dict) -> None:
        if self.zip is not None:
            self.zip.close()
        if self.boxes:
            (self.out / "boxes.txt").write_text("\n".join(self.boxes) + "\n")
        info = dict(info, written=self.n)
        (self.out / "prep.json").write_text(json.dumps(info, indent=2) + "\n")


def _progress(total: int | None, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled)


def _check_args(framing: str, resolution: int, split: str, splits=("train", "test", "all")):
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}, got {framing!r}")
    if int(resolution) < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    if split not in splits:
        raise ValueError(f"split must be one of {splits}, got {split!r}")


# ----------------------------------------------------------------------------- CUB-200-2011


def _parse_table(text: str, where: str, ncols: int) -> dict[str, list[str]]:
    out = {}
    for ln, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < ncols:
            raise DatasetError(f"{where}:{ln}: expected {ncols} columns, got {line!r}")
        out[parts[0]] = parts[1:]
    return out


def prepare_cub(archive, segmentations, out, *, split: str = "test", resolution: int = 64,
                framing: str = "box", split_file=None, as_zip: bool = False, limit: int | None = None,
                progress: bool = True) -> dict:
    """CUB-200-2011 -> image+mask folder.

    ``archive``: ``CUB_200_2011.tgz`` or its extracted folder (``CUB_200_2011/images/<class>/<name>.jpg``,
    ``images.txt`` "<id> <class>/<name>.jpg", ``bounding_boxes.txt`` "<id> x y w h",
    ``train_test_split.txt`` "<id> <is_training 1|0>").
    ``segmentations``: ``segmentations.tgz`` or folder (``segmentations/<class>/<name>.png``, soft
    masks, binarized at 0.5 after resizing).
    ``split_file``: optional 3-valued split (ReDO/DRC ``train_val_test_split.txt``: "<id> 0|1|2",
    0 train, 1 val, 2 test; the paper's protocol) used instead of ``train_test_split.txt``.
    """
    _check_args(framing, resolution, split)
    arc = Archive(archive, "CUB archive")
    seg = Archive(segmentations, "CUB segmentations")
    meta = arc.read_by_basename(["images.txt", "bounding_boxes.txt", "train_test_split.txt"])
    for f in ("images.txt", "bounding_boxes.txt"):
        if f not in meta:
            raise DatasetError(f"CUB archive {arc.path}: no {f} (expected the CUB_200_2011 layout: images/, "
                               "images.txt, bounding_boxes.txt, train_test_split.txt)")
    prefix = str(PurePosixPath(meta["images.txt"][0]).parent)
    prefix = "" if prefix == "." else prefix + "/"
    images = _parse_table(meta["images.txt"][1].decode(), "images.txt", 2)
    boxes = _parse_table(meta["bounding_boxes.txt"][1].decode(), "bounding_boxes.txt", 5)
    if split_file is not None:
        p = Path(split_file).expanduser()
        if not p.is_file():
            raise DatasetError(f"split file does not exist: {p}")
        table = _parse_table(p.read_text(), str(p), 2)
        code = {"train": {"0"}, "test": {"2"}, "all": {"0", "1", "2"}}[split]
        keep_id = {i for i, v in table.items() if v[0] in code}
        split_source = f"{p} (0 train / 1 val / 2 test)"
    elif split == "all":
        keep_id = set(images)
        split_source = "all"
    else:
        if "train_test_split.txt" not in meta:
            raise DatasetError(f"CUB archive {arc.path}: no train_test_split.txt (or pass --split-file)")
        table = _parse_table(meta["train_test_split.txt"][1].decode(), "train_test_split.txt", 2)
        flag = "1" if split == "train" else "0"
        keep_id = {i for i, v in table.items() if v[0] == flag}
        split_source = "train_test_split.txt (1 train / 0 test)"
    wanted = {}  # "<class>/<name>" (no ext) -> (id, rel image path)
    for i, v in images.items():
        if i in keep_id:
            wanted[stem(v[0])] = (i, v[0])
    if not wanted:
        raise DatasetError(f"CUB: no images in split {split!r} ({split_source})")
    keys = sorted(wanted)
    if limit is not None:
        keys = keys[: int(limit)]
    keyset = set(keys)

    # masks first (small), keyed by "<class>/<name>"
    masks: dict[str, bytes] = {}

    def seg_key(n: str) -> str | None:
        parts = PurePosixPath(n).parts
        if len(parts) < 2 or not n.lower().endswith(".png"):
            return None
        return stem("/".join(parts[-2:]))

    for n, b in seg.iter_files(lambda n: seg_key(n) in keyset):
        masks[seg_key(n)] = b
    missing = keyset - set(masks)
    if missing:
        raise DatasetError(f"CUB segmentations {seg.path}: {len(missing)} of {len(keyset)} masks missing, e.g. "
                           f"segmentations/{sorted(missing)[0]}.png")

    w = _Writer(out, as_zip)
    skipped = []
    bar = _progress(len(keys), f"CUB {split}", progress)
    img_prefix = prefix + "images/"
    for n, b in arc.iter_files(lambda n: n.startswith(img_prefix) and stem(n[len(img_prefix):]) in keyset):
        key = stem(n[len(img_prefix):])
        i = wanted[key][0]
        box = tuple(float(x) for x in boxes[i][:4])
        try:
            img, m = frame_pair(_decode(b, n), _decode(masks[key], key), box, framing, resolution)
        except (OSError, ValueError, SyntaxError) as e:
            warnings.warn(f"CUB: skipping {n}: {e}")
            skipped.append(n)
            continue
        w.add(key, img, m, box)
        bar.update(1)
    bar.close()
    info = dict(dataset="CUB-200-2011", split=split, split_source=split_source, framing=framing,
                resolution=resolution, expected=len(keys), skipped=skipped)
    w.close(info)
    if w.n == 0:
        raise DatasetError(f"CUB: no image of split {split!r} found under {img_prefix} in {arc.path}")
    return dict(info, written=w.n)


# ----------------------------------------------------------------------------- helpers for Dogs / Cars


def _loadmat(b: bytes, where: str):
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DatasetError(f"reading {where} (a MATLAB .mat file) needs scipy, ilsgan's 'data' extra: "
                           "pip install 'ilsgan[data]' (or give the list/boxes as text files, see --help)") from None
    return loadmat(io.BytesIO(b), squeeze_me=True, struct_as_record=False)


def _mat_strings(v) -> list[str]:
    arr = np.atleast_1d(v)
    return [str(x if not isinstance(x, np.ndarray) else x.item()) for x in arr.ravel()]


def _read_list_file(path) -> list[str]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise DatasetError(f"list file does not exist: {p}")
    return [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def _index_masks(masks) -> dict[str, str]:
    """Mask folder (or zip/tar) -> {stem: member}; stems both as relative path and as bare file name."""
    arc = Archive(masks, "masks")
    idx: dict[str, str] = {}
    for n in arc.names():
        if n.lower().endswith(IMAGE_EXTS):
            s = stem(n)
            idx.setdefault(s, n)
            idx.setdefault(PurePosixPath(s).name, n)
    if not idx:
        raise DatasetError(f"no mask images in {arc.path}")
    return idx


def _read_masks(masks, wanted_members: set[str]) -> dict[str, bytes]:
    arc = Archive(masks, "masks")
    return dict(arc.iter_files(lambda n: n in wanted_members))


def _find_mask(idx: dict[str, str], key: str) -> str | None:
    for k in (key, PurePosixPath(key).name):
        if k in idx:
            return idx[k]
    return None


def _process(kind: str, image_arc: Archive, match: Callable[[str], str | None], items: dict, mask_bytes,
             mask_member, out, framing, resolution, as_zip, progress, info) -> dict:
    """items: key -> box; match(member) -> key or None."""
    w = _Writer(out, as_zip)
    skipped = []
    bar = _progress(len(items), kind, progress)
    for n, b in image_arc.iter_files(lambda n: match(n) in items):
        key = match(n)
        box = items[key]
        try:
            mimg = _decode(mask_bytes[mask_member[key]], mask_member[key])
            img, m = frame_pair(_decode(b, n), mimg, box, framing, resolution)
        except (OSError, ValueError, SyntaxError) as e:
            warnings.warn(f"{kind}: skipping {n}: {e}")
            skipped.append(n)
            continue
        w.add(key, img, m, box)
        bar.update(1)
    bar.close()
    info = dict(info, framing=framing, resolution=resolution, expected=len(items), skipped=skipped)
    w.close(info)
    if w.n == 0:
        raise DatasetError(f"{kind}: none of the {len(items)} listed images found in {image_arc.path}")
    return dict(info, written=w.n)


def _attach_masks(kind, items: dict, masks, limit):
    keys = sorted(items)
    if limit is not None:
        keys = keys[: int(limit)]
    idx = _index_masks(masks)
    member = {}
    missing = []
    for k in keys:
        m = _find_mask(idx, k)
        if m is None:
            missing.append(k)
        else:
            member[k] = m
    if missing:
        raise DatasetError(f"{kind}: {len(missing)} of {len(keys)} images have no mask in {masks}, e.g. "
                           f"{missing[0]}.png (masks are matched by relative name or bare file name)")
    return {k: items[k] for k in keys}, member, _read_masks(masks, set(member.values()))


# ----------------------------------------------------------------------------- Stanford Dogs


def _voc_box(xml: bytes, where: str):
    """Largest object box of a PASCAL-VOC annotation -> (x, y, w, h), 0-based pixels."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as e:
        raise DatasetError(f"{where}: not a valid annotation XML: {e}") from None
    best = None
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            continue
        x1, y1, x2, y2 = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        box = (x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1)
        if best is None or box[2] * box[3] > best[2] * best[3]:
            best = box
    if best is None:
        raise DatasetError(f"{where}: no <object><bndbox> in the annotation")
    return best


def prepare_dogs(images, annotations, masks, out, *, lists=None, split: str = "test", resolution: int = 64,
                 framing: str = "box", as_zip: bool = False, limit: int | None = None,
                 progress: bool = True) -> dict:
    """Stanford Dogs -> image+mask folder.

    ``images``: ``images.tar`` or folder (``Images/<wnid>-<breed>/<wnid>_<n>.jpg``);
    ``annotations``: ``annotation.tar`` or folder (``Annotation/<wnid>-<breed>/<wnid>_<n>``, PASCAL-VOC
    XML without extension; the largest object box is used);
    ``lists``: ``lists.tar`` or folder with ``train_list.mat`` / ``test_list.mat`` (field
    ``file_list``; needs scipy), or a text file with one ``<breed dir>/<name>.jpg`` per line;
    ``None`` with split ``all`` takes every image;
    ``masks``: folder (or zip/tar) of masks named ``<breed dir>/<name>.png`` or ``<name>.png``.
    """
    _check_args(framing, resolution, split)
    img_arc = Archive(images, "Dogs images")
    ann_arc = Archive(annotations, "Dogs annotations")
    if split == "all" and lists is None:
        listed = None
    elif lists is None:
        raise DatasetError("Stanford Dogs: split train/test needs --lists (lists.tar, its folder, or a text list)")
    else:
        lp = Path(lists).expanduser()
        if lp.is_file() and lp.suffix.lower() == ".txt":
            listed = set(stem(x) for x in _read_list_file(lp))
        else:
            la = Archive(lp, "Dogs lists")
            files = ["train_list.mat", "test_list.mat"] if split == "all" else [f"{split}_list.mat"]
            got = la.read_by_basename(files)
            listed = set()
            for f in files:
                if f not in got:
                    raise DatasetError(f"Stanford Dogs lists {la.path}: no {f}")
                listed |= {stem(x) for x in _mat_strings(_loadmat(got[f][1], f)["file_list"])}
    items = {}
    for n, b in ann_arc.iter_files(lambda n: len(PurePosixPath(n).parts) >= 2):
        parts = PurePosixPath(n).parts
        key = "/".join(parts[-2:])
        key = stem(key) if PurePosixPath(key).suffix.lower() == ".xml" else key
        if listed is not None and key not in listed:
            continue
        items[key] = _voc_box(b, n)
    if not items:
        raise DatasetError(f"Stanford Dogs: no annotations for split {split!r} in {ann_arc.path} "
                           "(expected Annotation/<wnid>-<breed>/<name> XML files)")
    items, member, mbytes = _attach_masks("Stanford Dogs", items, masks, limit)

    def match(n: str):
        p = PurePosixPath(n)
        if p.suffix.lower() not in IMAGE_EXTS or len(p.parts) < 2:
            return None
        return stem("/".join(p.parts[-2:]))

    return _process("Stanford Dogs", img_arc, match, items, mbytes, member, out, framing, resolution,
                    as_zip, progress, dict(dataset="Stanford Dogs", split=split))


# ----------------------------------------------------------------------------- Stanford Cars


def _parse_cars_annos(b: bytes, where: str) -> dict[str, tuple[float, float, float, float]]:
    mat = _loadmat(b, where)
    if "annotations" not in mat:
        raise DatasetError(f"{where}: no 'annotations' struct (expected cars_{{train,test}}_annos.mat)")
    out = {}
    for a in np.atleast_1d(mat["annotations"]):
        x1, y1, x2, y2 = (float(getattr(a, f)) for f in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"))
        out[stem(str(a.fname))] = (x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1)
    return out


def prepare_cars(images, out, masks, *, devkit=None, boxes=None, split: str = "test", resolution: int = 64,
                 framing: str = "box", as_zip: bool = False, limit: int | None = None,
                 progress: bool = True) -> dict:
    """Stanford Cars -> image+mask folder (one split at a time).

    ``images``: ``cars_test.tgz`` / ``cars_train.tgz`` or the folder (``cars_test/00001.jpg``);
    ``devkit``: ``car_devkit.tgz`` or folder with ``devkit/cars_{split}_annos.mat`` (fields bbox_x1,
    bbox_y1, bbox_x2, bbox_y2 (1-based, inclusive), fname; needs scipy); a
    ``cars_test_annos_withlabels.mat`` given directly also works;
    ``boxes``: alternatively a text file of ``NAME x y w h`` lines (0-based);
    ``masks``: folder (or zip/tar) of ``<name>.png``.
    """
    _check_args(framing, resolution, split, ("train", "test"))
    img_arc = Archive(images, "Cars images")
    if boxes is not None:
        from .folders import read_boxes

        items = read_boxes(boxes)
    elif devkit is not None:
        dp = Path(devkit).expanduser()
        if dp.is_file() and dp.suffix.lower() == ".mat":
            items = _parse_cars_annos(dp.read_bytes(), str(dp))
        else:
            da = Archive(dp, "Cars devkit")
            f = f"cars_{split}_annos.mat"
            got = da.read_by_basename([f, "cars_test_annos_withlabels.mat"])
            if f not in got and not (split == "test" and "cars_test_annos_withlabels.mat" in got):
                raise DatasetError(f"Stanford Cars devkit {da.path}: no {f}")
            name = f if f in got else "cars_test_annos_withlabels.mat"
            items = _parse_cars_annos(got[name][1], got[name][0])
    elif framing == "box":
        raise DatasetError("Stanford Cars: box framing needs --devkit (car_devkit.tgz) or --boxes")
    else:
        items = {stem(PurePosixPath(n).name): None for n in img_arc.names()
                 if n.lower().endswith(IMAGE_EXTS)}
    if not items:
        raise DatasetError("Stanford Cars: no annotated images")
    items, member, mbytes = _attach_masks("Stanford Cars", items, masks, limit)

    def match(n: str):
        p = PurePosixPath(n)
        return stem(p.name) if p.suffix.lower() in IMAGE_EXTS else None

    return _process("Stanford Cars", img_arc, match, items, mbytes, member, out, framing, resolution,
                    as_zip, progress, dict(dataset="Stanford Cars", split=split))
