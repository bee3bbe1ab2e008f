"""The training schedule a real model gets: never the CPU benchmark's learning rate by accident.

``trainer=default`` is sized for the tiny MedSynth-8 base on CPUs (lr 3.5e-3 = the methods'
2e-4 × ``lr_scale`` 17.5); the paper trains ChatGLM-6B at 2e-4 (``trainer=paper``). A model
config may set ``max_lr`` (conf/model/hf.yaml, chatglm_6b.yaml): a base of at least
:data:`LARGE_PARAMS` parameters (estimated from its ``config.json``, before any weight loads)
whose learning rate comes out above it is refused with the fix, unless ``trainer.lr`` is set
explicitly (saying so).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moelora.harness.schema import ConfigError
from moelora.models.loading import (
    LARGE_PARAMS,
    TOKENIZER_FILES,
    estimated_params,
    load_tokenizer,
    resolve_checkpointing,
    resolve_special_tokens,
)


def resolve_auto_switches(cfg: Any) -> list[str]:
    """Write the concrete value of the model's ``auto`` switches into ``cfg`` (in place) before
    the job's identity is taken (the runner, and the grid planner experiments/schedule.py):
    ``gradient_checkpointing`` (on from :data:`LARGE_PARAMS` parameters) and
    ``add_special_tokens`` (a BOS where the tokenizer adds one itself). The identity then
    records what the job computes, so a job whose ``auto`` comes out as the value it had before
    ``auto`` existed keeps its identity, and its finished runs stay done. A model folder without
    a tokenizer (a job that tokenizes nothing locally, such as in-context learning over HTTP)
    adds no special tokens.

    Returns:
        one line per switch it resolved.
    """
    model, notes = cfg.model, []
    folder = Path(str(model.get("path")))
    if model.get("gradient_checkpointing") == "auto":
        model.gradient_checkpointing = resolve_checkpointing("auto", folder)
        notes.append(f"model.gradient_checkpointing=auto → {model.gradient_checkpointing}")
    if model.get("add_special_tokens") == "auto":
        if any((folder / name).is_file() for name in TOKENIZER_FILES):
            tokenizer = load_tokenizer(
                folder, trust_remote_code=bool(model.get("trust_remote_code") or False)
            )
            model.add_special_tokens = resolve_special_tokens("auto", tokenizer)
        else:
            model.add_special_tokens = False
        notes.append(f"model.add_special_tokens=auto → {model.add_special_tokens}")
    return notes


def check_schedule(cfg: Any) -> None:
    """Raise :class:`ConfigError` when a large model would train above ``model.max_lr``."""
    max_lr = cfg.model.get("max_lr")
    optim = cfg.method.get("optim") or {}
    if max_lr is None or cfg.trainer.get("lr") is not None or optim.get("lr") is None:
        return  # an explicit lr, or a method that does not train
    lr = float(cfg.method.optim.lr) * float(cfg.trainer.lr_scale)
    if lr <= float(max_lr):
        return
    config_file = Path(str(cfg.model.path)) / "config.json"
    if not config_file.is_file():
        return  # check_input_paths reports a missing model
    params = estimated_params(json.loads(config_file.read_text(encoding="utf-8")))
    if params < LARGE_PARAMS:
        return
    raise ConfigError(
        f"{config_file}: a model of about {params / 1e9:.1f}B parameters would train at lr "
        f"{lr:g} (method.optim.lr {cfg.method.optim.lr:g} × trainer.lr_scale "
        f"{cfg.trainer.lr_scale:g}), above model.max_lr={max_lr:g}: that is the CPU schedule "
        "of the tiny base. Use trainer=paper (lr 2e-4, effective batch 64, 8,000 steps), or "
        "set trainer.lr explicitly"
    )
