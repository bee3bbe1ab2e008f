"""Per-task recovery (Eq. 8, Algorithm 1 lines 10-14) for any adapted model.

``with merged_for_task(model, task_id): model.generate(...)`` folds task ``task_id``'s update
into every adapted base weight (fp32 compute, one cast), puts the base layers back in place of
the adapter wrappers (the base model's modules and compute, nothing more), and on exit puts
the wrappers back and restores the kept original weights, bit for bit. The originals are kept
in host memory, so a GPU holds one copy of the model while merged (in place), plus one fp32
``ΔW`` at a time while merging. It knows no
method by name; it works on:

* task-mergeable modules: ``merge(task_id)``, ``unmerge()`` and a ``merged_task`` attribute
  (moelora.method.layer.MoELoRALinear);
* peft tuner layers (LoRA): ``merge()``; the task id is ignored (one update for all tasks),
  and the original weight is restored from a kept copy rather than by subtraction.

A model on a quantized base (bitsandbytes 4-bit or 8-bit linears, QLoRA) cannot merge: its
packed weights cannot take ``ΔW`` and be restored bit for bit; it generates unmerged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from moelora.method.layer import NOT_MERGEABLE_QUANTIZED, is_quantized


def _is_task_mergeable(m: nn.Module) -> bool:
    return (
        hasattr(m, "merged_task")
        and callable(getattr(m, "merge", None))
        and callable(getattr(m, "unmerge", None))
    )


def _is_peft_layer(m: nn.Module) -> bool:
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(m, BaseTunerLayer)


def _mergeable_modules(model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
    task_layers = [m for m in model.modules() if _is_task_mergeable(m)]
    peft_layers = [m for m in model.modules() if _is_peft_layer(m) and not _is_task_mergeable(m)]
    return task_layers, peft_layers


def merge_blocker(model: nn.Module) -> str | None:
    """Why :func:`merged_for_task` cannot apply to ``model``, or None when it can: the model
    has no adapter layers, a layer's expert weights depend on the input (a token router, as
    MoLoRA's), or a base layer is quantized (QLoRA)."""
    task_layers, peft_layers = _mergeable_modules(model)
    if not task_layers and not peft_layers:
        return "the model has no adapter layers"
    for m in task_layers:
        source = getattr(m, "weight_source", None)
        if source is not None and not getattr(source, "mergeable", False):
            return "its expert weights depend on the input"
    if not all(hasattr(m, "get_base_layer") for m in peft_layers):
        return "an adapter layer does not expose its base layer"
    if any(is_quantized(_base_of(m)) for m in task_layers + peft_layers):
        return NOT_MERGEABLE_QUANTIZED
    return None


def supports_merge(model: nn.Module) -> bool:
    """Whether :func:`merged_for_task` applies (:func:`merge_blocker` finds nothing)."""
    return merge_blocker(model) is None


def _base_of(m: nn.Module) -> nn.Module:
    return m.get_base_layer() if hasattr(m, "get_base_layer") else m.base_layer


def _swap_in_base_layers(
    model: nn.Module, wrappers: set[nn.Module], swapped: list[tuple[nn.Module, str, nn.Module]]
) -> None:
    """Put each merged wrapper's base linear (``nn.Linear`` or ``Conv1D``) in its place, so the
    merged model runs the base architecture's modules and nothing else (no wrapper call per
    layer). Appends
    ``(parent, child_name, wrapper)`` to ``swapped`` as it goes, so even a partial swap can be
    undone."""
    for name, m in list(model.named_modules()):
        if m not in wrappers or not name:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        swapped.append((parent, child, m))
        setattr(parent, child, _base_of(m))


@contextmanager
def merged_for_task(model: nn.Module, task_id: int) -> Iterator[nn.Module]:
    """Run ``model`` with task ``task_id``'s weights ``W_j = W0 + ΔW_j`` merged (Eq. 8).

    Raises:
        ValueError: the model has nothing mergeable (see :func:`supports_merge`).
    """
    if reason := merge_blocker(model):
        raise ValueError(
            f"this model cannot be merged per task: {reason}; use method.infer=unmerged for it"
        )
    task_layers, peft_layers = _mergeable_modules(model)
    kept: list[tuple[nn.Module, torch.Tensor]] = []
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for m in task_layers:
            m.merge(task_id=task_id)
        for m in peft_layers:
            kept.append((m, m.get_base_layer().weight.detach().to("cpu", copy=True)))
            m.merge()
        _swap_in_base_layers(model, set(task_layers) | set(peft_layers), swapped)
        yield model
    finally:
        for parent, child, wrapper in reversed(swapped):
            setattr(parent, child, wrapper)
        for m in task_layers:
            m.unmerge()
        with torch.no_grad():
            for m, original in kept:
                if m.merged:
                    m.unmerge()
                m.get_base_layer().weight.copy_(original)
