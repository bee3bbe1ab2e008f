"""MOELoRA reproduction harness: multi-task PEFT with a task-motivated mixture of LoRA experts.

The library API (docs/library.md)::

    from moelora import MoeLoraConfig, get_moelora_model, MoeLoraModel

Its names are imported on first use (module ``__getattr__``), so that importing a submodule
such as ``moelora.utils.io`` does not import torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "MoeLoraConfig": "moelora.method.config",
    "MoeLoraModel": "moelora.method.peft_model",
    "MoeLoraLoadError": "moelora.method.peft_model",
    "get_moelora_model": "moelora.method.peft_model",
    "MoeLoraDataCollator": "moelora.method.peft_model",
    "TaskAdapters": "moelora.method.export",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'moelora' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
