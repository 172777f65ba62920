"""``python -m ilsgan.train``: train ILSGAN.

Without ``--data`` and ``--preset`` (the demo; other options adjust it): the ``quick`` preset on
the built-in ``synthetic:easy`` data at 32x32 into ``./runs/<timestamp>/``, for 14 minutes of
training (``--minutes``: it stops at the first tick after that) on any machine, then an evaluation
of its masks against the classical baselines on the built-in test images. The paper's settings: ``--preset paper64`` /
``--preset paper128`` with ``--data PATH``.
Multi-GPU: ``torchrun --nproc_per_node=K -m ilsgan.train ...`` (``--batch`` is the global batch).
"""

from __future__ import annotations

import argparse
import ast
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

__all__ = ["main", "build_parser", "resolve_config", "DEMO_DEFAULTS"]

# What `python -m ilsgan.train` does without --data and --preset (see the module docstring / README for why).
# The demo is bound by wall-clock time (--minutes), not kimg, so that it fits its budget on any machine;
# the kimg cap only matters on a machine fast enough to reach it.
DEMO_DEFAULTS = dict(preset="quick", data="synthetic:easy", resolution=32, kimg=300.0, snap=5.0, minutes=14.0)


class UsageError(Exception):
    """A bad option value or an unusable input/output (printed without a traceback, exit code 2)."""


def _positive_float(name):
    def conv(s):
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {s!r}")
        if not (v > 0) or v != v or v == float("inf"):
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {s!r}")
        return v
    return conv


