"""Training throughput for the logs and ``results.json``: tokens/s, gradient norm, peak memory
and, on a GPU whose peak is known, the model FLOPs utilisation (MFU).

MFU counts the FLOPs a step needs, not what it runs: per token, ``2 N`` forward and ``2 N``
backward (the input gradients) over all ``N`` parameters, and ``2 N_t`` more for the weight
gradients of the ``N_t`` trainable ones (frozen weights get none); the recomputation of
gradient checkpointing is not counted. Attention's sequence-quadratic FLOPs are left out
(small at 1,220 tokens next to a 7B model's linears). The peak is the card's dense bf16/fp16
tensor-core rate (:data:`PEAK_TFLOPS`, from the vendors' data sheets).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

# dense bf16 (fp16 on V100/T4) tensor-core TFLOP/s per card, by a substring of its name
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "A6000": 155.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
    "A10": 125.0,
    "V100": 125.0,
    "T4": 65.0,
}


def peak_flops(device_name: str) -> float | None:
    """The card's peak FLOP/s, or None for a card not in :data:`PEAK_TFLOPS`."""
    for key, tflops in PEAK_TFLOPS.items():
        if key in device_name:
            return tflops * 1e12
    return None


def flops_per_token(model: nn.Module) -> float:
    """``4 N + 2 N_t`` (see the module docstring)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return float(4 * total + 2 * trainable)


class Throughput:
    """Tokens (this process's, padding excluded) and time between two log lines."""

    def __init__(self, model: nn.Module, accelerator: Any) -> None:
        self.accelerator = accelerator
        self.cuda = accelerator.device.type == "cuda"
        self.peak = (
            peak_flops(torch.cuda.get_device_name(accelerator.device)) if self.cuda else None
        )
        self.per_token = flops_per_token(model)
        self.tokens = 0
        self.total_tokens = 0
        self.since = time.perf_counter()
        self.start = self.since
        self.grad_norm: torch.Tensor | None = None
        self.last: dict[str, float] = {}

    def add(self, tokens: int) -> None:
        self.tokens += int(tokens)

    def metrics(self) -> dict[str, float]:
        """``train/tokens_per_s`` (all processes), ``train/grad_norm``, and on CUDA
        ``train/peak_memory_gb`` and ``train/mfu``; resets the window."""
        now = time.perf_counter()
        count = torch.tensor(float(self.tokens), device=self.accelerator.device)
        tokens = float(self.accelerator.reduce(count, reduction="sum").item())
        self.total_tokens += int(tokens)
        rate = tokens / max(now - self.since, 1e-9)
        self.tokens, self.since = 0, now
        out = {"train/tokens_per_s": rate}
        if self.grad_norm is not None:
            out["train/grad_norm"] = float(self.grad_norm)
        if self.cuda:
            out["train/peak_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
            if self.peak:
                world = self.accelerator.num_processes
                out["train/mfu"] = rate * self.per_token / (self.peak * world)
        self.last = out
        return out

    def summary(self) -> dict[str, Any]:
        """For ``results.json``: the run's mean tokens/s and the last window's values."""
        seconds = time.perf_counter() - self.start
        return {
            "tokens": self.total_tokens,
            "tokens_per_s": self.total_tokens / seconds if seconds > 0 else None,
            "flops_per_token": self.per_token,
            "peak_flops": self.peak,
            "last": self.last,
        }
