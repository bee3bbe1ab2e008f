"""Adapter checkpoints: every trainable parameter in safetensors, plus a JSON config.

This one format serves every method (LoRA through peft, MOELoRA, P-Tuning, MoLoRA): an
adapter is exactly the set of parameters that train, stored by their names in
``model.named_parameters()``. The config records what is needed to rebuild the same
adapter on the same base and to refuse a mismatched one: the method, its hyper-parameters,
the ordered task list (which defines the task ids), the target modules, the base model's
absolute path and a fingerprint of its weights (names, shapes and a fixed sample of values).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from moelora.engine.finite import check_tensors
from moelora.method.fingerprint import (
    CONFIG_NAME,
    FORMAT_VERSION,
    SAMPLES_PER_TENSOR,
    WEIGHTS_NAME,
    AdapterMismatchError,
    base_dtype,
    base_fingerprint,
    recorded_way,
    write_adapter_files,
)
from moelora.utils.io import read_json
from moelora.utils.redaction import redact

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "SAMPLES_PER_TENSOR",
    "WEIGHTS_NAME",
    "AdapterMismatchError",
    "base_dtype",
    "base_fingerprint",
    "load_adapter",
    "read_adapter_config",
    "save_adapter",
    "trainable_state_dict",
]


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters of ``model``, by name, detached and contiguous."""
    return {
        name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad
    }


def save_adapter(model: nn.Module, directory: str | os.PathLike, *, meta: dict[str, Any]) -> Path:
    """Save the trainable parameters of ``model`` and ``meta`` to ``directory``.

    Args:
        model: the adapted model.
        directory: target folder; written atomically file by file.
        meta: method name, hyper-parameters, ordered ``tasks``, ``target_modules`` and
            ``base_model`` info. A base fingerprint and the format version are added.
    """
    state = trainable_state_dict(model)
    if not state:
        raise ValueError("the model has no trainable parameters; nothing to save as an adapter")
    check_tensors(state, f"{directory}: adapter not saved")
    # a token in a model path or URL never lands in the file
    return write_adapter_files(directory, state, redact(dict(meta)), base=model)


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
    if (
        expected_tasks is not None
        and saved_tasks is not None
        and list(saved_tasks) != list(expected_tasks)
    ):
        raise AdapterMismatchError(
            f"{directory}: adapter was trained for tasks {saved_tasks} (in this id order), "
            f"but this run uses {list(expected_tasks)}; use the same data.tasks list"
        )
    recorded = config.get("base_fingerprint")
    if check_base and recorded is not None:
        saved_dtype = config.get("base_dtype")
        current = recorded_way(model, config)
        if current != recorded:
            dtype_note = ""
            if saved_dtype and base_dtype(model) not in (saved_dtype, "float32"):
                dtype_note = (
                    f" It was fingerprinted in {saved_dtype} and this model is "
                    f"{base_dtype(model)}: load the base in {saved_dtype} (or float32)."
                )
            raise AdapterMismatchError(
                f"{directory}: adapter was trained on base {config.get('base_model', {})} "
                f"(fingerprint {recorded}: names, shapes and sampled weights), which does not "
                f"match the model it is loaded into (fingerprint {current}); load it into the "
                f"same base model.{dtype_note}"
            )
    state = load_file(str(directory / WEIGHTS_NAME))
    check_tensors(state, f"{directory / WEIGHTS_NAME}: adapter not loaded")
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
