"""The MOELoRA layer (Eq. 4): a frozen linear plus N LoRA experts, computed fused.

Expert ``i`` is ``A_i`` (``(r/N)×d_in``), ``B_i`` (``d_out×(r/N)``); they are stored stacked,
``A_cat = [A_1; …; A_N]`` (``r×d_in``) and ``B_cat = [B_1, …, B_N]`` (``d_out×r``), and the
mixture ``s · Σ_i ω_i B_i A_i drop(x)`` is two matmuls of total rank ``r`` with the rank-r
intermediate scaled by ``expand(ω)`` (docs/methods.md §9a): no loop over experts.

Where the weights ``ω`` come from is pluggable (:class:`ExpertWeightSource`): MOELoRA's
task gate (moelora.method.gate.MoELoRARouter, per example) or a token router (MoLoRA, per token).
"""

from __future__ import annotations

import math
import sys
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from moelora.method.dropout import dropout

EXPERT_INITS = ("normal_0.01", "kaiming")
DROPOUT_MODES = ("shared", "per_expert")
SCALING_RANKS = ("total", "expert")


@runtime_checkable
class ExpertWeightSource(Protocol):
    """Supplies the expert weights a :class:`MoELoRALinear` multiplies its rank axis with.

    ``rank_weights(layer, x)`` returns ``expand(ω)`` as a tensor that broadcasts against the
    rank-r intermediate ``u`` of shape ``x.shape[:-1] + (r,)``: either per example
    ``(batch, r)`` (the layer inserts the sequence axes, using ``layer.batch_axis``) or per
    token, exactly ``x.shape[:-1] + (r,)``. ``mergeable`` says whether the weights depend on
    the task only (then ``task_weights(layer, task_id) -> (N,)`` gives ``ω_j`` for Eq. 8).
    """

    mergeable: bool

    def rank_weights(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor: ...

    def task_weights(self, layer: nn.Module | None, task_id: int) -> torch.Tensor: ...


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is transformers' ``Conv1D`` (GPT-2): a linear layer whose weight is
    stored transposed, ``(d_in, d_out)``."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


# bitsandbytes' quantized linears (a k-bit base, QLoRA): their weight is packed, so the shape
# comes from the module's attributes, the frozen path is the module's own forward, and no
# update can be folded into the weight (Eq. 8).
QUANTIZED_LINEARS = ("Linear4bit", "Linear8bitLt")
NOT_MERGEABLE_QUANTIZED = (
    "the base weights are quantized (model.quantization: 4bit | 8bit), so a task's update "
    "cannot be folded into them (Eq. 8); use unmerged inference (method.infer=unmerged), or "
    "load the base unquantized (model.quantization=null) to merge"
)


def is_quantized(module: nn.Module) -> bool:
    """Whether ``module`` is a bitsandbytes ``Linear4bit`` or ``Linear8bitLt``. bitsandbytes is
    never imported here: a module of it can exist only once something else imported it."""
    bnb = sys.modules.get("bitsandbytes")
    if bnb is None:
        return False
    classes = tuple(getattr(bnb.nn, name) for name in QUANTIZED_LINEARS if hasattr(bnb.nn, name))
    return isinstance(module, classes)


def linear_shape(module: nn.Module) -> tuple[int, int]:
    """``(d_in, d_out)`` of an ``nn.Linear``, a ``Conv1D`` or a quantized linear
    (:func:`is_quantized`, whose packed weight has another shape)."""
    if is_quantized(module):
        return module.in_features, module.out_features
    d0, d1 = module.weight.shape
    return (d0, d1) if is_conv1d(module) else (d1, d0)


class MoELoRALinear(nn.Module):
    """``h = W0 x + b + s · B_cat (expand(ω) ⊙ A_cat drop(x))`` (Eq. 4, fused form).

    Args:
        base_layer: the frozen ``nn.Linear`` (``W0``: ``d_out×d_in``), or transformers'
            ``Conv1D`` (GPT-2), which stores ``W0`` transposed (``d_in×d_out``); ``lora_A`` and
            ``lora_B`` have the same shapes either way, and merging adds ``ΔWᵀ`` to a Conv1D.
            A bitsandbytes ``Linear4bit`` / ``Linear8bitLt`` (a quantized base, QLoRA) runs
            its own forward for ``W0 x``; the adapters stay fp32, and it cannot merge.
        num_experts: ``N`` (``expert_num`` in MOELoRA-peft).
        rank: TOTAL rank ``r`` (``lora_r``); each expert has rank ``r/N``.
        alpha: ``α`` (``lora_alpha``); ``s = α/r`` (``scaling_rank="total"``) or
            ``α/(r/N)`` (``"expert"``).
        dropout: dropout probability on the adapter input (``lora_dropout``).
        expert_init: ``normal_0.01`` (A ~ N(0, 0.01²), the authors' code) or ``kaiming``
            (LoRA's Kaiming-uniform, a=√5); B = 0 either way.
        dropout_mode: ``shared`` (one mask for all experts) or ``per_expert`` (one mask per
            expert, as the authors' loop).
        scaling_rank: ``total`` or ``expert``.
        batch_axis: the batch axis of this layer's input (0: ``[batch, seq, d]``; 1 for
            sequence-first models such as ChatGLM-6B, ``[seq, batch, d]``).
        weight_source: where ``ω`` comes from (see :class:`ExpertWeightSource`); it is held by
            reference, not registered as a submodule (a shared router is registered once at
            model level). A per-layer source with its own parameters must be registered by
            its owner, e.g. ``layer.add_module("router", source)``.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        *,
        num_experts: int,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        expert_init: str = "normal_0.01",
        dropout_mode: str = "shared",
        scaling_rank: str = "total",
        batch_axis: int = 0,
        weight_source: ExpertWeightSource | None = None,
    ) -> None:
        super().__init__()
        validate_layer_args(
            num_experts=num_experts,
            rank=rank,
            dropout=dropout,
            expert_init=expert_init,
            dropout_mode=dropout_mode,
            scaling_rank=scaling_rank,
            batch_axis=batch_axis,
        )
        self.base_layer = base_layer
        self.fan_in_fan_out = is_conv1d(base_layer)  # weight stored (d_in, d_out)
        self.in_features, self.out_features = linear_shape(base_layer)
        self.quantized = is_quantized(base_layer)  # a bitsandbytes base (QLoRA): never merged
        self.num_experts = num_experts
        self.rank = rank
        self.alpha = alpha
        self.scaling = alpha / (rank if scaling_rank == "total" else rank // num_experts)
        self.dropout_p = float(dropout)
        self.dropout_mode = dropout_mode
        self.batch_axis = batch_axis
        device = base_layer.weight.device
        # Adapter weights are kept in fp32 whatever the base dtype (as peft does).
        self.lora_A = nn.Parameter(torch.empty(rank, self.in_features, device=device))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, rank, device=device))
        if expert_init == "normal_0.01":
            nn.init.normal_(self.lora_A, mean=0.0, std=0.01)
        else:
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.disabled = False
        self.merged_task: int | None = None
        self._original_weight: torch.Tensor | None = None
        self.layer_index = 0
        object.__setattr__(self, "_source", weight_source)

    # ---- weights -------------------------------------------------------------------
    def set_weight_source(self, source: ExpertWeightSource) -> None:
        object.__setattr__(self, "_source", source)

    @property
    def weight_source(self) -> ExpertWeightSource:
        if self._source is None:
            raise RuntimeError("this MoELoRALinear has no weight source; call set_weight_source()")
        return self._source

    @property
    def weight(self) -> torch.Tensor:
        """The base weight (some model code reads ``.weight`` of its linears)."""
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return getattr(self.base_layer, "bias", None)

    def _broadcast(self, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Per-example ``(batch, r)`` → a shape that broadcasts over ``x``'s other axes."""
        if x.dim() <= 2 or w.shape == x.shape[:-1] + (self.rank,):
            return w
        shape = [1] * (x.dim() - 1) + [self.rank]
        shape[self.batch_axis] = w.shape[0]
        return w.reshape(shape)

    # ---- forward -------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if self.disabled or self.merged_task is not None:
            return result
        w = self._broadcast(self.weight_source.rank_weights(self, x), x)
        delta = self.adapter_output(x, w).to(result.dtype)
        if self.quantized:  # bitsandbytes' autograd output may be a view: never in place
            return result + delta
        # in place: the base output is needed by no backward; saves one output-sized pass
        return result.add_(delta)

    def adapter_output(self, x: torch.Tensor, rank_weights: torch.Tensor) -> torch.Tensor:
        """``s · B_cat (rank_weights ⊙ A_cat drop(x))``; ``rank_weights`` broadcasts to ``u``."""
        a = self.lora_A
        x = x.to(a.dtype)
        p = self.dropout_p if self.training else 0.0
        if p > 0 and self.dropout_mode == "per_expert":
            n, k = self.num_experts, self.rank // self.num_experts
            xs = dropout(x.unsqueeze(-2).expand(*x.shape[:-1], n, x.shape[-1]), p)
            u = torch.einsum("...nd,nkd->...nk", xs, a.view(n, k, -1)).flatten(-2)
        else:
            u = F.linear(dropout(x, p), a)  # (..., r); p = 0: x itself
        u = u * (rank_weights.to(u.dtype) * self.scaling)  # s applied at rank r, not d_out
        return F.linear(u, self.lora_B)  # (..., d_out)

    # ---- per-task recovery (Eq. 8) -------------------------------------------------
    @torch.no_grad()
    def delta_weight(self, task_id: int) -> torch.Tensor:
        """``ΔW_j = s · B_cat diag(expand(ω_j)) A_cat`` in fp32, ``(d_out, d_in)``."""
        omega = self.weight_source.task_weights(self, task_id).float().to(self.lora_B.device)
        scale = omega.repeat_interleave(self.rank // self.num_experts)  # (r,)
        return (self.lora_B.float() * scale) @ self.lora_A.float() * self.scaling

    @torch.no_grad()
    def merge(self, task_id: int) -> None:
        """Fold task ``task_id``'s update into the base weight; the adapter path turns off."""
        if not getattr(self.weight_source, "mergeable", False):
            raise RuntimeError("this layer's expert weights depend on the input; it cannot merge")
        if self.quantized:
            raise RuntimeError(f"this layer cannot merge: {NOT_MERGEABLE_QUANTIZED}")
        if self.merged_task is not None:
            self.unmerge()
        weight = self.base_layer.weight
        # kept in host memory: on a GPU the merged model is the only copy there
        self._original_weight = weight.detach().to("cpu", copy=True)
        delta = self.delta_weight(task_id)
        if self.fan_in_fan_out:
            delta = delta.T  # Conv1D: (d_in, d_out)
        merged = weight.float() + delta.to(weight.device)
        weight.copy_(merged.to(weight.dtype))  # cast once
        self.merged_task = int(task_id)
        self.forward = self.base_layer.forward  # plain base compute while merged

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the kept (host-memory) copy of the base weight exactly (no subtraction)."""
        if self.merged_task is None:
            return
        self.base_layer.weight.copy_(self._original_weight)
        self._original_weight = None
        self.merged_task = None
        del self.forward

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, num_experts={self.num_experts}, "
            f"rank={self.rank}, scaling={self.scaling:g}, dropout={self.dropout_p}"
            f"({self.dropout_mode}), batch_axis={self.batch_axis}"
        )


def validate_layer_args(
    *,
    num_experts: int,
    rank: int,
    dropout: float,
    expert_init: str,
    dropout_mode: str,
    scaling_rank: str,
    batch_axis: int,
) -> None:
    """Raise ``ValueError`` with the fix for invalid layer settings."""
    if num_experts < 1:
        raise ValueError(f"num_experts={num_experts}; use at least 1 expert")
    if rank < 1 or rank % num_experts:
        raise ValueError(
            f"rank={rank} is not divisible by num_experts={num_experts}; "
            f"use a multiple of {num_experts}"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout={dropout}; use a probability in [0, 1)")
    for name, value, allowed in (
        ("expert_init", expert_init, EXPERT_INITS),
        ("dropout_mode", dropout_mode, DROPOUT_MODES),
        ("scaling_rank", scaling_rank, SCALING_RANKS),
    ):
        if value not in allowed:
            raise ValueError(f"{name}={value!r}; use one of {', '.join(allowed)}")
    if batch_axis not in (0, 1):
        raise ValueError(f"batch_axis={batch_axis}; use 0 (batch-first) or 1 (sequence-first)")
