"""``results.json``: the one file per run that the analysis reads.

Written atomically. ``status`` is ``running`` while a job works, then ``success`` or
``failed`` (with the error). Secrets never enter it: config values under keys that look
like credentials are redacted (moelora.utils.redaction).

Model summary: What results.json reports about the adapted model: parameter counts (Fig. 5), the same
counts for ChatGLM-6B's shapes, and, for task-gated models, the expert-weight matrix ω (Fig. 6).

A method declares its ChatGLM-6B parameter family in its YAML (``chatglm6b_params: moelora``,
see :func:`moelora.method.introspect.chatglm6b_param_counts`); nothing here knows method names.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from moelora.method.gate import MoELoRARouter
from moelora.method.introspect import chatglm6b_param_counts, count_parameters, expert_weights
from moelora.method.tasks import TaskMap
from moelora.utils.io import read_json, write_json
from moelora.utils.measure import cpu_info
from moelora.utils.redaction import redact, redact_strings

__all__ = ["RESULTS_NAME", "provenance", "read_results", "redact", "write_results"]

RESULTS_NAME = "results.json"
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "hydra-core",
    "rouge-chinese",
    "scikit-learn",
    "tokenizers",
    "numpy",
)


def git_info(root: Path) -> dict[str, Any]:
    def _git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": sha, "git_dirty": bool(status) if status is not None else None}


def provenance(root: Path, device: str) -> dict[str, Any]:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    info = git_info(root)
    info.update(
        versions=versions,
        python=platform.python_version(),
        device=device,
        gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        platform=platform.platform(),
        cpu=cpu_info(),
        hostname=platform.node(),
    )
    return info


def read_results(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RESULTS_NAME
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except ValueError:
        return None


def write_results(run_dir: Path, results: dict[str, Any]) -> Path:
    path = Path(run_dir) / RESULTS_NAME
    write_json(path, redact_strings(results))  # URL userinfo, ?token=… in any recorded string
    return path


def score_table(results: dict[str, Any]) -> list[str]:
    """The lines a finished job prints: its scores, each beside its floor
    (moelora.evaluation.floors) when known."""

    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    scores = results["scores"]
    floors = results.get("floors") or {}
    width = max(len(k) for k in scores)
    floor, by = floors.get("floor") or {}, floors.get("floor_by") or {}
    lines = [
        f"{results['method']} seed={results['seed']} "
        f"[{results['benchmark']}, scorer={results['scorer_mode']}]"
    ]
    if floor:
        lines.append(
            f"  {'task':<{width}}  {'score':<6}  floor (best of an empty answer, the majority "
            "training target, a copy of the input)"
        )
    for k, v in scores.items():
        line = f"  {k:<{width}}  {fmt(v)}"
        if k in floor:
            line += f"  {fmt(floor[k])}" + (f" ({by[k]})" if by.get(k) else "")
        lines.append(line)
    return lines


# ---- model summary ----------------------------------------
def parameter_summary(model: nn.Module) -> dict[str, Any]:
    """Trainable / total parameters of the model in hand; ``ratio`` = trainable / base (the
    paper's definition), ``peft_ratio`` = trainable / total."""
    counts = count_parameters(model)
    base = counts["total"] - counts["trainable"]
    return {
        **counts,
        "base": base,
        "ratio": counts["trainable"] / max(1, base),
        "peft_ratio": counts["trainable"] / max(1, counts["total"]),
    }


def chatglm6b_summary(method_cfg: DictConfig, task_map: TaskMap) -> dict[str, Any] | None:
    family = method_cfg.get("chatglm6b_params")
    if not family:
        return None
    hp = OmegaConf.to_container(method_cfg.get("adapter") or {}, resolve=True)
    target = method_cfg.get("target_modules", "all")
    return chatglm6b_param_counts(
        family,
        num_tasks=task_map.num_embeddings,
        rank=hp.get("rank", 16),
        num_experts=hp.get("num_experts", 8),
        task_embed_dim=hp.get("task_embed_dim", 64),
        target=target if isinstance(target, str) else "all",
    )


def describe_model(
    model: nn.Module, *, task_map: TaskMap, method_cfg: DictConfig
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "params": parameter_summary(model),
        "params_chatglm6b": chatglm6b_summary(method_cfg, task_map),
    }
    if any(isinstance(m, MoELoRARouter) for m in model.modules()):
        omega = expert_weights(model)
        out["expert_weights"] = {"tasks": list(task_map.tasks), "matrix": omega.tolist()}
    return out
