"""What results.json reports about the adapted model: parameter counts (Fig. 5) and, for
task-gated models, the expert-weight matrix ω (Fig. 6)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig
from torch import nn

from moelora.tasks import TaskMap


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameters of the model in hand (each tensor counted once)."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return {"trainable": trainable, "total": total, "base": total - trainable,
            "ratio": trainable / max(1, total - trainable)}


def describe_model(model: nn.Module, *, task_map: TaskMap, method_cfg: DictConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"params": count_parameters(model)}
    return out
