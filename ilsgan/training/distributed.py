"""Data-parallel helpers: one process per device, launched by ``torchrun``.

``torchrun --nproc_per_node=K -m ilsgan.train ...`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
:func:`init_from_env` then joins the process group (NCCL for CUDA, gloo for CPU). Every rank holds a
full copy of G, D and G_ema, sees ``batch / K`` images per iteration, and after each backward the
gradients are averaged over ranks by one flattened ``all_reduce`` per phase (the scheme of NVlabs
StyleGAN3; equivalent to ``DistributedDataParallel`` gradient averaging, but it also works for the
phases that call ``G.layers`` and for R1's double backward, which DDP's reducer hooks do not support).

No process waits forever for another: every collective has a timeout (``timeout_s``, the CLI's
``--dist-timeout``, default :data:`ilsgan.config.DEFAULT_DIST_TIMEOUT_S`). A dead peer is noticed at once (its sockets
close), a hung one after the timeout; the training loop then raises
:class:`ilsgan.training.faults.PeerLost` and :func:`abort` drops the process group without a barrier.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Iterable, List

import torch
import torch.distributed as dist

from ..config import DEFAULT_DIST_TIMEOUT_S

__all__ = ["DistInfo", "init_from_env", "sync_grads", "broadcast_module", "all_reduce_mean", "any_flag", "any_flags",
           "cleanup", "abort"]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str, timeout_s: float = DEFAULT_DIST_TIMEOUT_S) -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1), else single process.
    ``timeout_s`` bounds the rendezvous and every collective (a peer silent for longer is lost)."""
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    backend = "nccl" if str(device).startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=float(timeout_s)))
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, backend=backend)


def sync_grads(params: Iterable[torch.nn.Parameter], world_size: int) -> None:
    """Average ``.grad`` over ranks (one flattened all_reduce; missing grads count as zero)."""
    if world_size <= 1:
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.flatten() for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    off = 0
    for p in params:
        n = p.numel()
        p.grad = flat[off:off + n].view_as(p).clone()
        off += n


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers to every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=src)


def all_reduce_mean(t: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size <= 1:
        return t
    t = t.clone()
    dist.all_reduce(t)
    return t / world_size


def any_flag(flag: bool, world_size: int, device) -> bool:
    """True on every rank when any rank raised ``flag`` (e.g. a stop request)."""
    if world_size <= 1:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def any_flags(flags: List[bool], world_size: int, device) -> List[bool]:
    """:func:`any_flag` for several flags in one collective."""
    if world_size <= 1:
        return [bool(f) for f in flags]
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(t)
    return [bool(v > 0) for v in t.tolist()]


def abort() -> None:
    """Leave the process group after a peer was lost: no barrier (it would wait for the lost peer)."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - the group is broken already; exiting is what matters
            pass


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
