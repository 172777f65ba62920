"""Image datasets from folders and zip archives, and image+mask folders.

Layout read by every image+mask option of the package::

    DIR/images/NAME.(png|jpg|jpeg|webp|bmp)   # any size, RGB/grayscale/RGBA/palette
    DIR/masks/NAME.png                         # same relative name (stem), 0 = bg, >127 = fg

Images found recursively; names compared by relative path without extension.
"""

from __future__ import annotations

import io
import os
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

__all__ = [
    "DatasetError", "IMAGE_EXTS", "ImageSource", "ImageFolderDataset", "ImageMaskDataset",
    "read_boxes", "parse_boxes", "square_box", "center_square", "to_rgb", "ReadCounter",
]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
CROPS = ("center", "none", "box")
BOX_SIDECARS = ("boxes.txt",)


class DatasetError(ValueError):
    """A dataset that cannot be used: missing, empty, unreadable, images without masks, ...

    The message names the path and says what was expected.
    """


# zlib.error: a zip member rewritten or truncated after the archive was indexed fails to inflate.
_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, zipfile.BadZipFile,
                  Image.DecompressionBombError, EOFError, zlib.error)


class ReadCounter:
    """Image reads and failed reads of a dataset, summed over the main process and its DataLoader
    workers (what the training loop needs to log skips and to stop when too many reads fail).

    The counts live in a tensor in shared memory with one row per process (row 0 the main process,
    then one per worker id), so workers' counts reach the main process without messages, and no
    increment is lost to two processes updating the same cell (worker ids beyond 63 share rows)."""

    ROWS = 64

    def __init__(self):
        self._t = torch.zeros(self.ROWS, 2, dtype=torch.int64)
        try:
            self._t.share_memory_()
        except (RuntimeError, OSError):  # no shared memory: workers' counts then stay in the workers
            pass

    @classmethod
    def _row(cls) -> int:
        info = torch.utils.data.get_worker_info()
        return 0 if info is None else 1 + info.id % (cls.ROWS - 1)

    def add(self, reads: int = 0, failures: int = 0) -> None:
        row = self._t[self._row()]
        row[0] += reads
        row[1] += failures

    def totals(self) -> tuple[int, int]:
        """``(reads, failures)`` over all processes so far."""
        reads, failures = self._t.sum(0).tolist()
        return int(reads), int(failures)


class ImageSource:
    """Image files under a folder (recursively) or inside a .zip, listed by relative POSIX path."""

    def __init__(self, path, what: str = "dataset"):
        self.path = Path(path)
        self.what = what
        if not self.path.exists():
            raise DatasetError(f"{what} path does not exist: {self.path}")
        self.is_zip = self.path.is_file()
        if self.is_zip:
            if not zipfile.is_zipfile(self.path):
                raise DatasetError(
                    f"{what} path is a file but not a readable .zip archive: {self.path} "
                    f"(expected a folder of images or a .zip of images)")
            try:
                with zipfile.ZipFile(self.path) as z:
                    names = [n for n in z.namelist() if not n.endswith("/")]
            except (zipfile.BadZipFile, OSError) as e:
                raise DatasetError(f"cannot read {what} archive {self.path}: {e}") from e
            self.files = sorted(n for n in names if n.lower().endswith(IMAGE_EXTS)
                                and not Path(n).name.startswith("."))
        elif self.path.is_dir():
            try:
                self.files = sorted(
                    p.relative_to(self.path).as_posix() for p in self.path.rglob("*")
                    if p.suffix.lower() in IMAGE_EXTS and p.is_file() and not p.name.startswith("."))
            except OSError as e:
                raise DatasetError(f"cannot list {what} folder {self.path}: {e}") from e
        else:
            raise DatasetError(f"{what} path is neither a folder nor a .zip file: {self.path}")
        self._zip = None
        self._zip_pid = None

    def __len__(self) -> int:
        return len(self.files)

    def __getstate__(self):  # zip handles are per process (DataLoader workers)
        d = dict(self.__dict__)
        d["_zip"] = None
        d["_zip_pid"] = None
        return d

    def read_bytes(self, name: str) -> bytes:
        if self.is_zip:
            if self._zip is None or self._zip_pid != os.getpid():
                self._zip = zipfile.ZipFile(self.path)
                self._zip_pid = os.getpid()
            return self._zip.read(name)
        return (self.path / name).read_bytes()

    def open(self, name: str) -> Image.Image:
        """Open and fully decode one image (raises one of the decode errors when corrupt)."""
        img = Image.open(io.BytesIO(self.read_bytes(name)))
        img.load()
        return img

    def header_ok(self, name: str) -> bool:
        try:
            with Image.open(io.BytesIO(self.read_bytes(name))) as img:
                w, h = img.size
                img.verify()
            return w > 0 and h > 0
        except _DECODE_ERRORS + (KeyError,):
            return False

    def describe(self) -> str:
        return f"{'zip' if self.is_zip else 'folder'} {self.path}"


