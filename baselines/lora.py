"""LoRA (Full / Single / Full+TP), methods.md §4, through ``peft``.

Per adapted linear: ``h = W0 x + b + s · B A drop(x)`` with ``s = alpha / rank``, A
Kaiming-uniform (a = √5), B = 0, dropout on the adapter input (Eq. 3). The three LoRA rows
differ only in what they are trained on (all tasks, one task, task-prompted inputs), which
their YAMLs say; the adapter is this one builder.
"""

from __future__ import annotations

from collections.abc import Sequence

from peft import LoraConfig, get_peft_model
from torch import nn

from moelora.models import linear_module_names


def build(
    model: nn.Module,
    *,
    tasks: Sequence[str],
    target_modules: Sequence[str],
    rank: int = 16,
    alpha: float = 32,
    dropout: float = 0.1,
) -> nn.Module:
    """Wrap ``model`` with rank-``rank`` LoRA on every linear whose name ends with one of
    ``target_modules``; everything else is frozen. ``tasks`` is unused: LoRA sees no task id.

    Returns:
        a ``peft.PeftModel``.
    """
    if rank < 1:
        raise ValueError(f"rank={rank}; LoRA needs rank >= 1")
    available = set(linear_module_names(model))
    unknown = [t for t in target_modules if t not in available]
    if unknown:
        raise ValueError(
            f"target modules {unknown} match no linear layer of this model; its linear layers "
            f"are named {sorted(available)} (set target_modules in conf/model/)"
        )
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        bias="none",
        task_type="CAUSAL_LM",
        init_lora_weights=True,
    )
    return get_peft_model(model, config)
