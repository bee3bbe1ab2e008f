"""Adapter checkpoints: every trainable parameter in safetensors, plus a JSON config.

This one format serves every method (LoRA through peft, MOELoRA, P-Tuning, MoLoRA): an
adapter is exactly the set of parameters that train, stored by their names in
``model.named_parameters()``. The config records what is needed to rebuild the same
adapter on the same base and to refuse a mismatched one: the method, its hyper-parameters,
the ordered task list (which defines the task ids), the target modules and a fingerprint of
the base model.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from moelora.io import read_json, write_json

WEIGHTS_NAME = "adapter_model.safetensors"
CONFIG_NAME = "adapter_config.json"
FORMAT_VERSION = 1


class AdapterMismatchError(ValueError):
    """The saved adapter does not fit the model or the task list it is loaded into."""


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters of ``model``, by name, detached and contiguous."""
    return {
        name: p.detach().contiguous()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


def base_fingerprint(model: nn.Module) -> str:
    """A hash of the frozen parameters' names and shapes (not values: cheap on 6B models)."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            h.update(f"{name}:{tuple(p.shape)};".encode())
    return h.hexdigest()[:16]


def save_adapter(model: nn.Module, directory: str | os.PathLike, *, meta: dict[str, Any]) -> Path:
    """Save the trainable parameters of ``model`` and ``meta`` to ``directory``.

    Args:
        model: the adapted model.
        directory: target folder; written atomically file by file.
        meta: method name, hyper-parameters, ordered ``tasks``, ``target_modules`` and
            ``base_model`` info. A base fingerprint and the format version are added.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.to("cpu") for k, v in trainable_state_dict(model).items()}
    if not state:
        raise ValueError("the model has no trainable parameters; nothing to save as an adapter")
    tmp = directory / f".{WEIGHTS_NAME}.tmp"
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, directory / WEIGHTS_NAME)
    config = dict(meta)
    config["format_version"] = FORMAT_VERSION
    config["base_fingerprint"] = base_fingerprint(model)
    config["num_parameters"] = int(sum(v.numel() for v in state.values()))
    write_json(directory / CONFIG_NAME, config)
    return directory


def read_adapter_config(directory: str | os.PathLike) -> dict[str, Any]:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no adapter config; is {directory} an adapter directory?")
    return read_json(path)


def load_adapter(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    expected_tasks: list[str] | None = None,
    check_base: bool = True,
) -> dict[str, Any]:
    """Load an adapter saved by :func:`save_adapter` into ``model`` (built the same way).

    Raises:
        AdapterMismatchError: the task list differs (task ids would be silently permuted),
            the base model differs, or the parameter names or shapes do not match.
    """
    directory = Path(directory)
    config = read_adapter_config(directory)
    saved_tasks = config.get("tasks")
    if expected_tasks is not None and saved_tasks is not None and list(saved_tasks) != list(expected_tasks):
        raise AdapterMismatchError(
            f"{directory}: adapter was trained for tasks {saved_tasks} (in this id order), "
            f"but this run uses {list(expected_tasks)}; use the same data.tasks list"
        )
    if check_base and config.get("base_fingerprint") not in (None, base_fingerprint(model)):
        raise AdapterMismatchError(
            f"{directory}: adapter was trained on base {config.get('base_model', {})} "
            f"(fingerprint {config.get('base_fingerprint')}), which does not match the model it is "
            f"loaded into (fingerprint {base_fingerprint(model)}); load it into the same base model"
        )
    state = load_file(str(directory / WEIGHTS_NAME))
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    missing = sorted(expected - state.keys())
    unexpected = sorted(state.keys() - params.keys())
    if missing or unexpected:
        raise AdapterMismatchError(
            f"{directory}: adapter keys do not match the model: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
            f"{'...' if len(unexpected) > 5 else ''}; build the model with the saved method config"
        )
    with torch.no_grad():
        for name, tensor in state.items():
            p = params[name]
            if p.shape != tensor.shape:
                raise AdapterMismatchError(
                    f"{directory}: {name} has shape {tuple(tensor.shape)} in the adapter but "
                    f"{tuple(p.shape)} in the model"
                )
            p.copy_(tensor.to(device=p.device, dtype=p.dtype))
    return config
