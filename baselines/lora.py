"""LoRA (Full / Single / Full+TP), docs/methods.md §4, through ``peft``.

Per adapted linear: ``h = W0 x + b + s · B A drop(x)`` with ``s = alpha / rank``, A
Kaiming-uniform (a = √5), B = 0, dropout on the adapter input (Eq. 3). The three LoRA rows
differ only in what they are trained on (all tasks, one task, task-prompted inputs), which
their YAMLs say; the adapter is this one builder.
"""

from __future__ import annotations

from collections.abc import Sequence

from peft import LoraConfig, get_peft_model
from torch import nn

from moelora.method.layer import is_conv1d
from moelora.method.model import ALL_LINEAR, find_targets


def build(
    model: nn.Module,
    *,
    tasks: Sequence[str],
    target_modules: str | Sequence[str],
    rank: int = 16,
    alpha: float = 32,
    dropout: float = 0.1,
) -> nn.Module:
    """Wrap ``model`` with rank-``rank`` LoRA on every linear layer (``nn.Linear`` or
    ``Conv1D``, which peft handles with ``fan_in_fan_out``) whose name ends with one of
    ``target_modules``, or on every one but the output head for ``all-linear`` (peft's own
    shorthand; moelora.method.model.find_targets selects the same layers). Everything else is
    frozen. ``tasks`` is unused: LoRA sees no task id.

    Returns:
        a ``peft.PeftModel``.
    """
    if rank < 1:
        raise ValueError(f"rank={rank}; LoRA needs rank >= 1")
    targets = find_targets(model, target_modules)  # a clear error for unknown names
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=ALL_LINEAR if target_modules == ALL_LINEAR else list(target_modules),
        fan_in_fan_out=any(is_conv1d(m) for _, m in targets),
        bias="none",
        task_type="CAUSAL_LM",
        init_lora_weights=True,
    )
    return get_peft_model(model, config)
