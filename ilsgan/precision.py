"""The precision choice of training (``--precision``, the network setting ``precision`` of
:mod:`ilsgan.config`): which dtype the networks' mixed-precision resolutions compute in.

The presets name their mixed-precision resolutions with ``num_fp16_res`` (the top resolutions of G
and D, never below 8x8). Those blocks compute in a 16-bit dtype, everything else in float32:

- ``"fp32"``: float32 everywhere.
- ``"bf16"``: bfloat16 in the mixed-precision blocks, on any device.
- ``"auto"``: float16 on CUDA (NVlabs' mixed precision); on CPU bfloat16 where the processor
  computes it natively (:func:`cpu_has_native_bf16`), else float32.

In every case the parameters stay float32 (each layer casts its weights to the block's dtype when
it runs, so the optimizer updates float32 master weights), the conv clamp (``conv_clamp``) bounds
the 16-bit activations, our kernels accumulate 16-bit inputs in float32, and the images, logits
and losses are float32.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, FrozenSet, Mapping, Optional, Tuple, Union

import torch

# the choices are declared with the setting (ilsgan.config stays free of torch: ``--help`` and option
# errors of ``python -m ilsgan.train`` do not import it)
from .config import PRECISIONS

__all__ = ["PRECISIONS", "NATIVE_BF16_FLAGS", "check_precision", "cpu_info", "cpu_has_native_bf16",
           "low_precision_dtype", "block_dtype", "effective_precision", "describe", "summary"]

# x86 features of bfloat16 arithmetic (AVX512-BF16, AMX-BF16): the same names in
# torch.cpu.get_capabilities() and in the flags of /proc/cpuinfo
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def _torch_cpu_info() -> Optional[Tuple[str, FrozenSet[str]]]:
    """From ``torch.cpu.get_capabilities()`` (torch's cpuinfo; None where this torch has none): the
    features reported True (booleans only: cache sizes and core counts are left out)."""
    get = getattr(torch.cpu, "get_capabilities", None)
    if get is None:
        return None
    try:
        caps = get()
    except Exception:
        return None
    return str(caps.get("cpu_name", "")), frozenset(k for k, v in caps.items() if v is True)


def _proc_cpu_info(path: str = "/proc/cpuinfo") -> Tuple[str, FrozenSet[str]]:
    """The ``model name`` and ``flags`` of the first processor in ``path`` (x86 Linux; empty elsewhere)."""
    model, flags = "", frozenset()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = value.strip()
                elif key == "flags":
                    flags = frozenset(value.split())
                    break
    except OSError:
        pass
    return model, flags


@functools.lru_cache(maxsize=None)
def cpu_info() -> Tuple[str, FrozenSet[str]]:
    """(model name, feature flags) of this CPU, read once: from ``torch.cpu.get_capabilities()``
    where torch has it, else from ``/proc/cpuinfo`` (older torch); ``("", frozenset())`` where neither
    says anything."""
    return _torch_cpu_info() or _proc_cpu_info()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (one of :data:`NATIVE_BF16_FLAGS` in its flags);
    elsewhere torch emulates bfloat16 through float32, which is slower than float32 itself."""
    flags = cpu_info()[1]
    return any(f in flags for f in NATIVE_BF16_FLAGS)


def low_precision_dtype(precision: str, device: Union[str, torch.device]) -> Optional[torch.dtype]:
    """The dtype of the mixed-precision blocks on ``device`` for ``precision``; None = float32."""
    return block_dtype(check_precision(precision), torch.device(device).type)


def block_dtype(precision: str, device_type: str) -> Optional[torch.dtype]:
    """:func:`low_precision_dtype` of a ``precision`` already checked (:func:`check_precision`) on
    ``device_type`` (``"cpu"``, ``"cuda"``): what a block runs on each forward, without checking again."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device_type == "cuda":
        return torch.float16
    if device_type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def effective_precision(precision: str, device: Union[str, torch.device], num_fp16_res: int = 1) -> str:
    """What runs: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (``"fp32"`` also when the config has no
    mixed-precision resolutions, ``num_fp16_res == 0``)."""
    dtype = low_precision_dtype(precision, device)
    return "fp32" if dtype is None or not num_fp16_res else _NAMES[dtype]


def describe(precision: str, device: Union[str, torch.device], num_fp16_res: int) -> Dict[str, object]:
    """The record of a run: ``{"choice", "runs", "num_fp16_res", "cpu_native_bf16", "note"}``."""
    runs = effective_precision(precision, device, num_fp16_res)
    device_type = torch.device(device).type
    if runs == "fp32" and num_fp16_res and precision != "fp32":
        why = (f"this CPU has no native bfloat16 ({'/'.join(NATIVE_BF16_FLAGS)})" if device_type == "cpu"
               else "no 16-bit dtype")
        note = f"float32 everywhere ({why})"
    elif runs == "fp32" and precision != "fp32":
        note = "float32 everywhere (the config has no mixed-precision resolutions: num_fp16_res=0)"
    elif runs == "fp32":
        note = "float32 everywhere"
    else:
        dtype = "bfloat16" if runs == "bf16" else "float16"
        note = (f"{dtype} in the top {num_fp16_res} resolutions of G and D (not below 8x8), float32 elsewhere; "
                "float32 weights and losses")
    info: Dict[str, object] = {"choice": precision, "runs": runs, "num_fp16_res": int(num_fp16_res), "note": note}
    if device_type == "cpu":
        info["cpu_native_bf16"] = cpu_has_native_bf16()
    return info


def summary(info: Mapping[str, Any]) -> str:
    """One line for a run's start-up report, of :func:`describe`'s record."""
    return f"precision: {info['runs']} (--precision {info['choice']}): {info['note']}"