def _nonneg_float(name):
    def conv(s):
        try:
            v = float(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {s!r}")
        if not (v >= 0) or v == float("inf"):
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {s!r}")
        return v
    return conv


def _positive_int(name):
    def conv(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {s!r}")
        if v <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be > 0, got {s!r}")
        return v
    return conv


def _nonneg_int(name):
    def conv(s):
        try:
            v = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer, got {s!r}")
        if v < 0:
            raise argparse.ArgumentTypeError(f"{name} must be >= 0, got {s!r}")
        return v
    return conv


def _keep(s):
    return None if s == "all" else _nonneg_int("--keep (or 'all')")(s)


def _resolution(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--resolution must be an integer, got {s!r}")
    if v < 8 or v & (v - 1):
        raise argparse.ArgumentTypeError(f"--resolution must be a power of two >= 8, got {s!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    from .checkpoints import DEFAULT_KEEP
    from .networks import PRESETS
    p = argparse.ArgumentParser(
        prog="python -m ilsgan.train",
        description="Train ILSGAN (layered GAN for unsupervised foreground/background segmentation). "
                    "Without --data and --preset: a CPU demo (preset 'quick' at 32x32 on synthetic:easy, "
                    f"{DEMO_DEFAULTS['minutes']:g} minutes of training) into ./runs/<timestamp>/. Each output directory holds grid-*.png (rows: composite, "
                    "foreground, background, mask, masked foreground), reals.png, log.jsonl, plot.png, "
                    "config.json and checkpoint-*.pt / checkpoint-latest.pt. Multi-GPU: "
                    "torchrun --nproc_per_node=K -m ilsgan.train ... . Ctrl-C (SIGINT) or SIGTERM saves "
                    "checkpoint-latest.pt and exits; continue with --resume latest.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("data and output")
    g.add_argument("--data", default=None,
                   help="training images: 'synthetic', 'synthetic:easy|medium|hard' (built-in, rendered on the fly), "
                        "a folder of images (searched recursively) or a .zip of images "
                        f"[demo: {DEMO_DEFAULTS['data']}; with --preset: synthetic:medium]")
    g.add_argument("--crop", choices=("center", "none", "box"), default=None,
                   help="folders/zips: 'center' square crop (default), 'none' (resize whole image), 'box' (1.5x "
                        "object box from boxes.txt)")
    g.add_argument("--outdir", default="runs", help="parent directory of the run directories")
    g.add_argument("--name", default=None,
                   help="run directory name under --outdir (default: a timestamp, or the resumed run's directory)")
    g.add_argument("--workers", type=_nonneg_int("--workers"), default=0,
                   help="DataLoader worker processes (0 = load in the main process)")
    g = p.add_argument_group("model and schedule")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help=f"network + training preset [demo: {DEMO_DEFAULTS['preset']}; with --data: quick]")
    g.add_argument("--resolution", type=_resolution, default=None,
                   help="training resolution (power of two >= 8) [default: the preset's; demo: 32]")
    g.add_argument("--batch", type=_positive_int("--batch"), default=None,
                   help="global batch size (split over torchrun processes) [default: the preset's]")
    g.add_argument("--kimg", type=_positive_float("--kimg"), default=None,
                   help=f"training length in thousands of real images shown [default: the preset's; demo: {DEMO_DEFAULTS['kimg']:g}]")
    g.add_argument("--snap", type=_positive_float("--snap"), default=None,
                   help=f"snapshot (grid, plot, checkpoint) interval in kimg [default: the preset's; demo: {DEMO_DEFAULTS['snap']:g}]")
    g.add_argument("--tick", type=_positive_float("--tick"), default=None,
                   help="log (JSONL, progress bar) interval in kimg [default: min(4, snap/8)]")
    g.add_argument("--minutes", type=_positive_float("--minutes"), default=None,
                   help="wall-clock training budget: stop at the first tick after this many minutes (with a "
                        f"final snapshot), or at --kimg, whichever comes first [demo: {DEMO_DEFAULTS['minutes']:g}]")
    g.add_argument("--max-iters", type=_positive_int("--max-iters"), default=None,
                   help="stop after this many iterations in total (for tests and benchmarks)")
    g.add_argument("--seed", type=_nonneg_int("--seed"), default=0, help="random seed (weights, latents, data order)")
    g.add_argument("--resume", default=None,
                   help="continue from a checkpoint file, a run directory, or 'latest' (the newest checkpoint "
                        "under --outdir); the run continues exactly where it stopped")
    g.add_argument("--keep", type=_keep, default=DEFAULT_KEEP, metavar="N",
                   help="keep the N newest numbered snapshots checkpoint-KKKKKK.III.pt besides checkpoint-latest.pt "
                        "(older ones are deleted after each successful snapshot); 'all' keeps every one")
    g.add_argument("--cfg", action="append", default=[], metavar="KEY=VALUE",
                   help="override any preset key (e.g. --cfg channel_base=1024 --cfg augment=None); repeatable")
    g = p.add_argument_group("losses")
    g.add_argument("--ils", choices=("on", "off"), default=None,
                   help="the independence (ILS) term; 'off' = the no-independence ablation [default: on]")
    g.add_argument("--w-ils", type=_nonneg_float("--w-ils"), default=None,
                   help="multiplier of the ILS sigma schedule (0.2 until --ils-switch-kimg, then 1.0) [1]")
    g.add_argument("--ils-switch-kimg", type=_nonneg_float("--ils-switch-kimg"), default=None,
                   help="kimg at which the ILS sigma goes from 0.2 to 1.0 [preset: 400 paper, 4 quick]")
    g.add_argument("--ils-dist", choices=("laplace", "gaussian"), default=None,
                   help="ILS conditional distribution [laplace]")
    g.add_argument("--w-bin", type=_nonneg_float("--w-bin"), default=None, help="mask binarization weight [2]")
    g.add_argument("--bin-ramp-kimg", type=_nonneg_float("--bin-ramp-kimg"), default=None,
                   help="grow the binarization weight linearly from 0 to --w-bin over this many kimg (0 = from the "
                        "start, as the paper) [preset]")
    g.add_argument("--w-area", type=_nonneg_float("--w-area"), default=None, help="mask area prior weight [2]")
    g.add_argument("--area-min", type=_nonneg_float("--area-min"), default=None,
                   help="minimum mean mask area of the area prior [0.25]")
    g.add_argument("--area-mirror", choices=("auto", "on", "off"), default=None,
                   help="two-sided area prior, also penalizing mean mask > 1 - area-min (on the unshifted mask) "
                        "['auto' = only without the perturbation (--shift 0), as the paper's release; preset quick: on]")
    g.add_argument("--r1-gamma", type=_nonneg_float("--r1-gamma"), default=None,
                   help="R1 weight gamma [0.0002*R^2/batch: 0.0256 at 64px, batch 32]")
    g.add_argument("--shift", type=_nonneg_float("--shift"), default=None,
                   help="perturbed composition: max shift as a fraction of the width (0 = off) [0.125]")
    g.add_argument("--aug", choices=("ada", "noaug"), default=None,
                   help="'ada' = adaptive bgc augmentation (target 0.6); 'noaug' = off [ada]")
    g.add_argument("--glr", type=_positive_float("--glr"), default=None, help="G learning rate [preset]")
    g.add_argument("--dlr", type=_positive_float("--dlr"), default=None, help="D learning rate [preset]")
    g.add_argument("--nan-guard", choices=("replace", "skip"), default="replace",
                   help="non-finite gradients: 'replace' (NaN->0, Inf->±1e5, as the release) or 'skip' the step; "
                        "both are counted in the log")
    g = p.add_argument_group("execution")
    g.add_argument("--device", default=None,
                   help="'cpu', 'cuda' or 'cuda:N' [cuda if available, else cpu]")
    g.add_argument("--impl", choices=("auto", "ref", "cpu", "cuda", "triton"), default="auto",
                   help="op backend for every op (forcing one that cannot run is an error)")
    g.add_argument("--threads", type=_positive_int("--threads"), default=None,
                   help="CPU threads for torch (default: torch's choice)")
    g.add_argument("--cpu-malloc", choices=("tuned", "default"), default="tuned",
                   help="CPU runs: 'tuned' makes glibc keep freed tensors for reuse instead of returning "
                        "them to the OS (paper64 on 2 cores: 1.5x faster); 'default' leaves malloc alone")
    g.add_argument("--no-progress", action="store_true",
                   help="print one line per tick (kimg, losses, s/kimg, ETA) instead of a progress bar")
    g.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard events")
    g.add_argument("--final-eval", choices=("auto", "off"), default="auto",
                   help="after training on built-in synthetic data, score the masks on its test split (written "
                        "to RUN/test-images) next to the classical baselines: one table, and RUN/eval.json "
                        "('auto'); other data: print the command that does it with your own masks")
    g.add_argument("--dist-timeout", type=_positive_float("--dist-timeout"), default=600.0, metavar="SECONDS",
                   help="torchrun runs: a process whose peers stay silent this long (one died or hangs) stops "
                        "with an error instead of waiting forever; must exceed the time of one snapshot")
    return p


def _parse_value(s: str):
    if s in ("None", "none", "null"):
        return None
    if s.lower() in ("true", "false"):
        return s.lower() == "true"
    try:
        return ast.literal_eval(s)
    except (ValueError, SyntaxError):
        return s


def resolve_config(args: argparse.Namespace, demo: bool) -> Dict[str, Any]:
    """Preset + explicit options -> the full config dict (validated)."""
    from .networks import get_preset
    preset = args.preset or (DEMO_DEFAULTS["preset"] if demo else "quick")
    cfg = get_preset(preset)
    if demo:
        cfg.update(resolution=DEMO_DEFAULTS["resolution"], kimg=DEMO_DEFAULTS["kimg"],
                   snap_kimg=DEMO_DEFAULTS["snap"])
    for item in args.cfg:
        if "=" not in item:
            raise UsageError(f"--cfg expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip()
        if k not in cfg and k not in ("tick_kimg", "crop", "lambda_ils", "lambda_adv"):
            raise UsageError(f"--cfg: unknown key {k!r}; known keys: {', '.join(sorted(cfg))}")
        cfg[k] = _parse_value(v)
    simple = {"resolution": "resolution", "batch": "batch", "kimg": "kimg", "snap": "snap_kimg", "tick": "tick_kimg",
              "w_ils": "lambda_ils", "ils_switch_kimg": "ils_sigma_kimg", "ils_dist": "ils_distribution",
              "w_bin": "lambda_bin", "bin_ramp_kimg": "bin_ramp_kimg", "w_area": "lambda_area", "area_min": "area_min", "r1_gamma": "gamma",
              "shift": "shift_max", "glr": "G_lr", "dlr": "D_lr", "crop": "crop"}
    for a, k in simple.items():
        v = getattr(args, a)
        if v is not None:
            cfg[k] = v
    if args.ils is not None:
        cfg["ils"] = args.ils == "on"
    if args.area_mirror is not None:
        cfg["area_mirror"] = {"auto": None, "on": True, "off": False}[args.area_mirror]
    if args.aug is not None:
        cfg["augment"] = "bgc" if args.aug == "ada" else None
    cfg.setdefault("lambda_ils", 1.0)
    cfg["name"] = preset
    # validation of values that may come from --cfg
    r = cfg["resolution"]
    if not isinstance(r, int) or r < 8 or r & (r - 1):
        raise UsageError(f"resolution must be a power of two >= 8, got {r!r}")
    if not isinstance(cfg["batch"], int) or cfg["batch"] < 1:
        raise UsageError(f"batch must be a positive integer, got {cfg['batch']!r}")
    if cfg.get("area_min", 0) > 1:
        raise UsageError(f"--area-min must be <= 1, got {cfg['area_min']}")
    if cfg.get("shift_max", 0) > 1:
        raise UsageError(f"--shift must be <= 1 (a fraction of the width), got {cfg['shift_max']}")
    return cfg


def _is_demo(args: argparse.Namespace) -> bool:
    """The demo runs when the user chose neither the data nor the preset (nor a run to resume):
    options such as --outdir, --seed, --kimg or --device adjust the demo instead of replacing it."""
    return args.data is None and args.preset is None and args.resume is None


def _check_outdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create output directory {str(path)!r}: {e.strerror or e}")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"output directory {str(path)!r} is not writable")
    probe = path / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UsageError(f"output directory {str(path)!r} is not writable: {e.strerror or e}")


def _backend_summary(device: str, impl: str) -> str:
    from .training.loop import op_backends
    dev = "cuda" if str(device).startswith("cuda") else "cpu"
    forced = "" if impl == "auto" else " (forced)"
    lines = [f"op backends on {dev} (--impl {impl}):"]
    lines += [f"  {op:18s} {b}{forced}" for op, b in op_backends(dev, impl).items()]
    return "\n".join(lines)


def _final_evaluation(run_dir: Path, checkpoint: str, data: str, resolution: int, device: str) -> None:
    """How good are the masks? On built-in synthetic data: ``python -m ilsgan.evaluate`` with its quick
    settings on 200 test images of the same tier (the same images for every run and seed), which
    prints our masks next to the classical baselines; elsewhere, the command to do it."""
    from . import evaluate
    from .data import parse_spec
    from .data.synthetic import write_folder

    kind, tier = parse_spec(data)
    if kind != "synthetic":
        print(f"\nto score the masks on your own test images and masks (0/255 PNGs, same names):\n"
              f"  python -m ilsgan.evaluate --checkpoint {checkpoint} --images IMAGES --masks MASKS "
              f"--unet-resolution {min(64, max(16, resolution))} {' '.join(evaluate.QUICK_ARGS)}")
        return
    test_dir = run_dir / "test-images"
    if not (test_dir / "synthetic.json").exists():
        write_folder(test_dir, n=200, resolution=resolution, tier=tier or "medium", split="test", seed=0,
                     progress=False)
    argv = ["--checkpoint", str(checkpoint), "--images", str(test_dir), "--out", str(run_dir / "eval.json"),
            "--device", device, "--unet-resolution", str(min(64, max(16, resolution))), *evaluate.QUICK_ARGS]
    print(f"\nscoring the masks: python -m ilsgan.evaluate {' '.join(argv)}")
    sys.stdout.flush()
    evaluate.main(argv)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args, demo=_is_demo(args))
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, demo: bool) -> int:
    import torch
    from . import checkpoints as ck
    from .data import DatasetError, open_dataset
    from .training import RunAborted, StopRequest, training_loop

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device: unknown device {device!r} (use cpu, cuda or cuda:N)")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but CUDA is not available in this torch build/machine")
    if dev.type not in ("cpu", "cuda"):
        raise UsageError(f"--device must be cpu or cuda[:N], got {device!r}")
    malloc_note = None
    if dev.type == "cpu" and args.cpu_malloc == "tuned":
        from .training.cpu_malloc import tune_malloc_for_training
        malloc_note = tune_malloc_for_training()

    cfg = resolve_config(args, demo)
    minutes = args.minutes if args.minutes is not None else (DEMO_DEFAULTS["minutes"] if demo else None)
    data = args.data or (DEMO_DEFAULTS["data"] if demo else "synthetic:medium")
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))

    # resume: which checkpoint, which run directory, and the config it was trained with
    outdir = Path(args.outdir).expanduser()
    resume_path = None
    if args.resume is not None:
        # a directory ('latest' = --outdir) resumes from its newest *readable* checkpoint, warning about
        # any newer one it skips; a file is used as named. Both read with weights_only=True (no code runs).
        try:
            saved = (ck.load_latest(outdir) if args.resume == "latest"
                     else ck.load_checkpoint(Path(args.resume).expanduser()))
        except ck.CheckpointError as e:
            raise UsageError(f"--resume {args.resume}: {e}")
        resume_path = Path(saved["path"])
        saved_cfg = dict(saved["config"])
        if args.preset is None and not args.cfg and args.resolution is None:
            # continue with the checkpoint's config; explicit options change only what they name
            explicit_cfg = resolve_config(args, demo=False)
            base = dict(saved_cfg)
            defaults = resolve_config(build_parser().parse_args([]), demo=False)
            for k, v in explicit_cfg.items():
                if k in defaults and defaults[k] != v:
                    base[k] = v
            cfg = base
        try:
            ck.check_config_compatible(saved_cfg, cfg, where=f"checkpoint {str(resume_path)!r}")
        except ck.CheckpointError as e:
            raise UsageError(str(e))
        if args.data is None and saved.get("meta", {}).get("data"):
            data = saved["meta"]["data"]
        del saved

    if resume_path is not None and args.name is None:
        run_dir = resume_path.parent
    else:
        name = args.name or time.strftime("%Y%m%d-%H%M%S")
        run_dir = outdir / name
        if rank == 0 and args.name is None and run_dir.exists():
            run_dir = outdir / f"{name}-{os.getpid()}"
    if rank == 0:
        _check_outdir(run_dir)

    try:
        dataset = open_dataset(data, cfg["resolution"], split="train", seed=args.seed,
                               crop=cfg.get("crop", "center") or "center")
        if len(dataset) == 0:
            raise DatasetError(f"dataset {data!r} contains no images")
    except DatasetError as e:
        raise UsageError(f"--data: {e}")

    if rank == 0:
        print(f"ilsgan.train: preset {cfg['name']}, {cfg['resolution']}x{cfg['resolution']}, batch {cfg['batch']}"
              f"{f' ({world} processes)' if world > 1 else ''}, {cfg['kimg']} kimg, data "
              f"{getattr(dataset, 'description', data)}, device {dev}, seed {args.seed}, "
              f"ILS {'on' if cfg['ils'] else 'off'}, augment {cfg.get('augment') or 'off'}"
              + (f", stops after {minutes:g} minutes of training" if minutes is not None else ""))
        if demo:
            print("no --data and no --preset: running the CPU demo (see --help for the options and the paper presets)")
        print(_backend_summary(str(dev), args.impl))
        if malloc_note:
            print(malloc_note)
        print(f"output: {run_dir}")
        sys.stdout.flush()

    stop = StopRequest()
    old = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = training_loop(cfg, run_dir, data=data, device=str(dev), impl=args.impl, seed=args.seed,
                               resume=resume_path, workers=args.workers, max_iters=args.max_iters, minutes=minutes,
                               progress=not args.no_progress, tensorboard=not args.no_tensorboard,
                               nan_guard=args.nan_guard, stop=stop, dataset=dataset,
                               keep=args.keep, dist_timeout=args.dist_timeout)
    except ck.CheckpointError as e:
        raise UsageError(f"--resume: {e}")
    except RunAborted as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted twice: exiting without a checkpoint", file=sys.stderr)
        return 130
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    dist_info = result["dist"]
    if dist_info.is_main:
        snap = result["snapshot"]
        rec = result["last_record"]
        if result["status"] == "interrupted":
            print(f"\nstopped by signal {result['signal']} at {result['cur_nimg'] / 1000:.3f} kimg "
                  f"(iteration {result['iteration']}); checkpoint saved: {snap.get('checkpoint')}")
            print(f"continue with: python -m ilsgan.train --resume {snap.get('checkpoint')}")
        else:
            print(f"\ndone: {result['cur_nimg'] / 1000:.3f} kimg in {result['iteration']} iterations, "
                  f"{result['seconds']:.0f} s" + (f" (the {minutes:g}-minute budget)" if result["budget_hit"] else ""))
        if rec:
            print(f"last tick: G adv {rec.get('Loss/G/adv', float('nan')):.3f}, "
                  f"D {rec.get('Loss/D/real', float('nan')) + rec.get('Loss/D/fake', float('nan')):.3f}, "
                  f"mask area {rec.get('Mask/area', float('nan')):.3f}, "
                  f"binarized {rec.get('Mask/binarized', float('nan')):.3f}, augment p "
                  f"{rec.get('Progress/augment_p', 0):.3f}")
        print(f"results in {run_dir}/:")
        if snap.get("grid"):
            print(f"  image grid : {snap['grid']}  (rows: composite, foreground, background, mask, masked fg)")
        print(f"  reals      : {run_dir / 'reals.png'}")
        print(f"  log        : {run_dir / 'log.jsonl'}")
        if snap.get("plot"):
            print(f"  plot       : {snap['plot']}")
        print(f"  checkpoint : {snap.get('checkpoint', run_dir / 'checkpoint-latest.pt')}")
        if sum(result["nan_events"].values()):
            print(f"  non-finite gradient events: {result['nan_events']}")
        if result["status"] == "done" and args.final_eval == "auto" and snap.get("checkpoint"):
            _final_evaluation(run_dir, snap["checkpoint"], data, cfg["resolution"], str(dev))
    if dist_info.enabled:
        from .training import distributed as dd
        dd.cleanup()
    if result["status"] == "interrupted":
        return 128 + int(result["signal"] or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
