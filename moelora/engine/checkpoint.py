"""Training checkpoints: adapter weights, optimizer, scheduler and RNG state, all without
pickle (safetensors for tensors, JSON for the rest), written atomically.

Layout: ``<ckpt_dir>/step-000100/{adapter_model.safetensors, adapter_config.json,
optimizer.safetensors, state.json, manifest.json}`` and ``<ckpt_dir>/last.json`` naming the
newest one. A checkpoint directory appears only once complete (written under a temporary
name, with its manifest (moelora.utils.manifest) last, then renamed), so a run killed
mid-save resumes from the previous one, and resume takes the newest checkpoint whose files
still match their manifest (:func:`verified_checkpoint` says which it skipped).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from moelora.engine.adapters import load_adapter, save_adapter
from moelora.engine.finite import check_tensors
from moelora.utils.io import read_json, write_json
from moelora.utils.manifest import ManifestError, verify_manifest, write_manifest
from moelora.utils.seed import rng_state, set_process_rng_state, set_rng_state


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    ckpt_dir: str | os.PathLike,
    *,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    adapter_meta: dict[str, Any],
    extra: dict[str, Any] | None = None,
    keep_last: int = 2,
    rank_rng: list[tuple[dict[str, torch.Tensor], dict]] | None = None,
) -> Path:
    """Write a checkpoint (rank 0). ``rank_rng``: every process's
    ``moelora.utils.seed.process_rng_state()`` in rank order (a multi-process job), saved as
    ``rng-rank<r>.safetensors`` so that each rank resumes its own random streams."""
    ckpt_dir = Path(ckpt_dir)
    final = ckpt_dir / f"step-{step:06d}"
    tmp = ckpt_dir / f".tmp-step-{step:06d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    save_adapter(model, tmp, meta=adapter_meta)
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    save_file(opt_tensors, str(tmp / "optimizer.safetensors")) if opt_tensors else None
    rng_tensors, rng_meta = rng_state()
    save_file(rng_tensors, str(tmp / "rng.safetensors"))
    for r, (tensors, _) in enumerate(rank_rng or []):
        save_file(tensors, str(tmp / f"rng-rank{r}.safetensors"))
    write_json(
        tmp / "state.json",
        {
            "step": step,
            "optimizer": opt_meta,
            "scheduler": scheduler.state_dict(),
            "rng": rng_meta,
            "rng_ranks": [meta for _, meta in rank_rng or []],
            "extra": extra or {},
        },
    )
    write_manifest(tmp)  # last: a checkpoint is trusted only while its files match it
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_json(ckpt_dir / "last.json", {"step": step, "path": final.name})
    steps = sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir())
    for old in steps[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def last_checkpoint(ckpt_dir: str | os.PathLike) -> Path | None:
    """The newest checkpoint of ``ckpt_dir`` whose files verify (see :func:`verified_checkpoint`)."""
    return verified_checkpoint(ckpt_dir)[0]


def verified_checkpoint(ckpt_dir: str | os.PathLike) -> tuple[Path | None, list[str]]:
    """The newest checkpoint of ``ckpt_dir`` that verifies against its manifest, and why each
    newer one was skipped (a file cut short, changed or missing). Checkpoints saved before
    manifests existed are taken as they are. None: no ``last.json`` or nothing verifies."""
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / "last.json").is_file():
        return None, []
    skipped = []
    for path in sorted((p for p in ckpt_dir.glob("step-*") if p.is_dir()), reverse=True):
        try:
            verify_manifest(path, fix="this checkpoint is skipped")
            read_json(path / "state.json")
        except (ManifestError, ValueError, OSError) as e:
            skipped.append(str(e))
            continue
        return path, skipped
    return None, skipped


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    expected_tasks: list[str] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, Any]:
    """Restore everything saved by :func:`save_checkpoint`; returns ``state.json``.

    The RNG state is this ``rank``'s own when the checkpoint has one per rank for the same
    ``world_size``; otherwise rank 0's (a checkpoint of one process, or of an older version)."""
    path = Path(path)
    load_adapter(model, path, expected_tasks=expected_tasks)
    state = read_json(path / "state.json")
    opt_file = path / "optimizer.safetensors"
    tensors = load_file(str(opt_file)) if opt_file.is_file() else {}
    check_tensors(tensors, f"{opt_file}: optimizer state not loaded")
    optimizer.load_state_dict(_unflatten_optimizer(tensors, state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    ranks = state.get("rng_ranks") or []
    own = path / f"rng-rank{rank}.safetensors"
    if world_size > 1 and len(ranks) == world_size and own.is_file():
        set_process_rng_state(load_file(str(own)), ranks[rank])
    else:
        set_rng_state(load_file(str(path / "rng.safetensors")), state["rng"])
    return state
