"""``python -m ilsgan.data``: synthetic benchmark, trivial baselines, dataset preparation."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .folders import DatasetError

_LAYOUT = "DIR/images/NAME.png + DIR/masks/NAME.png (same names, masks 0/255)"


def _cmd_synthetic(a) -> int:
    from .synthetic import write_folder

    write_folder(a.out, a.n, a.resolution, a.tier, a.split, a.seed, a.start)
    print(f"wrote {a.n} images and masks to {a.out}/images and {a.out}/masks")
    return 0


def _cmd_baselines(a) -> int:
    from . import open_image_mask_folder
    from .baselines import available_methods, evaluate, format_table

    ds = open_image_mask_folder(a.images, a.masks, a.resolution)
    methods = a.methods.split(",") if a.methods else available_methods()
    if "grabcut" in methods and "grabcut" not in available_methods():
        print("grabcut skipped: OpenCV (cv2) is not installed (pip install 'ilsgan[grabcut]')", file=sys.stderr)
        methods = [m for m in methods if m != "grabcut"]
    n = len(ds) if a.limit is None else min(a.limit, len(ds))

    def pairs():
        for i in range(n):
            img, m = ds[i]
            yield img.numpy().transpose(1, 2, 0), m.numpy()[0]

    res = evaluate(pairs(), methods, progress=True, total=n)
    print(format_table(res, f"baselines on {ds.description}"))
    if a.json:
        Path(a.json).write_text(json.dumps(dict(dataset=ds.description, results=res), indent=2) + "\n")
    return 0


def _cmd_prep_cub(a) -> int:
    from .prep import prepare_cub

    info = prepare_cub(a.archive, a.segmentations, a.out, split=a.split, resolution=a.resolution,
                       framing=a.framing, split_file=a.split_file, as_zip=a.zip, limit=a.limit)
    print(f"wrote {info['written']} CUB images+masks ({a.split}, {a.framing} framing, {a.resolution}px) to {a.out}")
    return 0


def _cmd_prep_dogs(a) -> int:
    from .prep import prepare_dogs

    info = prepare_dogs(a.images, a.annotations, a.masks, a.out, lists=a.lists, split=a.split,
                        resolution=a.resolution, framing=a.framing, as_zip=a.zip, limit=a.limit)
    print(f"wrote {info['written']} Stanford Dogs images+masks ({a.split}, {a.framing} framing) to {a.out}")
    return 0


def _cmd_prep_cars(a) -> int:
    from .prep import prepare_cars

    info = prepare_cars(a.images, a.out, a.masks, devkit=a.devkit, boxes=a.boxes, split=a.split,
                        resolution=a.resolution, framing=a.framing, as_zip=a.zip, limit=a.limit)
    print(f"wrote {info['written']} Stanford Cars images+masks ({a.split}, {a.framing} framing) to {a.out}")
    return 0


def _prep_common(p, splits=("train", "test", "all")):
    p.add_argument("--out", required=True, help=f"output folder: {_LAYOUT}, plus boxes.txt and prep.json")
    p.add_argument("--split", default="test", choices=splits, help="which split (default: test)")
    p.add_argument("--resolution", type=int, default=64, help="output size R (R x R), default 64")
    p.add_argument("--framing", default="box", choices=("box", "center", "none"),
                   help="box: square of side 1.5*max(box w,h) centred on the object box, clipped to the "
                        "image (the test framing of the DRC protocol); center: centre square of the whole "
                        "image (the release's GAN training crop); none: whole image resized")
    p.add_argument("--zip", action="store_true", help="write the images as OUT/images.zip instead of a folder")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (sorted by name)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m ilsgan.data", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("synthetic", help="write the built-in synthetic benchmark as images + masks",
                       description=f"Render the procedural benchmark into {_LAYOUT}. Sample i of "
                                   "(seed, split, tier) is always the same image; train and test differ.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
    p.add_argument("--resolution", type=int, default=64, help="image size (default 64)")
    p.add_argument("--tier", default="medium", choices=("easy", "medium", "hard"), help="difficulty (default medium)")
    p.add_argument("--split", default="test", choices=("train", "test", "val"), help="split (default test)")
    p.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    p.add_argument("--start", type=int, default=0, help="first sample index (default 0)")
    p.set_defaults(fn=_cmd_synthetic)

    p = sub.add_parser("baselines", help="trivial segmentation baselines on an image+mask folder",
                       description="Otsu on luminance, 2-means on colour, border-colour model (and GrabCut "
                                   "when OpenCV is installed), plus the all-foreground floor; per-image fg "
                                   "IoU and Dice (empty/empty = 1), dataset IoU, mIoU, pixel accuracy. "
                                   "Polarity of 2-cluster methods: fg = the cluster less present on the "
                                   "image border relative to its area.")
    p.add_argument("--images", required=True, help="images folder (or zip), e.g. DIR/images")
    p.add_argument("--masks", required=True, help="masks folder (or zip), same names, e.g. DIR/masks")
    p.add_argument("--resolution", type=int, default=None, help="resize images (and masks, nearest) to R x R")
    p.add_argument("--methods", default=None, help="comma-separated subset of allfg,otsu,kmeans,border,grabcut (default: all available)")
    p.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    p.set_defaults(fn=_cmd_baselines)

    p = sub.add_parser(
        "prep-cub", help="CUB-200-2011 from CUB_200_2011.tgz + segmentations.tgz",
        description="Expected layout (archive or extracted folder): CUB_200_2011/images/<class>/<name>.jpg, "
                    "CUB_200_2011/images.txt ('<id> <class>/<name>.jpg'), bounding_boxes.txt "
                    "('<id> x y w h'), train_test_split.txt ('<id> 1|0', 1 = train); segmentations: "
                    "segmentations/<class>/<name>.png (soft masks; binarized at 0.5 after resizing).")
    p.add_argument("--archive", required=True, help="CUB_200_2011.tgz or its extracted folder")
    p.add_argument("--segmentations", required=True, help="segmentations.tgz or its extracted folder")
    p.add_argument("--split-file", default=None,
                   help="3-valued split file '<id> 0|1|2' (0 train, 1 val, 2 test; the ReDO/DRC "
                        "train_val_test_split.txt of the paper's protocol) instead of train_test_split.txt")
    _prep_common(p)
    p.set_defaults(fn=_cmd_prep_cub)

    p = sub.add_parser(
        "prep-dogs", help="Stanford Dogs from images.tar + annotation.tar + lists.tar + a mask folder",
        description="Expected layout: images.tar -> Images/<wnid>-<breed>/<wnid>_<n>.jpg; annotation.tar -> "
                    "Annotation/<wnid>-<breed>/<wnid>_<n> (PASCAL-VOC XML, no extension; largest box used); "
                    "lists.tar -> train_list.mat, test_list.mat (field file_list; needs scipy) or a text "
                    "file with one '<breed dir>/<name>.jpg' per line; masks: a folder of "
                    "'<breed dir>/<name>.png' or '<name>.png' (in the paper's protocol, from Mask R-CNN).")
    p.add_argument("--images", required=True, help="images.tar or its extracted folder")
    p.add_argument("--annotations", required=True, help="annotation.tar or its extracted folder")
    p.add_argument("--lists", default=None, help="lists.tar, its folder, or a .txt list (needed unless --split all)")
    p.add_argument("--masks", required=True, help="mask folder (or zip/tar)")
    _prep_common(p)
    p.set_defaults(fn=_cmd_prep_dogs)

    p = sub.add_parser(
        "prep-cars", help="Stanford Cars from cars_{train,test}.tgz + car_devkit.tgz + a mask folder",
        description="Expected layout: cars_test.tgz -> cars_test/<00001>.jpg (cars_train.tgz likewise); "
                    "car_devkit.tgz -> devkit/cars_{train,test}_annos.mat (struct 'annotations' with "
                    "bbox_x1, bbox_y1, bbox_x2, bbox_y2 (1-based, inclusive), fname; needs scipy), or "
                    "--boxes with 'NAME x y w h' lines; masks: a folder of '<name>.png' (in the paper's "
                    "protocol, from Mask R-CNN).")
    p.add_argument("--images", required=True, help="cars_test.tgz / cars_train.tgz or the extracted folder")
    p.add_argument("--devkit", default=None, help="car_devkit.tgz, its folder, or a cars_*_annos.mat file")
    p.add_argument("--boxes", default=None, help="text file of 'NAME x y w h' lines instead of --devkit")
    p.add_argument("--masks", required=True, help="mask folder (or zip/tar)")
    _prep_common(p, ("train", "test"))
    p.set_defaults(fn=_cmd_prep_cars)
    return ap


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return a.fn(a)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
