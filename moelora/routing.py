"""How per-example task ids reach task-conditioned modules.

The shared trainer and the evaluator never know which method they run. They wrap every
forward (and the backward that follows it) and every ``generate()`` call in
``task_context(model, task_ids)``. Every submodule that implements the
:class:`TaskRouted` protocol (a ``set_task_ids`` method) receives the batch's task ids on
entry and ``None`` on exit. For methods without task conditioning (LoRA, P-Tuning,
MoLoRA) the context does nothing.

The backward pass must run inside the context: non-reentrant gradient checkpointing
recomputes the forward during backward, and the recomputation must see the same routing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class TaskRouted(Protocol):
    def set_task_ids(self, task_ids: torch.Tensor | None) -> None: ...


def routed_modules(model: nn.Module) -> list[nn.Module]:
    """The task-conditioned submodules of ``model`` (in ``modules()`` order)."""
    # duck typing, not isinstance(m, TaskRouted): a runtime Protocol check per module costs
    # about 1 ms per call on a small model, which a merged-latency benchmark would see
    return [m for m in model.modules() if callable(getattr(m, "set_task_ids", None))]


@contextmanager
def task_context(model: nn.Module, task_ids: torch.Tensor | None) -> Iterator[None]:
    """Hand ``task_ids`` (shape ``(batch,)``, long) to every task-routed module of ``model``."""
    modules = routed_modules(model)
    for m in modules:
        m.set_task_ids(task_ids)
    try:
        yield
    finally:
        for m in modules:
            m.set_task_ids(None)