def stem(name: str) -> str:
    """Relative name without extension (the key pairing images with masks and boxes)."""
    p = Path(name)
    return p.with_suffix("").as_posix()


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Alpha is composited over black (what dropping the channel gives for
    premultiplied-looking cut-outs); palettes and grayscale are expanded."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (0, 0, 0, 255))
        return Image.alpha_composite(bg, img).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(img, dtype=np.float64)
        a = np.clip(a / max(a.max(), 1.0) * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(a, "L").convert("RGB")
    return img.convert("RGB")


def center_square(w: int, h: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the largest centred square."""
    s = min(w, h)
    left = (w - s) // 2
    top = (h - s) // 2
    return left, top, left + s, top + s


def square_box(box, w: int, h: int, scale: float = 1.5) -> tuple[int, int, int, int]:
    """The test framing of the DRC protocol: a square centred on the box ``(x, y, bw, bh)`` with side
    ``scale * max(bw, bh)``, clipped to the image; returns (left, top, right, bottom) in pixels."""
    x, y, bw, bh = (float(v) for v in box)
    side = scale * max(bw, bh)
    cx, cy = x + bw / 2.0, y + bh / 2.0
    left = int(round(max(0.0, cx - side / 2.0)))
    top = int(round(max(0.0, cy - side / 2.0)))
    right = int(round(min(float(w), cx + side / 2.0)))
    bottom = int(round(min(float(h), cy + side / 2.0)))
    if right <= left or bottom <= top:
        raise ValueError(f"box {box} lies outside the {w}x{h} image")
    return left, top, right, bottom


def read_boxes(path) -> dict[str, tuple[float, float, float, float]]:
    """Read a box sidecar: one line per image, ``RELATIVE/NAME x y w h`` (pixels of the original
    image, top-left corner and size; the name may contain spaces, the four numbers are the last
    fields; the name may be given with or without extension). ``#`` starts a comment."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise DatasetError(f"cannot read box sidecar {path}: {e}") from e
    return parse_boxes(text, str(path))


def parse_boxes(text: str, where: str = "<boxes>") -> dict[str, tuple[float, float, float, float]]:
    boxes: dict[str, tuple[float, float, float, float]] = {}
    for ln, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.rsplit(None, 4)
        if len(parts) != 5:
            raise DatasetError(f"{where}:{ln}: expected 'NAME x y w h', got {line!r}")
        try:
            vals = tuple(float(v) for v in parts[1:])
        except ValueError:
            raise DatasetError(f"{where}:{ln}: box values must be numbers, got {line!r}") from None
        if vals[2] <= 0 or vals[3] <= 0:
            raise DatasetError(f"{where}:{ln}: box width and height must be > 0, got {line!r}")
        boxes[stem(parts[0])] = vals  # type: ignore[assignment]
    return boxes


def _resize(img: Image.Image, resolution: int | None, resample) -> Image.Image:
    if resolution is None or img.size == (resolution, resolution):
        return img
    return img.resize((resolution, resolution), resample)


def _verify(src: ImageSource, files: list[str], verify: str) -> tuple[list[str], list[str]]:
    if verify not in ("header", "full", "none"):
        raise ValueError(f"verify must be 'header', 'full' or 'none', got {verify!r}")
    if verify == "none":
        return files, []
    good, bad = [], []
    for f in files:
        if verify == "header":
            ok = src.header_ok(f)
        else:
            try:
                src.open(f)
                ok = True
            except _DECODE_ERRORS + (KeyError,):
                ok = False
        (good if ok else bad).append(f)
    return good, bad


def _warn_skipped(bad: list[str], where: str) -> None:
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        warnings.warn(f"{where}: skipped {len(bad)} unreadable image(s): {', '.join(bad[:3])}{more}",
                      stacklevel=3)


class ImageFolderDataset(Dataset):
    """Images from a folder (recursively) or a .zip; items uint8 ``[3, R, R]`` RGB.

    crop: ``"center"`` (centre square, then resize), ``"none"`` (resize the whole image, aspect not
    kept) or ``"box"`` (square of side 1.5·max(w, h) centred on the object box, clipped to the image,
    then resized — boxes from ``boxes`` (a dict or a sidecar path) or from ``boxes.txt`` at the root
    of the folder / zip, or ``ARCHIVE.zip.boxes.txt`` beside a zip; see :func:`read_boxes`).
    Unreadable images are skipped with a warning and counted in ``num_skipped``: at open time
    (``verify="header"``: header check; ``"full"``: full decode; ``"none"``) and, should decoding still
    fail later (a file deleted, truncated or rewritten after indexing), at access time: the next
    readable image is returned instead and ``read_counter`` (:class:`ReadCounter`, which also sees
    DataLoader workers) counts the attempt as a failure, so the training loop can log and bound them.
    """

    def __init__(self, path, resolution: int, *, crop: str = "center", boxes=None,
                 length: int | None = None, verify: str = "header", box_scale: float = 1.5):
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        if resolution is None or int(resolution) < 1:
            raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
        self.resolution = int(resolution)
        self.crop = crop
        self.box_scale = float(box_scale)
        self.src = ImageSource(path)
        files = list(self.src.files)
        if not files:
            raise DatasetError(
                f"no images found in {self.src.describe()} (looked for {', '.join(IMAGE_EXTS)}, recursively)")
        self.boxes = None
        skipped_nobox: list[str] = []
        if crop == "box":
            self.boxes = self._load_boxes(boxes)
            keep = [f for f in files if stem(f) in self.boxes]
            skipped_nobox = [f for f in files if stem(f) not in self.boxes]
            if skipped_nobox:
                warnings.warn(f"{self.src.describe()}: {len(skipped_nobox)} image(s) have no box in the "
                              f"sidecar and are skipped, e.g. {skipped_nobox[0]}", stacklevel=2)
            files = keep
        files, bad = _verify(self.src, files, verify)
        _warn_skipped(bad, self.src.describe())
        if not files:
            raise DatasetError(f"no readable images in {self.src.describe()} "
                               f"({len(bad)} unreadable, {len(skipped_nobox)} without a box)")
        if length is not None:
            if int(length) <= 0:
                raise ValueError(f"length must be > 0, got {length}")
            files = files[: int(length)]
        self.files = files
        self.names = [stem(f) for f in files]
        self.skipped = bad + skipped_nobox
        self.num_skipped = len(self.skipped)
        self.description = (f"{self.src.describe()}: {len(files)} images, crop={crop}, "
                            f"{self.resolution}px" + (f", {self.num_skipped} skipped" if self.num_skipped else ""))
        self.read_counter = ReadCounter()

    def _load_boxes(self, boxes):
        if isinstance(boxes, dict):
            return {stem(k): tuple(float(x) for x in v) for k, v in boxes.items()}
        if boxes is not None:
            return read_boxes(boxes)
        candidates = []
        if self.src.is_zip:
            candidates.append(Path(str(self.src.path) + ".boxes.txt"))
            with zipfile.ZipFile(self.src.path) as z:
                if "boxes.txt" in z.namelist():
                    return parse_boxes(z.read("boxes.txt").decode(), f"{self.src.path}!boxes.txt")
        else:
            candidates.append(self.src.path / "boxes.txt")
        for c in candidates:
            if c.is_file():
                return read_boxes(c)
        raise DatasetError(
            f"crop='box' needs object boxes: none given and no sidecar found for {self.src.describe()} "
            f"(looked for {', '.join(str(c) for c in candidates)}; lines 'NAME x y w h')")

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> Image.Image:
        """The framed, resized RGB PIL image (raises on a corrupt file)."""
        name = self.files[index]
        img = to_rgb(self.src.open(name))
        w, h = img.size
        if self.crop == "center":
            img = img.crop(center_square(w, h))
        elif self.crop == "box":
            img = img.crop(square_box(self.boxes[stem(name)], w, h, self.box_scale))
        return _resize(img, self.resolution, Image.LANCZOS)

    def __getitem__(self, index: int) -> torch.Tensor:
        n = len(self.files)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        index %= n
        for k in range(n):
            i = (index + k) % n
            try:
                img = self.load(i)
                self.read_counter.add(reads=1)
                break
            except _DECODE_ERRORS + (KeyError,) as e:
                self.num_skipped += 1
                self.read_counter.add(reads=1, failures=1)
                warnings.warn(f"{self.src.describe()}: skipping unreadable image {self.files[i]}: {e}",
                              stacklevel=2)
        else:
            raise DatasetError(f"no readable image left in {self.src.describe()}")
        a = np.asarray(img, dtype=np.uint8)
        return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return f"ImageFolderDataset({self.description})"


def read_mask(img: Image.Image) -> np.ndarray:
    """A mask image -> bool array (fg where the gray level > 127; alpha used for RGBA masks)."""
    if img.mode in ("RGBA", "LA"):
        a = np.asarray(img.getchannel("A"))
    elif img.mode == "1":
        a = np.asarray(img.convert("L"))
    else:
        a = np.asarray(img.convert("L"))
    return a > 127


class ImageMaskDataset(Dataset):
    """Pairs ``(image uint8 [3, R, R], mask bool [1, R, R])`` from ``images`` and ``masks`` (folders or
    zips) paired by relative name without extension. ``resolution=None`` keeps the native size
    (then mask and image must have the same size). Otherwise the image is resized whole (LANCZOS, or
    centre-cropped first with ``crop="center"``) and the mask with nearest-neighbour."""

    def __init__(self, images, masks, resolution: int | None = None, *, crop: str = "none",
                 verify: str = "header"):
        if crop not in ("none", "center"):
            raise ValueError(f"crop must be 'none' or 'center' for image+mask data, got {crop!r}")
        self.resolution = None if resolution is None else int(resolution)
        self.crop = crop
        self.images = ImageSource(images, "images")
        self.masks = ImageSource(masks, "masks")
        if not self.images.files:
            raise DatasetError(f"no images found in {self.images.describe()} "
                               f"(looked for {', '.join(IMAGE_EXTS)}, recursively)")
        mask_by_stem = {}
        for m in self.masks.files:
            mask_by_stem.setdefault(stem(m), m)
        missing = [f for f in self.images.files if stem(f) not in mask_by_stem]
        if missing:
            raise DatasetError(
                f"{len(missing)} of {len(self.images.files)} images in {self.images.describe()} have no "
                f"mask in {self.masks.describe()} (same relative name, any image extension), e.g. "
                f"{missing[0]!r} (expected e.g. {stem(missing[0])}.png)")
        files, bad = _verify(self.images, list(self.images.files), verify)
        _warn_skipped(bad, self.images.describe())
        if not files:
            raise DatasetError(f"no readable images in {self.images.describe()}")
        self.files = files
        self.mask_files = [mask_by_stem[stem(f)] for f in files]
        self.names = [stem(f) for f in files]
        self.num_skipped = len(bad)
        self.skipped = bad
        res = "native size" if self.resolution is None else f"{self.resolution}px"
        self.description = (f"images {self.images.describe()} + masks {self.masks.describe()}: "
                            f"{len(files)} pairs, {res}" + (f", {len(bad)} skipped" if bad else ""))

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> tuple[Image.Image, np.ndarray]:
        img = to_rgb(self.images.open(self.files[index]))
        try:
            mimg = self.masks.open(self.mask_files[index])
        except _DECODE_ERRORS as e:
            raise DatasetError(f"unreadable mask {self.mask_files[index]} in {self.masks.describe()}: {e}") from e
        if self.crop == "center":
            img = img.crop(center_square(*img.size))
            mimg = mimg.crop(center_square(*mimg.size))
        if self.resolution is None and mimg.size != img.size:
            raise DatasetError(
                f"mask {self.mask_files[index]} is {mimg.size[0]}x{mimg.size[1]} but image "
                f"{self.files[index]} is {img.size[0]}x{img.size[1]} (pass a resolution to resize both)")
        img = _resize(img, self.resolution, Image.LANCZOS)
        if mimg.mode not in ("L", "1", "RGBA", "LA"):
            mimg = mimg.convert("L")
        mimg = _resize(mimg, self.resolution, Image.NEAREST)
        return img, read_mask(mimg)

    def __getitem__(self, index: int):
        n = len(self.files)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} pairs")
        img, mask = self.load(index % n)
        a = np.asarray(img, dtype=np.uint8)
        return (torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))),
                torch.from_numpy(np.ascontiguousarray(mask[None])))

    def __repr__(self) -> str:
        return f"ImageMaskDataset({self.description})"
