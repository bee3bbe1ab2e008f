"""Build MOELoRA on any HF causal LM: inject layers by name suffix, attach one gate.

``build(model, tasks=..., target_modules=..., **hparams)`` is the method's adapter builder
(``conf/method/moelora_*.yaml``); it goes through the library API (moelora.method.peft_model),
whose :class:`~moelora.method.peft_model.MoeLoraModel` applies :func:`inject`. It swaps every linear layer (``nn.Linear``, or transformers'
``Conv1D`` as in GPT-2) whose name ends with one of ``target_modules`` (or every one but the
output head for ``all-linear``) for a :class:`moelora.method.layer.MoELoRALinear`, attaches a single
:class:`moelora.method.gate.MoELoRARouter` as ``model.moelora_router`` (the gate of Eq. 5, shared
by all layers), freezes everything else and returns the same model object. No modeling code
is edited: task ids reach the layers through ``moelora.method.gate.task_context``.

Use NON-reentrant gradient checkpointing with it
(``model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})``):
the gate's output is computed once per batch, outside the checkpointed blocks, and the
reentrant variant's no-grad first pass would cut the gradient to ``E`` and ``W_T``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import nn

from moelora.method.gate import MoELoRARouter
from moelora.method.layer import MoELoRALinear, is_conv1d
from moelora.method.tasks import TaskMap

if TYPE_CHECKING:
    from moelora.method.config import MoeLoraConfig

ROUTER_NAME = "moelora_router"


ALL_LINEAR = "all-linear"


def _is_adaptable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or is_conv1d(module)


def _matches(name: str, suffixes: Sequence[str]) -> bool:
    return any(name == s or name.endswith("." + s) for s in suffixes)


def linear_module_names(model: nn.Module) -> list[str]:
    """Distinct name suffixes of the model's linear layers (``nn.Linear`` and ``Conv1D``), with
    ``parent.child`` for a suffix that names layers of different parents (GPT-2's
    ``attn.c_proj``, ``mlp.c_proj``); for error messages."""
    names = [n for n, m in model.named_modules() if _is_adaptable(m) and n]
    suffixes = sorted({n.rsplit(".", 1)[-1] for n in names})
    out = list(suffixes)
    for suffix in suffixes:
        parents = {n.rsplit(".", 2)[-2] for n in names if n.endswith("." + suffix) and n.count(".")}
        if len(parents) > 1:
            out += sorted(f"{p}.{suffix}" for p in parents)
    return out


def find_targets(
    model: nn.Module, target_modules: str | Sequence[str]
) -> list[tuple[str, nn.Module]]:
    """The layers an adapter wraps, in ``named_modules`` order.

    Args:
        model: the base model.
        target_modules: ``"all-linear"``: every ``nn.Linear`` / ``Conv1D`` except the output
            head (what peft's ``all-linear`` selects); or module-name suffixes (``q_proj``,
            ``attn.c_proj``): the linear layers whose name ends with one of them, each suffix
            matching at least one.

    Raises:
        ValueError: a suffix matches no linear layer; the message lists the names that exist
            and what to set.
    """
    layers = [(n, m) for n, m in model.named_modules() if _is_adaptable(m) and n]
    if isinstance(target_modules, str):
        if target_modules != ALL_LINEAR:
            raise ValueError(
                f"target_modules={target_modules!r}; use {ALL_LINEAR!r} or a list of module names"
            )
        get_head = getattr(model, "get_output_embeddings", None)
        head = get_head() if callable(get_head) else None
        found = [(n, m) for n, m in layers if m is not head]
    else:
        found = [(n, m) for n, m in layers if _matches(n, target_modules)]
        unused = [t for t in target_modules if not any(_matches(n, [t]) for n, _ in found)]
        if unused or not target_modules:
            raise ValueError(
                f"target modules {list(unused or target_modules)} match no linear layer "
                f"(nn.Linear or Conv1D) of this {type(model).__name__}; its linear layers are "
                f"named {linear_module_names(model)}. Set method.target_modules to a list of "
                f"those names (e.g. method.target_modules=[{','.join(linear_module_names(model)[:2])}]),"
                f" to all (every linear layer but the output head), or to a preset of "
                "conf/model/<model>.yaml"
            )
    if not found:
        raise ValueError(f"this {type(model).__name__} has no nn.Linear or Conv1D layer to adapt")
    return found


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
    """The method's adapter builder (``conf/method/moelora_*.yaml``): the library API,
    ``get_moelora_model(model, MoeLoraConfig(...))`` (moelora.method.peft_model), with these
    settings, returning the adapted model itself rather than its wrapper (the harness routes
    with ``moelora.method.gate.task_context``). The arguments are the fields of
    :class:`moelora.method.config.MoeLoraConfig` (see :func:`inject` for each); a bad value is
    refused naming the field and the fix.

    Returns:
        the same ``model``: only the ``lora_A``/``lora_B`` of the adapted linears and the
        gate's ``E``/``W_T`` require grad.
    """
    from moelora.method.config import MoeLoraConfig
    from moelora.method.peft_model import get_moelora_model

    config = MoeLoraConfig(
        tasks=list(tasks),
        target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
        num_experts=num_experts,
        rank=rank,
        alpha=alpha,
        dropout=dropout,
        task_embed_dim=task_embed_dim,
        gate=gate,
        top_k=top_k,
        sparse_mode=sparse_mode,
        expert_init=expert_init,
        dropout_mode=dropout_mode,
        scaling_rank=scaling_rank,
        task_id_scheme=task_id_scheme,
        batch_axis=batch_axis,
    )
    return get_moelora_model(model, config).get_base_model()


def inject(model: nn.Module, config: MoeLoraConfig) -> nn.Module:
    """Turn ``model`` into MOELoRA in place (Eqs. 4-5; docs/methods.md §6) and return it: the
    injection itself, which :class:`moelora.method.peft_model.MoeLoraModel` applies. ``config``
    is a :class:`moelora.method.config.MoeLoraConfig`, validated when it was made; its fields
    document every setting (``N`` experts of total rank ``r``, ``α``, dropout, the gate, ``d_T``,
    the task-id scheme, the batch axis). Use :func:`build` or ``moelora.get_moelora_model``.

    Returns:
        the same ``model``: only the ``lora_A``/``lora_B`` of the adapted linears and the
        gate's ``E``/``W_T`` require grad.
    """
    if hasattr(model, ROUTER_NAME):
        raise ValueError("this model already carries MOELoRA; build it on a fresh base model")
    task_map = TaskMap(config.tasks, scheme=config.task_id_scheme)
    targets = find_targets(model, config.target_modules)
    device = targets[0][1].weight.device
    router = MoELoRARouter(
        gate=config.gate,
        num_experts=config.num_experts,
        rank=config.rank,
        task_ids=task_map.ids(),
        task_names=task_map.tasks,
        num_embeddings=task_map.num_embeddings,
        task_embed_dim=config.task_embed_dim,
        top_k=config.top_k,
        sparse_mode=config.sparse_mode,
        num_layers=len(targets),
    ).to(device)
    model.requires_grad_(False)
    for index, (name, linear) in enumerate(targets):
        layer = MoELoRALinear(
            linear,
            num_experts=config.num_experts,
            rank=config.rank,
            alpha=config.alpha,
            dropout=config.dropout,
            expert_init=config.expert_init,
            dropout_mode=config.dropout_mode,
            scaling_rank=config.scaling_rank,
            batch_axis=config.batch_axis,
            weight_source=router,
        )
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
    raise ValueError("this model has no MOELoRA router; build it with moelora.method.model.build")
