"""Shared helpers for the pytest-benchmark files in ``benchmarks/``.

Conventions (see CONTRIBUTING.md): one benchmark per (op, fwd|fwd+bwd, shape, impl) with
``benchmark.group = "<op> <fwd|fwd+bwd> <shape>"`` and ``extra_info`` ``impl`` and ``bytes`` (bytes an
ideal kernel moves). ``python benchmarks/report.py FILE.json`` turns a ``--benchmark-json`` file into
ratio tables (vs ``ref`` and ``compile``) and bandwidth as a fraction of ``copy <shape>``.

Run: ``pytest benchmarks --benchmark-enable --benchmark-json=out.json`` (CUDA when present, else CPU).
"""

from __future__ import annotations

import os
import time

# THP_MEM_ALLOC_ENABLE (huge-page-backed CPU allocations) is no longer set here: on the 2-core AMD
# EPYC machines of 2026-12 it made each fresh multi-MB output cost ~1.5 ms of page zeroing, so
# results mostly timed the allocator; the malloc settings below remove that cost for every impl.
# extra_info records both.

from typing import Callable, Dict, Hashable, Optional, Sequence, Tuple  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
ON_GPU = DEVICE.type == "cuda"
# CPU: the malloc settings `python -m ilsgan.train` uses (ilsgan/training/cpu_malloc.py), for every
# impl alike, so that the numbers are what a training run sees; ILSGAN_BENCH_MALLOC=default to
# measure glibc's defaults instead.
MALLOC = "default"
if not ON_GPU and os.environ.get("ILSGAN_BENCH_MALLOC", "tuned") == "tuned":
    from ilsgan.training.cpu_malloc import tune_malloc_for_training

    tune_malloc_for_training()
    MALLOC = "tuned"
# impls benchmarked per device: plain torch, torch.compile of it, and our fast backends
IMPLS: Tuple[str, ...] = ("ref", "compile", "cuda", "triton") if ON_GPU else ("ref", "compile", "cpu")
ROUNDS = 30 if ON_GPU else 5  # minimum rounds per benchmark
MAX_ROUNDS = 1000 if ON_GPU else 100
TARGET_S = float(os.environ.get("ILSGAN_BENCH_SECONDS", "1.0"))  # time budget per benchmark


def pytest_collect_file(file_path, parent):
    # bench_*.py are not test_*.py: collect them when the folder (not the file) is given.
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(session, config, items):
    # Run benchmarks shape by shape (smallest first), so that each 'copy <shape>' yardstick is timed
    # right beside the ops of that shape: on a shared machine the load drifts over minutes.
    def key(indexed):
        i, item = indexed
        shape = getattr(getattr(item, "callspec", None), "params", {}).get("shape")
        if isinstance(shape, (tuple, list)) and all(isinstance(s, int) for s in shape):
            n = 1
            for s in shape:
                n *= s
            return (0, n, tuple(shape), i)
        return (1, 0, (), i)

    items[:] = [item for _, item in sorted(enumerate(items), key=key)]


def pytest_sessionstart(session):
    # The first benchmark of a run used to read up to 7x slow on CPU (thread pool start-up, first
    # touches of the allocator's memory): spend about a second on plain torch work before timing.
    if not session.config.getoption("benchmark_enable", default=False):
        return
    x = torch.randn(32, 256, 32, 32, device=DEVICE)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        (x * 2 + 1).sum().item()


def sync() -> None:
    """Wait for queued GPU work (no-op on CPU): call it inside every timed function on GPU."""
    if ON_GPU:
        torch.cuda.synchronize()


def shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


_COMPILED: Dict[Hashable, Callable] = {}


def compiled(key: Hashable, fn: Callable, **kwargs) -> Callable:
    """``torch.compile(fn, dynamic=False)`` cached per ``key`` (e.g. (op, kind, shape)): one compile
    per shape, so the baseline is specialized like a user's training loop would be."""
    if key not in _COMPILED:
        kwargs.setdefault("dynamic", False)
        _COMPILED[key] = torch.compile(fn, **kwargs)
    return _COMPILED[key]


def impl_skip_reason(spec, impl: str) -> Optional[str]:
    """Why ``impl`` (a backend name, or 'compile') cannot be benchmarked on DEVICE; None if it can."""
    if impl in ("ref", "compile"):
        return None
    return spec.reason(impl, DEVICE.type)


def run(benchmark, fn: Callable, *, group: str, impl: str, bytes: Optional[int] = None,
        rounds: Optional[int] = None, warmup_rounds: int = 1, **extra) -> None:
    """Time ``fn`` (which must include its own ``sync()`` on GPU) with the project's conventions."""
    benchmark.group = group
    info = {"impl": impl, "device": torch.cuda.get_device_name() if ON_GPU else "cpu",
            "threads": torch.get_num_threads(), "thp": os.environ.get("THP_MEM_ALLOC_ENABLE", ""), "malloc": MALLOC}
    if bytes is not None:
        info["bytes"] = int(bytes)
    info.update(extra)
    benchmark.extra_info.update(info)
    fn()  # first call outside the timer: compiles / allocates
    if rounds is None:
        # about TARGET_S seconds per benchmark, at least ROUNDS rounds: more samples where a call is
        # short, so that medians survive a busy shared machine
        t0 = time.perf_counter()
        fn()
        dt = max(time.perf_counter() - t0, 1e-6)
        rounds = int(min(MAX_ROUNDS, max(ROUNDS, TARGET_S / dt)))
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)


@pytest.fixture
def device() -> torch.device:
    return DEVICE
