"""``python -m ilsgan.train``: train ILSGAN.

Without ``--data``, ``--preset`` and ``--resume``, the ``demo`` preset (other options adjust it): the
``quick`` networks on the built-in ``synthetic:easy`` data at 32x32 into ``./runs/<timestamp>/``, for
14 minutes of training (``--minutes``: it stops at the first tick after that) on any machine, then an
evaluation of its masks against the classical baselines on the built-in test images. The paper's
settings: ``--preset paper64`` / ``--preset paper128`` with ``--data PATH``.
Multi-GPU: ``torchrun --nproc_per_node=K -m ilsgan.train ...`` (``--batch`` is the global batch).

Every option that sets a training setting has the setting's name (``--w-bin`` sets ``w_bin``, see
:mod:`ilsgan.config`); ``--cfg KEY=VALUE`` sets any setting, also those without a flag.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

from .config import FIELDS, PRESETS, ConfigError, check_value, get_preset, parse_cfg_items, setting_field

__all__ = ["main", "build_parser", "choose_preset", "flag_settings"]

# Options that are not settings of the config: what to start from, and overrides by name.
_NOT_SETTINGS = ("preset", "resume", "cfg")


def _shown(key: str, v) -> str:
    if v is None:
        return setting_field(key).metadata.get("none", "none")
    if isinstance(v, bool):
        return "on" if v else "off"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _converter(key: str):
    """The option's value converter: the config's own parser and range check (:func:`check_value`)."""
    def conv(text):
        try:
            return check_value(key, text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    conv.__name__ = key  # argparse names the converter in some messages
    return conv


def _default(key: str) -> str:
    """``[value]`` of a setting, per preset where they differ: ``[paper64/paper128: 0.0025; quick/demo: 0.002]``."""
    by_value: Dict[str, List[str]] = {}
    for name, cfg in PRESETS.items():
        by_value.setdefault(_shown(key, cfg[key]), []).append(name)
    if len(by_value) == 1:
        return f"[{next(iter(by_value))}]"
    return "[" + "; ".join(f"{'/'.join(names)}: {v}" for v, names in by_value.items()) + "]"


def build_parser() -> argparse.ArgumentParser:
    """The options. Each setting's option stores under the setting's name and only when given
    (``argparse.SUPPRESS``), so :func:`flag_settings` returns exactly what the user chose."""
    p = argparse.ArgumentParser(
        prog="python -m ilsgan.train",
        description="Train ILSGAN (layered GAN for unsupervised foreground/background segmentation). "
                    "Without --data, --preset and --resume: the CPU demo (preset 'demo': the quick networks at "
                    f"32x32 on synthetic:easy, {PRESETS['demo'].session.minutes:g} minutes of training) into "
                    "./runs/<timestamp>/. Each output directory holds grid-*.png (rows: composite, "
                    "foreground, background, mask, masked foreground), reals.png, log.jsonl, plot.png, "
                    "config.json and checkpoint-*.pt / checkpoint-latest.pt. Multi-GPU: "
                    "torchrun --nproc_per_node=K -m ilsgan.train ... . Ctrl-C (SIGINT) or SIGTERM saves "
                    "checkpoint-latest.pt and exits; continue with --resume latest. Defaults in brackets "
                    "are the presets' values.",
        argument_default=argparse.SUPPRESS)

    def opt(group, flag, help, **kw):
        """The option of setting ``flag`` minus its dashes, read and checked by the config's rules
        (the field's type, choices and range)."""
        key = flag[2:].replace("-", "_")
        assert key in FIELDS, key
        if kw.get("action") is None:
            kw["type"] = _converter(key)
            choices = setting_field(key).metadata.get("choices")
            if choices is not None:
                kw["choices"] = choices
        group.add_argument(flag, help=f"{help} {_default(key)}", **kw)

    g = p.add_argument_group("data and output")
    opt(g, "--data", "training images: 'synthetic', 'synthetic:easy|medium|hard' (built-in, rendered on the fly), "
                     "a folder of images (searched recursively) or a .zip of images")
    opt(g, "--crop", "folders/zips: 'center' square crop, 'none' (resize whole image), 'box' (1.5x object box "
                     "from boxes.txt)")
    opt(g, "--outdir", "parent directory of the run directories")
    opt(g, "--name", "run directory name under --outdir (none: a timestamp, or the resumed run's directory)")
    opt(g, "--workers", "DataLoader worker processes (0 = load in the main process)")
    g = p.add_argument_group("model and schedule")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="the settings to start from [demo without --data and --resume; quick with --data; "
                        "the checkpoint's with --resume]")
    opt(g, "--resolution", "training resolution (power of two >= 8)")
    opt(g, "--batch", "global batch size (split over torchrun processes)")
    opt(g, "--kimg", "training length in thousands of real images shown")
    opt(g, "--snap", "snapshot (grid, plot, checkpoint) interval in kimg")
    opt(g, "--tick", "log (JSONL, progress bar) interval in kimg (none: min(4, snap/8))")
    opt(g, "--minutes", "wall-clock training budget: stop at the first tick after this many minutes (with a "
                        "final snapshot), or at --kimg, whichever comes first")
    opt(g, "--max-iters", "stop after this many iterations in total (for tests and benchmarks)")
    opt(g, "--seed", "random seed (weights, latents, data order)")
    g.add_argument("--resume", default=None,
                   help="continue from a checkpoint file, a run directory, or 'latest' (the newest checkpoint "
                        "under --outdir) with its settings (options given here change what they name); the run "
                        "continues exactly where it stopped")
    opt(g, "--keep", "keep the N newest numbered snapshots checkpoint-KKKKKK.III.pt besides checkpoint-latest.pt "
                     "(older ones are deleted after each successful snapshot); 'all' keeps every one", metavar="N")
    g.add_argument("--cfg", action="append", default=[], metavar="KEY=VALUE",
                   help="set any setting by name (e.g. --cfg channel_base=1024 --cfg aug=noaug; the names: "
                        "ilsgan/config.py); repeatable")
    g = p.add_argument_group("losses")
    opt(g, "--ils", "the independence (ILS) term; 'off' = the no-independence ablation",
        metavar="{on,off}")
    opt(g, "--w-ils", "multiplier of the ILS sigma schedule (0.2 until --ils-switch-kimg, then 1.0)")
    opt(g, "--ils-switch-kimg", "kimg at which the ILS sigma goes from 0.2 to 1.0")
    opt(g, "--ils-dist", "ILS conditional distribution")
    opt(g, "--w-bin", "mask binarization weight")
    opt(g, "--bin-ramp-kimg", "grow the binarization weight linearly from 0 to --w-bin over this many kimg (0 = "
                              "from the start, as the paper)")
    opt(g, "--w-area", "mask area prior weight")
    opt(g, "--area-min", "minimum mean mask area of the area prior")
    opt(g, "--area-mirror", "two-sided area prior, also penalizing mean mask > 1 - area-min (on the unshifted "
                            "mask); 'auto' = only without the perturbation (--shift 0), as the paper's release",
        metavar="{auto,on,off}")
    opt(g, "--w-div", "mask layout diversity weight: adds w_div * relu(div_min - diversity) per batch, the "
                      "diversity being the std over the batch of the masks pooled to 8x8 (0 = off, as the paper)")
    opt(g, "--div-min", "layout diversity the --w-div term asks for (the built-in synthetic masks: 0.39)")
    opt(g, "--r1-gamma", "R1 weight gamma (auto: 0.0002*R^2/batch, 0.0256 at 64px, batch 32)")
    opt(g, "--shift", "perturbed composition: max shift as a fraction of the width (0 = off)")
    opt(g, "--aug", "'ada' = adaptive bgc augmentation (target 0.6); 'noaug' = off")
    opt(g, "--glr", "G learning rate")
    opt(g, "--dlr", "D learning rate")
    opt(g, "--nan-guard", "non-finite gradients: 'replace' (NaN->0, Inf->±1e5, as the release) or 'skip' the "
                          "step; both are counted in the log")
    g = p.add_argument_group("execution")
    opt(g, "--device", "'cpu', 'cuda' or 'cuda:N' (none: cuda if available, else cpu)")
    opt(g, "--impl", "op backend for every op (forcing one that cannot run is an error)")
    opt(g, "--precision", "dtype of the mixed-precision resolutions (num_fp16_res): 'auto' = float16 on CUDA, "
                          "bfloat16 on a CPU with native bf16 (avx512_bf16/amx_bf16), else float32; 'bf16' = "
                          "bfloat16 (float32 weights and losses either way)")
    opt(g, "--threads", "CPU threads for torch (none: torch's choice)")
    opt(g, "--cpu-malloc", "CPU runs: 'tuned' makes glibc keep freed tensors for reuse instead of returning "
                           "them to the OS (paper64 on 2 cores: 1.5x faster); 'default' leaves malloc alone")
    opt(g, "--no-progress", "print one line per tick (kimg, losses, s/kimg, ETA) instead of a progress bar",
        action="store_true")
    opt(g, "--no-tensorboard", "do not write TensorBoard events", action="store_true")
    opt(g, "--final-eval", "after training on built-in synthetic data, score the masks on its test split "
                           "(written to RUN/test-images) next to the classical baselines: one table, and "
                           "RUN/eval.json ('auto'); other data: print the command that does it with your own "
                           "masks")
    opt(g, "--dist-timeout", "torchrun runs: a process whose peers stay silent this long (one died or hangs) "
                             "stops with an error instead of waiting forever; must exceed the time of one "
                             "snapshot", metavar="SECONDS")
    return p


