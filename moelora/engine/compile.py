"""Compiled training steps (``trainer.compile``): the model's forward and backward through
``torch.compile``, for every trained method alike.

``compile_for_training(model, settings)`` returns the model the shared loop calls
(moelora.engine.train): the model itself (``off``) or ``torch.compile(model)`` (``on``), whose
forward is traced by Dynamo into one graph and whose backward AOTAutograd compiles with it.
What keeps it one graph and one compilation for a whole run:

* **The adapter layers are graph-break free.** The task gate (Eqs. 5-7) is evaluated once
  per micro-batch by the router, outside the graph (moelora.method.gate.task_context), and the
  layers read its ``(batch, N)`` output as a graph input; the expert mixing is two matmuls
  (moelora.method.layer, Eq. 4). Dropout (Eq. 4: ``drop(x)``) stays in the graph
  (moelora.method.dropout.dropout): a ``bits16`` mask (the CPU default) is one custom op that
  draws what the eager step draws, in the same order, so compiled and eager steps see the same
  masks; ``torch`` masks are torch's dropout, which the compiler generates (same distribution,
  other masks).
* **No recompilation per step.** :func:`mark_dynamic_lengths` marks the sequence axis of
  every batch tensor dynamic before the call, so that one graph with a symbolic length
  serves every length the collator produces (``length_groups`` vary it at every step).
* **Compiled artefacts are reused across jobs.** Inductor's on-disk FX graph and autograd
  caches live in ``<paths.artifacts_dir>/torch_compile`` (``TORCHINDUCTOR_CACHE_DIR`` when
  set wins): the jobs of a grid, which share the base model and the shapes, compile once.

The CPU default stays ``off``: ``make bench`` measures both (docs/performance.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

COMPILE_MODES = ("off", "on")
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def check_compile(value: Any) -> str:
    """``trainer.compile`` as ``off`` or ``on``; raise ``ValueError`` with the fix otherwise.

    YAML reads an unquoted ``off``/``on`` as a boolean: ``False``/``True`` are accepted."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value not in COMPILE_MODES:
        raise ValueError(
            f"trainer.compile={value!r}: use one of {', '.join(COMPILE_MODES)} "
            "(e.g. trainer.compile=on)"
        )
    return value


def use_cache_dir(cache_dir: str | Path | None) -> str | None:
    """Point inductor's on-disk caches at ``cache_dir`` unless the user set
    ``TORCHINDUCTOR_CACHE_DIR`` (importing inductor sets it to torch's default, a folder under
    the temp dir, which does not count); returns the directory in force."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    if cache_dir is not None and os.environ.get(CACHE_ENV) in (None, "", default_cache_dir()):
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        os.environ[CACHE_ENV] = str(Path(cache_dir).resolve())
    return os.environ.get(CACHE_ENV)


def compile_for_training(
    model: nn.Module,
    mode: Any,
    *,
    backend: str = "inductor",
    cache_dir: str | Path | None = None,
) -> nn.Module:
    """The module the training loop calls: ``model`` (``off``) or ``torch.compile(model)``.

    Args:
        model: the (prepared) model; it keeps its parameters, so the optimizer, checkpoints
            and the unwrapped model are untouched.
        mode: ``trainer.compile`` (see :func:`check_compile`).
        backend: torch.compile's backend (``inductor``; tests count graphs with ``eager`` or
            ``aot_eager``, which need no C++ compiler).
        cache_dir: where inductor keeps its caches (see :func:`use_cache_dir`).
    """
    if check_compile(mode) == "off":
        return model
    if backend == "inductor":
        use_cache_dir(cache_dir)
    return torch.compile(model, backend=backend)


def mark_dynamic_lengths(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mark the sequence axis (axis 1) of every batch tensor of two or more axes dynamic, so
    that a compiled model traces one graph for all lengths; returns ``batch``.

    ``maybe_mark_dynamic``: a length the graph must specialise on (a length of 1) compiles a
    second graph rather than failing the step."""
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.dim() >= 2:
            torch._dynamo.maybe_mark_dynamic(value, 1)
    return batch
