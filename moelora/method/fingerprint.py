"""An adapter's files: the fingerprint of the frozen base it was trained on, and the writer.

An adapter file is only meaningful on the base it was trained on: the same parameter names, the
same shapes, the same weights. :func:`base_fingerprint` hashes the frozen parameters (names,
shapes and a fixed sample of values) so that loading an adapter into another base is refused
(moelora.engine.adapters.load_adapter, moelora.method.peft_model.MoeLoraModel.from_pretrained).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

SAMPLES_PER_TENSOR = 16
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
FORMAT_VERSION = 2  # 2: base_fingerprint covers sampled weights (1: names and shapes)


class AdapterMismatchError(ValueError):
    """The saved adapter does not fit the model or the task list it is loaded into."""


def _frozen(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(name, p) for name, p in model.named_parameters() if not p.requires_grad]


def base_dtype(model: nn.Module) -> str | None:
    """The most common dtype of the frozen parameters (``"float32"``, ``"bfloat16"``, ...)."""
    counts = Counter(str(p.dtype).removeprefix("torch.") for _, p in _frozen(model))
    return counts.most_common(1)[0][0] if counts else None


def base_fingerprint(model: nn.Module, *, dtype: str | None = None, weights: bool = True) -> str:
    """A hash of the frozen parameters: names, shapes and a fixed sample of their values.

    Each tensor contributes ``SAMPLES_PER_TENSOR`` evenly spaced elements (a few kB for a 6B
    model, so it is cheap), cast to ``dtype`` (default: :func:`base_dtype`) and then to fp32:
    a base saved in fp32 and loaded in bf16 for training, then in fp32 for export, gives the
    same fingerprint when ``dtype`` is the training dtype. ``weights=False`` is the format-1
    fingerprint (names and shapes only)."""
    h = hashlib.sha256()
    cast = getattr(torch, dtype) if dtype else None
    for name, p in _frozen(model):
        h.update(f"{name}:{tuple(p.shape)};".encode())
        if not weights or p.numel() == 0:
            continue
        if p.is_meta:
            h.update(b"meta;")
            continue
        n, k = p.numel(), min(p.numel(), SAMPLES_PER_TENSOR)
        idx = torch.tensor([i * (n - 1) // max(k - 1, 1) for i in range(k)], device=p.device)
        sample = p.detach().reshape(-1)[idx]
        sample = sample.to(cast) if cast is not None else sample
        h.update(sample.float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def recorded_way(model: nn.Module, saved: dict) -> str:
    """The fingerprint of ``model`` computed the way an adapter config ``saved`` recorded its
    ``base_fingerprint``: from format version 2 the weights in the recorded ``base_dtype``,
    before it the parameter names and shapes only."""
    if int(saved.get("format_version", 1)) >= 2:
        return base_fingerprint(model, dtype=saved.get("base_dtype"))
    return base_fingerprint(model, weights=False)


def write_adapter_files(
    directory: str | os.PathLike,
    state: dict[str, torch.Tensor],
    config: dict[str, Any],
    *,
    base: nn.Module,
) -> Path:
    """Write ``adapter_model.safetensors`` (``state``) and ``adapter_config.json`` (``config``
    plus the format version, the base's dtype and fingerprint and the parameter count), each to
    a temporary name first and then renamed: the one writer of MOELoRA's adapter files, for the
    library (``MoeLoraModel.save_pretrained``) and the harness
    (``moelora.engine.adapters.save_adapter``) alike. NaN or Infinity in the config is refused.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    dtype = base_dtype(base)
    config = {
        **config,
        "format_version": FORMAT_VERSION,
        "base_dtype": dtype,
        "base_fingerprint": base_fingerprint(base, dtype=dtype),
        "num_parameters": int(sum(v.numel() for v in state.values())),
    }
    text = json.dumps(config, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    tmp = directory / f".{WEIGHTS_NAME}.tmp"
    save_file({k: v.to("cpu") for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, directory / WEIGHTS_NAME)
    tmp = directory / f".{CONFIG_NAME}.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, directory / CONFIG_NAME)
    return directory
