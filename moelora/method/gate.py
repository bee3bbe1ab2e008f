"""The task-motivated gate of MOELoRA (Eqs. 5-7) and the router that shares it.

One :class:`TaskGate` maps a task id to expert weights: task embedding ``e_j`` (row j of
``E``, ``T×d_T``), logits ``W_T e_j`` (``W_T``: ``N×d_T``, no bias), softmax over the ``N``
experts, always in fp32. :class:`MoELoRARouter` is the model-level holder: it implements
the :class:`moelora.method.gate.TaskRouted` protocol, so ``task_context(model, task_ids)``
hands it the batch's task ids; it then evaluates the gate ONCE (shape ``(batch, N)``,
with autograd in training) and every MOELoRA layer reads the result. ``generate()`` thus
evaluates the gate once per call, not once per layer per decoding step.

Gate variants (``gate=``, docs/methods.md §6-§7, §10 rows 1 and 7):

* ``dense``: ``ω_j = softmax(W_T e_j)`` (MOELoRA (D), default).
* ``sparse``: keep the ``top_k`` largest logits (ties: lower expert index first);
  ``sparse_mode="mask_neg_inf"`` sets the others to −∞ (exactly ``top_k`` non-zero weights),
  ``"literal_zero"`` sets them to 0 as Eq. 7 is printed (dense in effect).
* ``uniform``: ``ω = 1/N`` for every task; no ``E``, no ``W_T``, no task id needed ("w/o gate").
* ``per_layer``: one ``(E^l, W_T^l)`` per adapted layer (MOELoRA(M), "w multiple gate").

Routing: How per-example task ids reach task-conditioned modules.

The shared trainer and the evaluator never know which method they run. They wrap every
forward (and the backward that follows it) and every ``generate()`` call in
``task_context(model, task_ids)``. Every submodule that implements the
:class:`TaskRouted` protocol (a ``set_task_ids`` method) receives the batch's task ids on
entry and ``None`` on exit. For methods without task conditioning (LoRA, P-Tuning,
MoLoRA) the context does nothing.

The backward pass must run inside the context: non-reentrant gradient checkpointing
recomputes the forward during backward, and the recomputation must see the same routing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

GATES = ("dense", "sparse", "uniform", "per_layer")
SPARSE_MODES = ("mask_neg_inf", "literal_zero")


def gate_probabilities(
    logits: torch.Tensor, *, top_k: int | None = None, sparse_mode: str = "mask_neg_inf"
) -> torch.Tensor:
    """Softmax over the expert axis, optionally after Top-K selection (Eqs. 5-7).

    Args:
        logits: ``(..., N)`` gate logits ``W_T e_j``.
        top_k: ``None`` for the dense gate; else the ``K`` of ``Top(·, K)``.
        sparse_mode: ``mask_neg_inf`` (non-top-K logits → −∞) or ``literal_zero`` (→ 0).

    Returns:
        ``(..., N)`` fp32 weights summing to 1 over the last axis.
    """
    logits = logits.float()
    if top_k is None:
        return torch.softmax(logits, dim=-1)
    # A stable descending sort keeps equal logits in index order: ties go to the lower index.
    order = torch.sort(logits.detach(), dim=-1, descending=True, stable=True).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order[..., :top_k], True)
    fill = float("-inf") if sparse_mode == "mask_neg_inf" else 0.0
    return torch.softmax(logits.masked_fill(~keep, fill), dim=-1)


class TaskGate(nn.Module):
    """Task embedding → linear → softmax over experts (Eq. 5; Eqs. 6-7 with ``top_k``).

    Args:
        num_embeddings: rows of ``E``: ``T`` for dense ids 0..T-1, 17 for the authors' 1..16
            ids (``task_num`` in MOELoRA-peft).
        num_experts: ``N`` (``expert_num`` in MOELoRA-peft).
        task_embed_dim: ``d_T`` (``task_embedding_dim``), 64 in the paper.
        top_k: ``None`` (dense) or ``K`` for the sparse gate.
        sparse_mode: see :func:`gate_probabilities`.
    """

    def __init__(
        self,
        *,
        num_embeddings: int,
        num_experts: int,
        task_embed_dim: int = 64,
        top_k: int | None = None,
        sparse_mode: str = "mask_neg_inf",
    ) -> None:
        super().__init__()
        self.task_embedding = nn.Embedding(num_embeddings, task_embed_dim, dtype=torch.float32)
        self.w_t = nn.Linear(task_embed_dim, num_experts, bias=False, dtype=torch.float32)
        self.top_k = top_k
        self.sparse_mode = sparse_mode

    def forward(self, task_ids: torch.Tensor) -> torch.Tensor:
        """``(batch,)`` long task ids → ``(batch, N)`` fp32 expert weights ``ω``."""
        device = self.w_t.weight.device
        with torch.autocast(device_type=device.type, enabled=False):
            e = self.task_embedding(task_ids.to(device))  # (batch, d_T)
            logits = F.linear(e.float(), self.w_t.weight.float())  # (batch, N)
            return gate_probabilities(logits, top_k=self.top_k, sparse_mode=self.sparse_mode)


class MoELoRARouter(nn.Module):
    """Holds the gate(s) and hands the current batch's expert weights to every layer.

    Implements ``set_task_ids`` (moelora.method.gate.TaskRouted). Layers ask
    :meth:`rank_weights` for the per-example weights expanded to the rank axis
    (``expand(ω)``, ``(batch, r)``), and :meth:`task_weights` for one task's ``ω`` (merge,
    export, Fig. 6).

    Args:
        gate: one of ``dense``, ``sparse``, ``uniform``, ``per_layer``.
        num_experts: ``N``.
        rank: total rank ``r`` (a multiple of ``N``).
        task_ids: valid ids, in task order (the ordered ``tasks`` list).
        task_names: the task names, same order (for error messages and introspection).
        num_embeddings: rows of each task-embedding table.
        task_embed_dim: ``d_T``.
        top_k, sparse_mode: sparse-gate settings (``gate="sparse"`` only).
        num_layers: number of adapted layers (``gate="per_layer"`` only).
    """

    mergeable = True  # weights depend on the task only: Eq. 8 applies

    def __init__(
        self,
        *,
        gate: str,
        num_experts: int,
        rank: int,
        task_ids: Sequence[int],
        task_names: Sequence[str],
        num_embeddings: int,
        task_embed_dim: int = 64,
        top_k: int = 2,
        sparse_mode: str = "mask_neg_inf",
        num_layers: int = 0,
    ) -> None:
        super().__init__()
        if gate not in GATES:
            raise ValueError(f"gate={gate!r}; use one of {', '.join(GATES)}")
        if sparse_mode not in SPARSE_MODES:
            raise ValueError(f"sparse_mode={sparse_mode!r}; use one of {', '.join(SPARSE_MODES)}")
        if gate == "sparse" and not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k={top_k} must be in 1..num_experts={num_experts}")
        if bad := [i for i in task_ids if not 0 <= i < num_embeddings]:
            raise ValueError(f"task ids {bad} do not fit a table of {num_embeddings} rows")
        self.gate_type = gate
        self.num_experts = num_experts
        self.rank = rank
        self.task_names = list(task_names)
        self.valid_task_ids = [int(i) for i in task_ids]
        self.register_buffer(
            "_valid", torch.tensor(self.valid_task_ids, dtype=torch.long), persistent=False
        )
        kw = dict(
            num_embeddings=num_embeddings, num_experts=num_experts, task_embed_dim=task_embed_dim
        )
        if gate in ("dense", "sparse"):
            self.gate = TaskGate(
                **kw, top_k=top_k if gate == "sparse" else None, sparse_mode=sparse_mode
            )
        elif gate == "per_layer":
            self.gates = nn.ModuleList(TaskGate(**kw) for _ in range(num_layers))
        self._weights: torch.Tensor | None = None  # (batch, N) or (L, batch, N), fp32
        self._cache: dict[tuple, torch.Tensor] = {}

    # ---- routing ---------------------------------------------------------------------
    def check_task_ids(self, task_ids: torch.Tensor) -> torch.Tensor:
        """Validate ``task_ids`` (``(batch,)`` integers); raise naming the valid ids."""
        task_ids = torch.as_tensor(task_ids).reshape(-1).long()
        ok = torch.isin(task_ids, self._valid.to(task_ids.device))
        if not bool(ok.all()):
            bad = sorted({int(i) for i in task_ids[~ok].tolist()})
            valid = ", ".join(f"{i}={n}" for i, n in zip(self.valid_task_ids, self.task_names))
            raise ValueError(f"unknown task id(s) {bad}; valid ids are {valid}")
        return task_ids

    def set_task_ids(self, task_ids: torch.Tensor | None) -> None:
        """Evaluate the gate once for this batch (``None`` clears it), Eq. 5."""
        self._cache = {}
        if task_ids is None or self.gate_type == "uniform":
            self._weights = None
            return
        task_ids = self.check_task_ids(task_ids)
        if self.gate_type == "per_layer":
            self._weights = torch.stack([g(task_ids) for g in self.gates])  # (L, batch, N)
        else:
            self._weights = self.gate(task_ids)  # (batch, N)

    def routing_state(self) -> tuple[torch.Tensor | None, dict[tuple, torch.Tensor]]:
        """The current batch's gate output and per-layer cache, to put back later with
        :meth:`restore_routing` (a forward's routing for its recomputation under gradient
        checkpointing; the caller's routing around a nested call)."""
        return self._weights, self._cache  # the dict itself: set_task_ids starts a new one

    def restore_routing(self, state: tuple[torch.Tensor | None, dict[tuple, torch.Tensor]]) -> None:
        """Put back a :meth:`routing_state`: the very same tensors (the gate output and the
        per-layer expanded weights the forward cached), so a recomputation builds the same graph
        and the gradients reach the gate as without checkpointing."""
        self._weights, self._cache = state

    def _uniform(self, batch: int, device: torch.device) -> torch.Tensor:
        return torch.full((batch, self.num_experts), 1.0 / self.num_experts, device=device)

    def rank_weights(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``expand(ω)`` for the examples of ``x``: ``(batch_x, r)`` in ``x``'s batch order.

        ``batch_x`` (``x.shape[layer.batch_axis]``) may be a multiple of the batch the task ids
        were given for (``num_return_sequences``, beams): rows are repeated in place
        (``repeat_interleave``), as ``generate()`` expands its inputs.
        """
        batch_x = x.shape[layer.batch_axis] if x.dim() > 1 else 1
        layer_index = getattr(layer, "layer_index", 0) if self.gate_type == "per_layer" else -1
        # eager: one expansion per batch for all layers; under torch.compile the graph shares
        # it anyway, and a dict keyed by the batch size would specialise the graph on it
        cached = not torch.compiler.is_compiling()
        key = (layer_index, batch_x, x.device)
        if cached and key in self._cache:
            return self._cache[key]
        if self.gate_type == "uniform":
            w = self._uniform(batch_x, x.device)
        else:
            if self._weights is None:
                raise RuntimeError(
                    f"{type(layer).__name__} got no task ids: pass task_ids= (one per example) "
                    "to the forward and generate() of the MoeLoraModel (moelora.get_moelora_model), "
                    "or run them (and the backward) inside "
                    "`with moelora.method.gate.task_context(model, task_ids):`"
                )
            w = self._weights[layer_index] if layer_index >= 0 else self._weights
            if batch_x != w.shape[0]:
                if batch_x % w.shape[0]:
                    raise ValueError(
                        f"the layer sees a batch of {batch_x} but task ids were given for "
                        f"{w.shape[0]} examples; pass one task id per example (batch_axis="
                        f"{layer.batch_axis} for input shape {tuple(x.shape)})"
                    )
                w = w.repeat_interleave(batch_x // w.shape[0], dim=0)
            w = w.to(x.device)
        out = w.repeat_interleave(self.rank // self.num_experts, dim=-1)  # (batch_x, r)
        if cached:
            self._cache[key] = out
        return out

    @torch.no_grad()
    def task_weights(self, layer: nn.Module | None, task_id: int) -> torch.Tensor:
        """``ω_j`` (``(N,)``, fp32) of task id ``task_id`` as seen by ``layer`` (Eq. 8)."""
        ids = self.check_task_ids(torch.tensor([int(task_id)]))
        if self.gate_type == "uniform":
            return self._uniform(1, self._valid.device)[0]
        if self.gate_type == "per_layer":
            if layer is None:
                raise ValueError("per_layer gates need the layer whose weights are asked for")
            return self.gates[layer.layer_index](ids)[0]
        return self.gate(ids)[0]

    @torch.no_grad()
    def weight_table(self) -> torch.Tensor:
        """``ω`` for every task in task order: ``(T, N)``, or ``(L, T, N)`` for per-layer gates."""
        ids = self._valid
        if self.gate_type == "uniform":
            return self._uniform(len(ids), ids.device)
        if self.gate_type == "per_layer":
            return torch.stack([g(ids) for g in self.gates])
        return self.gate(ids)

    def extra_repr(self) -> str:
        return f"gate={self.gate_type}, num_experts={self.num_experts}, tasks={self.task_names}"


# ---- routing ----------------------------------------
@runtime_checkable
class TaskRouted(Protocol):
    def set_task_ids(self, task_ids: torch.Tensor | None) -> None: ...


def routed_modules(model: nn.Module) -> list[nn.Module]:
    """The task-conditioned submodules of ``model`` (in ``modules()`` order)."""
    # duck typing, not isinstance(m, TaskRouted): a runtime Protocol check per module costs
    # about 1 ms per call on a small model, which a merged-latency benchmark would see
    return [m for m in model.modules() if callable(getattr(m, "set_task_ids", None))]


@contextmanager
def task_context(model: nn.Module, task_ids: torch.Tensor | None) -> Iterator[None]:
    """Hand ``task_ids`` (shape ``(batch,)``, long) to every task-routed module of ``model``."""
    modules = routed_modules(model)
    for m in modules:
        m.set_task_ids(task_ids)
    try:
        yield
    finally:
        for m in modules:
            m.set_task_ids(None)
