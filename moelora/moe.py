"""Build MOELoRA on any HF causal LM: inject layers by name suffix, attach one gate.

``build(model, tasks=..., target_modules=..., **hparams)`` is the method's adapter builder
(``conf/method/moelora_*.yaml``). It swaps every linear layer (``nn.Linear``, or transformers'
``Conv1D`` as in GPT-2) whose name ends with one of ``target_modules`` (or every one but the
output head for ``all-linear``) for a :class:`moelora.layer.MoELoRALinear`, attaches a single
:class:`moelora.gate.MoELoRARouter` as ``model.moelora_router`` (the gate of Eq. 5, shared
by all layers), freezes everything else and returns the same model object. No modeling code
is edited: task ids reach the layers through ``moelora.routing.task_context``.

Use NON-reentrant gradient checkpointing with it
(``model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})``):
the gate's output is computed once per batch, outside the checkpointed blocks, and the
reentrant variant's no-grad first pass would cut the gradient to ``E`` and ``W_T``.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from moelora.gate import MoELoRARouter
from moelora.layer import MoELoRALinear, validate_layer_args
from moelora.models import find_targets
from moelora.tasks import TaskMap

ROUTER_NAME = "moelora_router"


def build(
    model: nn.Module,
    *,
    tasks: Sequence[str],
    target_modules: str | Sequence[str],
    num_experts: int = 8,
    rank: int = 16,
    alpha: float = 32,
    dropout: float = 0.1,
    task_embed_dim: int = 64,
    gate: str = "dense",
    top_k: int = 2,
    sparse_mode: str = "mask_neg_inf",
    expert_init: str = "normal_0.01",
    dropout_mode: str = "shared",
    scaling_rank: str = "total",
    task_id_scheme: str = "dense",
    batch_axis: int = 0,
) -> nn.Module:
    """Turn ``model`` into MOELoRA in place (Eqs. 4-5; methods.md §6) and return it.

    Args:
        model: a HF causal LM (any architecture whose projections are ``nn.Linear`` or
            ``Conv1D``).
        tasks: the ordered task list; with ``task_id_scheme`` it defines the valid task ids.
        target_modules: module-name suffixes to adapt, or ``all-linear`` (from
            ``conf/model/``; see moelora.models.find_targets).
        num_experts: ``N`` (``expert_num``).
        rank: TOTAL rank ``r`` (``lora_r``), a multiple of ``N``.
        alpha: ``α`` (``lora_alpha``); the scaling is ``α/r``.
        dropout: adapter-input dropout (``lora_dropout``).
        task_embed_dim: ``d_T`` (``task_embedding_dim``).
        gate: ``dense`` | ``sparse`` | ``uniform`` (w/o gate) | ``per_layer`` (MOELoRA(M)).
        top_k: ``K`` of the sparse gate.
        sparse_mode: ``mask_neg_inf`` (default) | ``literal_zero`` (Eq. 7 as printed).
        expert_init: ``normal_0.01`` | ``kaiming``.
        dropout_mode: ``shared`` | ``per_expert``.
        scaling_rank: ``total`` (α/r) | ``expert`` (α/(r/N)).
        task_id_scheme: ``dense`` (ids 0..T-1, a table of T rows) or ``authors`` (1..16, 17
            rows), see moelora.tasks.TaskMap.
        batch_axis: batch axis of the hidden states (0; 1 for sequence-first ChatGLM-6B).

    Returns:
        the same ``model``: only the ``lora_A``/``lora_B`` of the adapted linears and the
        gate's ``E``/``W_T`` require grad.
    """
    validate_layer_args(num_experts=num_experts, rank=rank, dropout=dropout,
                        expert_init=expert_init, dropout_mode=dropout_mode,
                        scaling_rank=scaling_rank, batch_axis=batch_axis)
    if hasattr(model, ROUTER_NAME):
        raise ValueError("this model already carries MOELoRA; build it on a fresh base model")
    task_map = TaskMap(tasks, scheme=task_id_scheme)
    targets = find_targets(model, target_modules)
    device = targets[0][1].weight.device
    router = MoELoRARouter(
        gate=gate, num_experts=num_experts, rank=rank, task_ids=task_map.ids(),
        task_names=task_map.tasks, num_embeddings=task_map.num_embeddings,
        task_embed_dim=task_embed_dim, top_k=top_k, sparse_mode=sparse_mode,
        num_layers=len(targets),
    ).to(device)
    model.requires_grad_(False)
    for index, (name, linear) in enumerate(targets):
        layer = MoELoRALinear(linear, num_experts=num_experts, rank=rank, alpha=alpha,
                              dropout=dropout, expert_init=expert_init,
                              dropout_mode=dropout_mode, scaling_rank=scaling_rank,
                              batch_axis=batch_axis, weight_source=router)
        layer.layer_index = index
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer)
    model.add_module(ROUTER_NAME, router)
    for p in router.parameters():
        p.requires_grad_(True)
    return model


def moelora_layers(model: nn.Module) -> list[tuple[str, MoELoRALinear]]:
    """The adapted layers of ``model`` with their module names, in ``named_modules`` order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, MoELoRALinear)]


def get_router(model: nn.Module) -> MoELoRARouter:
    """The model's MOELoRA router; raises if ``model`` was not built by :func:`build`."""
    for m in model.modules():
        if isinstance(m, MoELoRARouter):
            return m
    raise ValueError("this model has no MOELoRA router; build it with moelora.moe.build")
