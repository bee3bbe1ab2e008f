"""What results.json reports about the adapted model: parameter counts (Fig. 5), the same
counts for ChatGLM-6B's shapes, and, for task-gated models, the expert-weight matrix ω (Fig. 6).

A method declares its ChatGLM-6B parameter family in its YAML (``chatglm6b_params: moelora``,
see :func:`moelora.introspect.chatglm6b_param_counts`); nothing here knows method names.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from moelora.gate import MoELoRARouter
from moelora.introspect import chatglm6b_param_counts, count_parameters, expert_weights
from moelora.tasks import TaskMap


def parameter_summary(model: nn.Module) -> dict[str, Any]:
    """Trainable / total parameters of the model in hand; ``ratio`` = trainable / base (the
    paper's definition), ``peft_ratio`` = trainable / total."""
    counts = count_parameters(model)
    base = counts["total"] - counts["trainable"]
    return {**counts, "base": base, "ratio": counts["trainable"] / max(1, base),
            "peft_ratio": counts["trainable"] / max(1, counts["total"])}


def chatglm6b_summary(method_cfg: DictConfig, task_map: TaskMap) -> dict[str, Any] | None:
    family = method_cfg.get("chatglm6b_params")
    if not family:
        return None
    hp = OmegaConf.to_container(method_cfg.get("adapter") or {}, resolve=True)
    target = method_cfg.get("target_modules", "all")
    return chatglm6b_param_counts(
        family, num_tasks=task_map.num_embeddings, rank=hp.get("rank", 16),
        num_experts=hp.get("num_experts", 8), task_embed_dim=hp.get("task_embed_dim", 64),
        target=target if isinstance(target, str) else "all",
    )


def describe_model(model: nn.Module, *, task_map: TaskMap, method_cfg: DictConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"params": parameter_summary(model),
                           "params_chatglm6b": chatglm6b_summary(method_cfg, task_map)}
    if any(isinstance(m, MoELoRARouter) for m in model.modules()):
        omega = expert_weights(model)
        out["expert_weights"] = {"tasks": list(task_map.tasks), "matrix": omega.tolist()}
    return out
