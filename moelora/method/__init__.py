"""MOELoRA, the method: N LoRA experts per adapted linear layer and one task-motivated gate.

Read in this order: :mod:`.layer` (Eq. 4, the fused experts), :mod:`.gate` (Eqs. 5-7, the gate,
its router and ``task_context``), :mod:`.model` (injection into any HF causal LM),
:mod:`.merge` (Eq. 8, one task folded into the base), :mod:`.export` (each task as a stock PEFT
LoRA), :mod:`.introspect` (expert weights, Fig. 6; parameter counts, Fig. 5), :mod:`.tasks`
(task names and ids), :mod:`.dropout` (how the adapters' dropout masks are drawn).

The library API (docs/library.md): :mod:`.config` (``MoeLoraConfig``), :mod:`.peft_model`
(``get_moelora_model``, ``MoeLoraModel``, ``MoeLoraDataCollator``), :mod:`.fingerprint` (an
adapter's files and the base-model fingerprint they are checked against).

This subpackage imports nothing from the rest of ``moelora`` (tests/test_layout.py).
"""

from moelora.method.config import MoeLoraConfig
from moelora.method.export import TaskAdapters, export_task_adapters, serving_commands
from moelora.method.gate import MoELoRARouter, TaskGate, task_context
from moelora.method.introspect import count_parameters, expert_weights
from moelora.method.layer import MoELoRALinear
from moelora.method.merge import merged_for_task, supports_merge
from moelora.method.model import build, get_router, moelora_layers
from moelora.method.peft_model import (
    MoeLoraDataCollator,
    MoeLoraLoadError,
    MoeLoraModel,
    get_moelora_model,
)
from moelora.method.tasks import TaskMap

__all__ = [
    "MoELoRALinear",
    "MoeLoraConfig",
    "MoeLoraDataCollator",
    "MoeLoraLoadError",
    "MoeLoraModel",
    "TaskAdapters",
    "get_moelora_model",
    "serving_commands",
    "MoELoRARouter",
    "TaskGate",
    "TaskMap",
    "build",
    "count_parameters",
    "expert_weights",
    "export_task_adapters",
    "get_router",
    "merged_for_task",
    "moelora_layers",
    "supports_merge",
    "task_context",
]