def choose_preset(args: argparse.Namespace) -> Optional[str]:
    """The preset a run starts from: ``--preset``; else, for a new run, ``demo`` without ``--data``
    (options such as --outdir, --seed, --kimg or --device adjust the demo instead of replacing it) and
    ``quick`` with it; None on ``--resume`` (the checkpoint's settings)."""
    if args.preset is not None:
        return args.preset
    if args.resume is not None:
        return None
    return "demo" if "data" not in args else "quick"


def flag_settings(args: argparse.Namespace) -> Dict[str, Any]:
    """The settings the command line names: ``--cfg KEY=VALUE`` items, then the options (which win)."""
    return {**parse_cfg_items(args.cfg), **{k: v for k, v in vars(args).items() if k not in _NOT_SETTINGS}}


def _final_evaluation(run_dir: Path, checkpoint: str, data: str, resolution: int, device: str) -> None:
    """How good are the masks? On built-in synthetic data: ``python -m ilsgan.evaluate`` with its quick
    settings on 200 test images of the same tier (the same images for every run and seed), which
    prints our masks next to the classical baselines; elsewhere, the command to do it."""
    from . import evaluate
    from .data import parse_spec
    from .data.synthetic import write_folder

    kind, tier = parse_spec(data)
    unet_resolution = str(min(64, max(16, resolution)))
    if kind != "synthetic":
        print(f"\nto score the masks on your own test images and masks (0/255 PNGs, same names):\n"
              f"  python -m ilsgan.evaluate --checkpoint {checkpoint} --images IMAGES --masks MASKS "
              f"--unet-resolution {unet_resolution} {' '.join(evaluate.QUICK_ARGS)}")
        return
    test_dir = run_dir / "test-images"
    if not (test_dir / "synthetic.json").exists():
        write_folder(test_dir, n=200, resolution=resolution, tier=tier or "medium", split="test", seed=0,
                     progress=False)
    argv = ["--checkpoint", str(checkpoint), "--images", str(test_dir), "--out", str(run_dir / "eval.json"),
            "--device", device, "--unet-resolution", unet_resolution, *evaluate.QUICK_ARGS]
    print(f"\nscoring the masks: python -m ilsgan.evaluate {' '.join(argv)}")
    sys.stdout.flush()
    evaluate.main(argv)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _header(run, implicit_demo: bool) -> None:
    from .precision import summary as precision_summary
    cfg = run.config
    world = int(os.environ.get("WORLD_SIZE", "1"))
    minutes = cfg.session.minutes
    res = cfg.network.resolution
    print(f"ilsgan.train: preset {cfg.preset}, {res}x{res}, batch {cfg.optim.batch}"
          f"{f' ({world} processes)' if world > 1 else ''}, {cfg.run.kimg} kimg, data "
          f"{getattr(run.dataset, 'description', cfg.data.data)}, device {run.device}, seed {cfg.run.seed}, "
          f"ILS {'on' if cfg.loss.ils else 'off'}, augment {cfg.augment.aug_pipe if cfg.augment.aug == 'ada' else 'off'}"
          + (f", stops after {minutes:g} minutes of training" if minutes is not None else ""))
    if implicit_demo:
        print("no --data and no --preset: running the CPU demo (see --help for the options and the paper presets)")
    impl = cfg.session.impl
    forced = "" if impl == "auto" else " (forced)"
    print(f"op backends on {run.device.type} (--impl {impl}):")
    for op, b in run.op_backends.items():
        print(f"  {op:18s} {b}{forced}")
    print(precision_summary(run.precision))
    for note in run.notes:
        print(note)
    if run.changes:
        print("changed from the checkpoint: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in run.changes))
    print(f"output: {run.run_dir}")
    sys.stdout.flush()


def _run(args: argparse.Namespace) -> int:
    from . import checkpoints as ck
    from .training import RunAborted, prepare_run, train

    preset = choose_preset(args)
    run = prepare_run(get_preset(preset) if preset else None, args.resume, flag_settings(args))
    cfg, run_dir = run.config, run.run_dir
    if int(os.environ.get("RANK", "0")) == 0:
        _header(run, implicit_demo=preset == "demo" and args.preset is None)

    old = {s: signal.signal(s, run.stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        result = train(run)
    except ck.CheckpointError as e:
        raise ConfigError(f"--resume: {e}")
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
                  f"{result['seconds']:.0f} s" + (f" (the {cfg.session.minutes:g}-minute budget)" if result["budget_hit"] else ""))
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
        if result["status"] == "done" and cfg.session.final_eval == "auto" and snap.get("checkpoint"):
            _final_evaluation(run_dir, snap["checkpoint"], cfg.data.data, cfg.network.resolution, str(run.device))
    if dist_info.enabled:
        from .training import distributed as dd
        dd.cleanup()
    if result["status"] == "interrupted":
        return 128 + int(result["signal"] or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
