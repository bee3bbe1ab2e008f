"""Measurement helpers shared by the benchmarks and the Fig. 5 measurement.

* :func:`peak_memory`: the memory one training step adds to what is already allocated (its
  activations, gradients and optimiser state: the part that differs between adapter methods;
  the frozen weights are common). On CUDA the allocator's peak during the call minus what was
  allocated before it; on the CPU (no allocator statistics) the bytes of the distinct tensors
  autograd saves for backward plus the trainable parameters, their gradients and AdamW's two
  moments.
* :func:`alternating`: the order of the measured variants per repetition, reversed every other
  repetition, so that a drift of the machine's load affects all of them alike.
* :func:`spread`: median and min–max of repetitions.
"""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

T = TypeVar("T")

# CPU features that select different matmul kernels (oneDNN bf16 / AMX): with them the same
# code, config and seed give other weights, so a run records which of them its CPU has.
CPU_KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
# Environment variables that pin those kernels, and so change results when set: oneDNN's
# ISA cap (bf16 matmuls) and MKL's code branch (fp32 matmuls;
# docs/notes/2026-12-03-cpu-kernels-and-four-bases.md).
KERNEL_ENV = ("ONEDNN_MAX_CPU_ISA", "MKL_CBWR")


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on the CPU) before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def saved_tensor_bytes(fn: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves for backward while ``fn`` runs
    (parameters excluded: they exist anyway). Storages are told apart by address, so ``fn``
    must run one forward and one backward: a second forward may reuse the freed addresses of
    the first one's activations. ``exclude``: tensors whose storages are not counted either
    (a model's parameters, which a linear saves as a transposed view, not a Parameter)."""
    seen: dict[int, int] = {}
    skip = {t.untyped_storage().data_ptr() for t in exclude}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if not isinstance(t, nn.Parameter) and ptr not in skip:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def peak_memory(
    fn: Callable[[], object], params: Sequence[torch.Tensor], device: torch.device
) -> int:
    """Peak memory one call of ``fn`` (a training step) adds (see the module docstring).

    Args:
        fn: runs one step (forward, backward, optimiser).
        params: the trainable parameters (CPU estimate: + gradients + 2 AdamW moments).
        device: CUDA: the allocator's peak during the call minus what was allocated before.
    """
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    trainable = sum(p.numel() * p.element_size() for p in params)
    return int(saved_tensor_bytes(fn) + 4 * trainable)


def alternating(names: Sequence[T], repeats: int) -> Iterator[tuple[int, list[T]]]:
    """``(repetition, order)``: ``names`` forward in even repetitions, reversed in odd ones."""
    for rep in range(repeats):
        yield rep, list(names) if rep % 2 == 0 else list(reversed(names))


def spread(values: Sequence[float]) -> dict[str, float]:
    """``{"median", "min", "max", "n"}`` of repeated measurements."""
    return {
        "median": float(statistics.median(values)),
        "min": float(min(values)),
        "max": float(max(values)),
        "n": len(values),
    }


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU as far as it changes results: model name, torch's kernel capability (which
    ``ATEN_CPU_CAPABILITY`` caps), the flags of CPU_KERNEL_FLAGS it has, and the KERNEL_ENV
    variables (None when unset)."""
    model, flags = platform.processor() or None, set()
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return {
        "model": model,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "kernel_flags": [f for f in CPU_KERNEL_FLAGS if f in flags],
        **{name.lower(): os.environ.get(name) for name in KERNEL_ENV},
    }
