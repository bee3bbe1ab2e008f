"""What a MOELoRA model is made of: expert weights per task (Fig. 6) and parameter counts
(Fig. 5), including ChatGLM-6B's counts computed from its shapes alone (docs/methods.md §6.2,
§7, §8)."""

from __future__ import annotations

import torch
from torch import nn

from moelora.method.model import get_router

# ChatGLM-6B (docs/methods.md §1.5): 28 blocks, adapted linears (d_in, d_out).
CHATGLM6B_BLOCKS = 28
CHATGLM6B_LINEARS: dict[str, tuple[int, int]] = {
    "query_key_value": (4096, 12288),
    "dense": (4096, 4096),
    "dense_h_to_4h": (4096, 16384),
    "dense_4h_to_h": (16384, 4096),
}
CHATGLM6B_TARGETS = {"all": tuple(CHATGLM6B_LINEARS), "qkv": ("query_key_value",)}
CHATGLM6B_TOTAL = 6_173_286_400
METHODS = ("lora", "moelora", "moelora_sparse", "moelora_multi_gate", "moelora_no_gate", "molora")


def expert_weights(model: nn.Module) -> torch.Tensor:
    """``ω`` for every task in task order: ``(num_tasks, N)``, fp32, no dropout (Fig. 6).

    Per-layer gates (MOELoRA(M)) are averaged over the layers; see
    :func:`expert_weights_per_layer` for the full ``(L, T, N)`` tensor.
    """
    table = get_router(model).weight_table().float().cpu()
    return table.mean(dim=0) if table.dim() == 3 else table


def expert_weights_per_layer(model: nn.Module) -> torch.Tensor:
    """``(L, num_tasks, N)`` weights, one slice per adapted layer (identical slices for a
    shared gate)."""
    from moelora.method.model import moelora_layers

    table = get_router(model).weight_table().float().cpu()
    if table.dim() == 3:
        return table
    return table.unsqueeze(0).expand(len(moelora_layers(model)), -1, -1).clone()


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"trainable", "total"}`` parameters of the model in hand (shared tensors once)."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return {"trainable": trainable, "total": total}


def chatglm6b_param_counts(
    method: str,
    *,
    num_tasks: int = 8,
    rank: int = 16,
    num_experts: int = 8,
    task_embed_dim: int = 64,
    target: str = "all",
) -> dict[str, float]:
    """Trainable parameters of ``method`` on ChatGLM-6B, from its shapes (no weights loaded).

    Args:
        method: ``lora`` | ``moelora`` (= dense) | ``moelora_sparse`` | ``moelora_multi_gate``
            (MOELoRA(M)) | ``moelora_no_gate`` | ``molora``.
        num_tasks: rows of each task-embedding table (8 dense ids; 17 for the authors' ids).
        rank: total rank ``r``; num_experts: ``N``; task_embed_dim: ``d_T``.
        target: ``all`` (4 linears × 28 blocks) or ``qkv``.

    Returns:
        ``trainable``, ``base`` (6,173,286,400), ``total`` (= base + trainable), ``ratio``
        (trainable / base, the paper's figure) and ``peft_ratio`` (trainable / total).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}; use one of {', '.join(METHODS)}")
    if target not in CHATGLM6B_TARGETS:
        raise ValueError(f"target={target!r}; use one of {', '.join(CHATGLM6B_TARGETS)}")
    shapes = [CHATGLM6B_LINEARS[n] for n in CHATGLM6B_TARGETS[target]] * CHATGLM6B_BLOCKS
    trainable = sum(rank * (d_in + d_out) for d_in, d_out in shapes)
    gate = num_tasks * task_embed_dim + num_experts * task_embed_dim  # E + W_T
    if method in ("moelora", "moelora_sparse"):
        trainable += gate
    elif method == "moelora_multi_gate":
        trainable += len(shapes) * gate
    elif method == "molora":
        trainable += sum(num_experts * d_in for d_in, _ in shapes)
    base = CHATGLM6B_TOTAL
    return {
        "trainable": trainable,
        "base": base,
        "total": base + trainable,
        "ratio": trainable / base,
        "peft_ratio": trainable / (base + trainable),
    }
