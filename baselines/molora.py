"""MoLoRA, docs/methods.md §5.3 (Zadouri et al. 2023): token-routed mixture of LoRA experts.

Every adapted linear gets N experts of rank r/N (total rank r, stored fused as
``A_cat (r×d_in)``, ``B_cat (d_out×r)``) and its own router ``R ∈ R^{N×d_in}`` (no bias).
Per token, on the layer input before dropout, in fp32: ``p(x) = softmax(R x)`` over the
experts. Output (fused form of Σ_i p_i(x) B_i A_i drop(x), §9(a)):

    h = W0 x + b + s · B_cat((A_cat drop(x)) ⊙ expand(p(x)))

with ``expand`` repeating each p_i r/N times. Soft merging (all experts) by default;
``top_k`` zeroes all but the k largest probabilities (no renormalisation; ties by lower
index). ``s = α / r`` (``scaling_rank: total``) or ``α / (r/N)`` (``expert``). Experts as
MOELoRA: ``A ~ N(0, 0.01)``, ``B = 0`` (so the model equals the base at init); router
``default_linear`` (PyTorch Linear init) or ``normal_0.02``. No task id is used anywhere.

The layer is MOELoRA's fused :class:`moelora.method.layer.MoELoRALinear` with a per-layer
:class:`TokenRouter` as its (non-mergeable) weight source. The weights vary per token, so
the update cannot be folded into ``W0``: ``moelora.method.merge.supports_merge`` is False, the
layer's ``merge`` refuses, and inference always runs the adapter path
(``infer: merged_per_task`` runs unmerged and says so).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from moelora.harness.context import PipelineOutput, RunContext
from moelora.method.layer import MoELoRALinear
from moelora.method.model import find_targets

ROUTER_INITS = ("default_linear", "normal_0.02")


class TokenRouter(nn.Module):
    """Per-token expert weights ``p(x) = softmax(R x)`` for one layer (an
    :class:`moelora.method.layer.ExpertWeightSource`; not mergeable).

    Args:
        in_features: ``d_in`` of the layer.
        num_experts: N.
        top_k: keep the k largest probabilities per token, zero the rest, no renormalisation
            (None: soft merging of all experts).
        router_init: ``default_linear`` (PyTorch Linear init) | ``normal_0.02``.
    """

    mergeable = False

    def __init__(
        self,
        in_features: int,
        num_experts: int,
        *,
        top_k: int | None = None,
        router_init: str = "default_linear",
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        if top_k is not None and not 1 <= top_k <= num_experts:
            raise ValueError(f"molora.top_k={top_k}; use null or 1..{num_experts}")
        if router_init not in ROUTER_INITS:
            raise ValueError(f"molora.router_init={router_init!r}; use one of {ROUTER_INITS}")
        self.num_experts, self.top_k = num_experts, top_k
        self.weight = nn.Parameter(torch.empty(num_experts, in_features, device=device))
        if router_init == "normal_0.02":
            nn.init.normal_(self.weight, mean=0.0, std=0.02)
        else:  # what nn.Linear(d_in, N, bias=False) does
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """``p(x)``, shape ``x.shape[:-1] + (N,)``, fp32, softmax over the expert axis."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            p = torch.softmax(F.linear(x.float(), self.weight.float()), dim=-1)
        if self.top_k is not None and self.top_k < self.num_experts:
            order = torch.sort(p, dim=-1, descending=True, stable=True).indices  # ties: lower index
            keep = torch.zeros_like(p, dtype=torch.bool).scatter_(
                -1, order[..., : self.top_k], True
            )
            p = p * keep
        return p

    def rank_weights(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``expand(p(x))``: each p_i repeated r/N times, shape ``x.shape[:-1] + (r,)``."""
        return self.probs(x).repeat_interleave(layer.rank // self.num_experts, dim=-1)

    def task_weights(self, layer: nn.Module | None, task_id: int) -> torch.Tensor:
        raise RuntimeError(
            "MoLoRA's expert weights depend on every token, not on the task: "
            "there is no per-task weight to merge; use infer: unmerged"
        )


def build(
    model: nn.Module,
    *,
    tasks: Sequence[str],
    target_modules: str | Sequence[str],
    num_experts: int = 8,
    rank: int = 16,
    alpha: float = 32,
    dropout: float = 0.1,
    top_k: int | None = None,
    router_init: str = "default_linear",
    scaling_rank: str = "total",
) -> nn.Module:
    """Replace every linear layer (``nn.Linear`` or ``Conv1D``) whose name ends with one of
    ``target_modules`` (every one but the output head for ``all-linear``, see
    moelora.method.model.find_targets) by a fused :class:`moelora.method.layer.MoELoRALinear` whose expert
    weights come from its own :class:`TokenRouter`; freeze everything else. ``tasks`` is unused
    (no task id).

    Returns:
        ``model`` itself, adapted in place.
    """
    targets = find_targets(model, target_modules)
    model.requires_grad_(False)
    for name, base in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layer = MoELoRALinear(
            base,
            num_experts=num_experts,
            rank=rank,
            alpha=alpha,
            dropout=dropout,
            expert_init="normal_0.01",
            dropout_mode="shared",
            scaling_rank=scaling_rank,
        )
        router = TokenRouter(
            layer.in_features,
            num_experts,
            top_k=top_k,
            router_init=router_init,
            device=base.weight.device,
        )
        layer.add_module("router", router)  # registered (trained, saved) with its layer
        layer.set_weight_source(router)
        setattr(parent, child, layer)
    return model


def molora_layers(model: nn.Module) -> list[MoELoRALinear]:
    return [
        m
        for m in model.modules()
        if isinstance(m, MoELoRALinear) and isinstance(getattr(m, "router", None), TokenRouter)
    ]


def chatglm6b_extra_parameters(
    num_experts: int = 8, blocks: int = 28, hidden: int = 4096, ffn: int = 16384
) -> int:
    """Router parameters on ChatGLM-6B (§5.3): blocks × Σ_l d_in^l × N."""
    d_ins = [hidden, hidden, hidden, ffn]  # query_key_value, dense, dense_h_to_4h, dense_4h_to_h
    return blocks * sum(d_ins) * num_experts


def pipeline(ctx: RunContext) -> PipelineOutput:
    """The joint multi-task pipeline (§1.3), always generating unmerged: MoLoRA's update
    depends on every token, so there is no per-task weight to merge (§5.3)."""
    requested = ctx.cfg.method.get("infer", "unmerged")
    if requested != "unmerged":
        print(
            f"[molora] infer={requested} requested, but MoLoRA cannot be merged (per-token "
            "router weights); generating unmerged"
        )
    model, tokenizer = ctx.load_base()
    model = ctx.build_adapter(model)
    encoder = ctx.encoder(tokenizer)
    trained = ctx.train(model, encoder, ctx.splits["train"])
    ctx.save_adapter(model, ctx.run_dir / "adapter")
    generation = ctx.generate(model, encoder, ctx.splits["test"], merge=False)
    layers = molora_layers(model)
    extra = {
        "molora": {
            "infer": "unmerged",
            "requested_infer": requested,
            "mergeable": False,
            "num_layers": len(layers),
            "router_parameters": sum(m.router.weight.numel() for m in layers),
            "expert_parameters": sum(m.lora_A.numel() + m.lora_B.numel() for m in layers),
            "scaling": layers[0].scaling if layers else math.nan,
        }
    }
    return PipelineOutput(
        predictions=generation.predictions,
        model=model,
        train=trained,
        generation=generation,
        extra=extra,
    )
