"""Precision and memory-format benchmark of the training iteration, interleaved in one run.

Configs: ``demo`` (preset ``quick`` at 32x32, batch 16: what ``python -m ilsgan.train`` runs without
options) and ``paper64`` (batch 8). Variants: ``--precision fp32`` vs ``bf16`` (bfloat16 in the
mixed-precision resolutions, ``num_fp16_res``; float32 weights and losses), each with the
mixed-precision blocks' activations and weights contiguous or channels_last (the networks'
``fp16_channels_last``: their 3x3 and 1x1 convs and FIR steps). The ``quick`` preset has
``num_fp16_res=0`` (nothing would change), so the demo config sets ``num_fp16_res`` (default 4:
every block from 8x8 up, i.e. all but the 4x4 block and D's epilogue); in fp32 this is the demo's
exact computation.

Each repetition times one iteration of every (config, variant) in turn (the order rotates between
repetitions), after ``--warmup`` untimed ones: G main + D main, and the lazy R1 step, which runs
every ``D_reg_interval`` iterations (16 in the presets: ``s/iter = main + Dreg/16``, as
``bench_train.py``). Reported: medians, images per second, speed-ups (``t_baseline / t``, > 1 is
faster) against fp32/contiguous of the same config, bf16 vs fp32 at each layout and channels_last vs
contiguous at each precision, plus the CPU's model, whether it has native bfloat16 (``avx512_bf16`` /
``amx_bf16``), its flags and the torch version.

    python benchmarks/bench_precision.py                     # both configs, 4 variants, 5 repetitions
    python benchmarks/bench_precision.py --reps 1 --configs demo --json out.json

On a CPU without native bfloat16, torch's bf16 convolutions take a slow fallback (here, an AMD EPYC
with AVX2 only, torch 2.13: a 256-channel 3x3 conv forward at batch 8 ran 60-80x slower than in
float32), so a paper64 bf16 iteration takes many minutes there: ``--precisions fp32`` skips it.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings

import torch

# conftest applies the training run's CPU malloc setting (script mode too); bench_train has TrainStep
from conftest import DEVICE, MALLOC, sync
from bench_train import TrainStep

CONFIGS = {
    "demo": dict(preset="quick", resolution=32, batch=16),
    "paper64": dict(preset="paper64", resolution=64, batch=8),
}
PRECISIONS = ("fp32", "bf16")
LAYOUTS = ("contiguous", "channels_last")


def _timed(fn):
    """Seconds of one call (bench_train's ``_time`` averages several after a warm-up: here each
    repetition is recorded, interleaved with the other variants)."""
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def cpu_report():
    """(model name, native bf16, {flag: present} for the bf16-relevant flags, all flags) from
    :func:`ilsgan.precision.cpu_info` (torch's capability names, or /proc/cpuinfo's on older torch)."""
    from ilsgan.precision import NATIVE_BF16_FLAGS, cpu_has_native_bf16, cpu_info
    model, flags = cpu_info()
    avx512f = "avx512_f" if "avx512_f" in flags else "avx512f"  # torch's name / /proc's name
    wanted = ("avx2", avx512f, "amx_tile") + NATIVE_BF16_FLAGS
    return (model or platform.machine(), cpu_has_native_bf16(), {f: f in flags for f in wanted},
            " ".join(sorted(flags)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS))
    ap.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions of every variant")
    ap.add_argument("--warmup", type=int, default=1, help="untimed iterations of every variant first")
    ap.add_argument("--demo-fp16-res", type=int, default=4,
                    help="num_fp16_res of the demo config (the quick preset's own is 0)")
    ap.add_argument("--impl", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-reg", action="store_true", help="time G main + D main only (no R1 step)")
    ap.add_argument("--json", default=None, help="also write every timing to this file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from ilsgan.precision import effective_precision

    model, native, flags, flags_line = cpu_report()
    print(f"torch {torch.__version__}, device {DEVICE}, threads {torch.get_num_threads()}, malloc {MALLOC}, "
          f"impl {args.impl}, python {platform.python_version()}")
    print(f"cpu: {model}; native bf16: {'yes' if native else 'no'} ("
          + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in flags.items()) + ")")
    print(f"cpu flags: {flags_line}")
    if not native and "bf16" in args.precisions and DEVICE.type == "cpu":
        print("note: no native bfloat16 on this CPU: bf16 runs torch's slow fallback (paper64: minutes per iteration)")
    sys.stdout.flush()

    variants = [(p, lay) for lay in args.layouts for p in args.precisions]
    steps = {}
    for name in args.configs:
        c = CONFIGS[name]
        over = {"num_fp16_res": args.demo_fp16_res} if name == "demo" else {}
        for p, lay in variants:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                steps[name, p, lay] = TrainStep(c["preset"], args.impl, batch=c["batch"], resolution=c["resolution"],
                                                overrides=dict(over, precision=p), channels_last=lay == "channels_last")
    keys = list(steps)
    times = {k: {"main": [], "reg": []} for k in keys}

    def one(k, record):
        s = steps[k]
        tm = _timed(s.main)
        tr = None if args.no_reg else _timed(s.reg)
        if record:
            times[k]["main"].append(tm)
            if tr is not None:
                times[k]["reg"].append(tr)
        return tm, tr

    for _ in range(args.warmup):
        for k in keys:
            one(k, False)
    for r in range(args.reps):
        order = keys[r % len(keys):] + keys[:r % len(keys)]  # rotate: no variant always runs first
        for k in order:
            tm, tr = one(k, True)
            print(f"rep {r + 1}/{args.reps} {k[0]:7s} {k[1]} {k[2]:13s} main {tm:7.3f} s"
                  + ("" if tr is None else f"  Dreg {tr:7.3f} s"))
            sys.stdout.flush()

    results = {}
    for k in keys:
        tm = statistics.median(times[k]["main"])
        tr = statistics.median(times[k]["reg"]) if times[k]["reg"] else 0.0
        results[k] = dict(main=tm, reg=tr, iter=tm + tr / steps[k].reg_interval)

    intervals = sorted({s.reg_interval for s in steps.values()})
    print(f"\nmedians of {args.reps} interleaved repetitions; s/iter = main + Dreg/"
          f"{'/'.join(map(str, intervals))} (D_reg_interval); speed-up = t(baseline) / t (> 1: faster)")
    for name in args.configs:
        c = CONFIGS[name]
        nres = steps[(name,) + variants[0]].cfg["num_fp16_res"]
        print(f"\n{name}: preset {c['preset']}, {c['resolution']}px, batch {c['batch']}, num_fp16_res {nres}")
        print(f"  {'precision':9s} {'layout':13s} {'runs':4s} {'main s':>8s} {'Dreg s':>8s} {'s/iter':>8s} "
              f"{'img/s':>7s} {'vs fp32/contig':>14s}")
        base = results.get((name, "fp32", "contiguous"))
        for p, lay in variants:
            r = results[name, p, lay]
            runs = effective_precision(p, DEVICE, nres)
            vs = f"{base['iter'] / r['iter']:.2f}x" if base else "-"
            print(f"  {p:9s} {lay:13s} {runs:4s} {r['main']:8.3f} {r['reg']:8.3f} {r['iter']:8.3f} "
                  f"{c['batch'] / r['iter']:7.2f} {vs:>14s}")
        for lay in args.layouts:
            a, b = results.get((name, "fp32", lay)), results.get((name, "bf16", lay))
            if a and b:
                print(f"  bf16 vs fp32, {lay}: {a['iter'] / b['iter']:.2f}x")
        for p in args.precisions:
            a, b = results.get((name, p, "contiguous")), results.get((name, p, "channels_last"))
            if a and b:
                print(f"  channels_last vs contiguous, {p}: {a['iter'] / b['iter']:.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "device": str(DEVICE), "threads": torch.get_num_threads(),
                       "malloc": MALLOC, "impl": args.impl, "cpu_model": model, "cpu_native_bf16": native,
                       "cpu_flags": flags_line, "reps": args.reps, "warmup": args.warmup,
                       "demo_num_fp16_res": args.demo_fp16_res,
                       "results": [dict(config=k[0], precision=k[1], layout=k[2], **results[k],
                                        main_all=times[k]["main"], reg_all=times[k]["reg"]) for k in keys]},
                      f, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
