"""Seeding. One call, first thing in a run, before the model and adapters are built."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (all devices); optionally force deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """RNG states as (tensors, json-able) for a checkpoint."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    np_state = np.random.get_state()
    meta = {
        "python": _to_json(random.getstate()),
        "numpy": [
            np_state[0],
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
    }
    return tensors, meta


def process_rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """This process's RNG states (CPU, its current CUDA device, python, numpy): what one rank
    of a multi-process job draws from, for a per-rank checkpoint."""
    tensors, meta = rng_state()
    tensors = {"torch_cpu": tensors["torch_cpu"]}
    if torch.cuda.is_available():
        tensors["torch_cuda"] = torch.cuda.get_rng_state()
    return tensors, meta


def set_process_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Restore what :func:`process_rng_state` saved."""
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available() and "torch_cuda" in tensors:
        torch.cuda.set_rng_state(tensors["torch_cuda"])
    random.setstate(_from_json(meta["python"]))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if states:
            torch.cuda.set_rng_state_all(states)
    random.setstate(_from_json(meta["python"]))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def _to_json(obj):
    return [_to_json(x) for x in obj] if isinstance(obj, tuple | list) else obj


def _from_json(obj):
    return tuple(_from_json(x) for x in obj) if isinstance(obj, list) else obj
