"""MOELoRA layer and gate against straightforward references written here (Eqs. 4-7, §9)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from moelora.method.gate import MoELoRARouter, gate_probabilities
from moelora.method.layer import MoELoRALinear

D_IN, D_OUT, N, R, ALPHA = 6, 5, 4, 8, 16.0
TASKS = ["a", "b", "c"]


def _router(
    gate: str = "dense", *, num_layers: int = 1, top_k: int = 2, sparse_mode: str = "mask_neg_inf"
) -> MoELoRARouter:
    torch.manual_seed(0)
    return MoELoRARouter(
        gate=gate,
        num_experts=N,
        rank=R,
        task_ids=[0, 1, 2],
        task_names=TASKS,
        num_embeddings=3,
        task_embed_dim=7,
        top_k=top_k,
        sparse_mode=sparse_mode,
        num_layers=num_layers,
    )


def _layer(router, *, index: int = 0, batch_axis: int = 0, **kw) -> MoELoRALinear:
    torch.manual_seed(10 + index)
    layer = MoELoRALinear(
        nn.Linear(D_IN, D_OUT),
        num_experts=N,
        rank=R,
        alpha=ALPHA,
        dropout=kw.pop("dropout", 0.0),
        batch_axis=batch_axis,
        weight_source=router,
        **kw,
    )
    layer.layer_index = index
    with torch.no_grad():
        layer.lora_B.normal_()  # B = 0 at init; make the adapter path visible
    return layer


def _reference_omega(
    logits: torch.Tensor, gate: str, top_k: int = 2, sparse_mode: str = "mask_neg_inf"
) -> torch.Tensor:
    """Eqs. 5-7 by hand, one row at a time (Top-K ties: lower index first)."""
    rows = []
    for row in logits.tolist():
        if gate == "sparse":
            order = sorted(range(len(row)), key=lambda i: (-row[i], i))[:top_k]
            fill = -math.inf if sparse_mode == "mask_neg_inf" else 0.0
            row = [v if i in order else fill for i, v in enumerate(row)]
        z = [math.exp(v) if v != -math.inf else 0.0 for v in row]
        rows.append([v / sum(z) for v in z])
    return torch.tensor(rows, dtype=torch.float32)


def _topk_mask(logits: torch.Tensor, k: int) -> torch.Tensor:
    """The K largest entries per row, ties to the lower index, by a Python sort."""
    keep = torch.zeros_like(logits, dtype=torch.bool)
    for b, row in enumerate(logits.tolist()):
        for i in sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]:
            keep[b, i] = True
    return keep


def _reference_forward(layer, x, omega):
    """Eq. 4 literally: W0 x + b + s Σ_i ω_i B_i A_i x, looping over examples and experts."""
    k = R // N
    s = ALPHA / R
    out = []
    for b in range(x.shape[0]):
        h = layer.base_layer(x[b])
        for i in range(N):
            a_i = layer.lora_A[i * k : (i + 1) * k]  # (r/N, d_in)
            b_i = layer.lora_B[:, i * k : (i + 1) * k]  # (d_out, r/N)
            h = h + s * omega[b, i] * (x[b] @ a_i.T @ b_i.T)
        out.append(h)
    return torch.stack(out)


@pytest.mark.parametrize(
    "gate,sparse_mode",
    [
        ("dense", "mask_neg_inf"),
        ("sparse", "mask_neg_inf"),
        ("sparse", "literal_zero"),
        ("uniform", "mask_neg_inf"),
        ("per_layer", "mask_neg_inf"),
    ],
)
def test_fused_forward_and_grads_match_per_expert_loop(gate, sparse_mode):
    router = _router(gate, num_layers=2, sparse_mode=sparse_mode)
    layers = [_layer(router, index=i) for i in range(2)]
    x = torch.randn(3, 4, D_IN)
    task_ids = torch.tensor([2, 0, 2])

    router.set_task_ids(task_ids)
    fused = sum(layer(x) for layer in layers).square().sum()
    params = [p for layer in layers for p in (layer.lora_A, layer.lora_B)] + list(
        router.parameters()
    )
    g_fused = torch.autograd.grad(fused, params)
    router.set_task_ids(None)

    ref = 0
    for i, layer in enumerate(layers):
        if gate == "uniform":
            omega = torch.full((3, N), 1.0 / N)
        else:
            g = router.gates[i] if gate == "per_layer" else router.gate
            logits = g.task_embedding.weight[task_ids] @ g.w_t.weight.T  # (3, N)
            if gate == "sparse":
                keep = _topk_mask(logits.detach(), 2)
                fill = -math.inf if sparse_mode == "mask_neg_inf" else 0.0
                omega = torch.softmax(logits.masked_fill(~keep, fill), dim=-1)
                expected_nonzero = 2 if sparse_mode == "mask_neg_inf" else N  # Eq. 7: dense
                assert (omega > 0).sum(dim=1).tolist() == [expected_nonzero] * 3
            else:
                omega = torch.softmax(logits, dim=-1)
        ref = ref + _reference_forward(layer, x, omega)
    ref = ref.square().sum()
    g_ref = torch.autograd.grad(ref, params, allow_unused=True)
    torch.testing.assert_close(fused, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(g_fused, g_ref):
        torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b, rtol=1e-4, atol=1e-5)


def test_gate_probabilities_by_hand():
    logits = torch.tensor([[1.0, 3.0, 3.0, -2.0], [-1.0, -2.0, -3.0, -4.0]])
    dense = gate_probabilities(logits)
    torch.testing.assert_close(dense, _reference_omega(logits, "dense"))
    torch.testing.assert_close(dense.sum(-1), torch.ones(2))
    sparse = gate_probabilities(logits, top_k=2)
    # ties at 3.0: experts 1 and 2 kept; row 2 keeps experts 0 and 1 (the largest logits)
    assert (sparse > 0).tolist() == [[False, True, True, False], [True, True, False, False]]
    torch.testing.assert_close(sparse[1, :2], torch.softmax(torch.tensor([-1.0, -2.0]), 0))
    ties = gate_probabilities(torch.zeros(1, 4), top_k=2)
    assert ties.tolist() == [[0.5, 0.5, 0.0, 0.0]]  # lower indices win ties
    literal = gate_probabilities(logits, top_k=2, sparse_mode="literal_zero")
    # Eq. 7 as printed: dropped logits become 0, so with negative kept logits they dominate
    z = torch.tensor([math.exp(-1), math.exp(-2), 1.0, 1.0])
    torch.testing.assert_close(literal[1], z / z.sum())
    assert literal[1, 2] > literal[1, 0]


def test_mixed_batch_equals_per_task_batches():
    router = _router()
    layer = _layer(router)
    x = torch.randn(4, 3, D_IN)
    ids = torch.tensor([1, 0, 2, 1])
    router.set_task_ids(ids)
    mixed = layer(x)
    for b in range(4):
        router.set_task_ids(ids[b : b + 1])
        torch.testing.assert_close(layer(x[b : b + 1]), mixed[b : b + 1], rtol=0, atol=1e-6)


def test_sequence_first_layer_matches_batch_first():
    router = _router()
    first = _layer(router, batch_axis=0)
    seq_first = _layer(router, batch_axis=1)
    seq_first.load_state_dict(first.state_dict())
    x = torch.randn(3, 5, D_IN)  # (batch, seq, d)
    router.set_task_ids(torch.tensor([0, 2, 1]))
    out = first(x)
    out_sf = seq_first(x.transpose(0, 1))  # (seq, batch, d)
    torch.testing.assert_close(out_sf.transpose(0, 1), out)
    with pytest.raises(ValueError, match="batch_axis=0"):  # the wrong layout is refused
        first(x.transpose(0, 1))


def test_batch_expansion_repeats_rows_in_place():
    router = _router()
    layer = _layer(router)
    x = torch.randn(4, 2, D_IN)
    router.set_task_ids(torch.tensor([0, 2]))
    expanded = layer(x)  # rows 0,1 → task 0; rows 2,3 → task 2
    router.set_task_ids(torch.tensor([0, 0, 2, 2]))
    torch.testing.assert_close(expanded, layer(x))
    router.set_task_ids(torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="one task id per example"):
        layer(x)


def test_errors_are_explicit():
    router = _router()
    layer = _layer(router)
    with pytest.raises(RuntimeError, match="task_context"):
        layer(torch.randn(2, D_IN))
    with pytest.raises(
        ValueError, match=r"unknown task id\(s\) \[5\]; valid ids are 0=a, 1=b, 2=c"
    ):
        router.set_task_ids(torch.tensor([0, 5]))
    with pytest.raises(
        ValueError, match="rank=6 is not divisible by num_experts=4; use a multiple of 4"
    ):
        MoELoRALinear(nn.Linear(2, 2), num_experts=4, rank=6, alpha=1.0)
    with pytest.raises(ValueError, match="gate='topk'"):
        MoELoRARouter(
            gate="topk", num_experts=2, rank=2, task_ids=[0], task_names=["a"], num_embeddings=1
        )
    uniform = _layer(_router("uniform"))
    assert uniform(torch.randn(2, D_IN)).shape == (2, D_OUT)  # w/o gate needs no task id


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_layer_merge_matches_unmerged_and_unmerge_is_exact(dtype):
    router = _router()
    layer = _layer(router)
    layer.base_layer.to(dtype)
    original = layer.base_layer.weight.detach().clone()
    x = torch.randn(2, 3, D_IN, dtype=dtype)
    for t in range(3):
        router.set_task_ids(torch.full((2,), t))
        ref = layer(x)
        layer.merge(task_id=t)
        assert layer.merged_task == t
        out = layer(x)
        tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(out, ref, **tol)
        layer.unmerge()
        assert torch.equal(layer.base_layer.weight, original)


def test_delta_weight_is_b_diag_omega_a():
    router = _router()
    layer = _layer(router)
    omega = router.task_weights(layer, 1)
    manual = sum(
        omega[i] * layer.lora_B[:, 2 * i : 2 * i + 2] @ layer.lora_A[2 * i : 2 * i + 2]
        for i in range(N)
    ) * (ALPHA / R)
    torch.testing.assert_close(layer.delta_weight(1), manual)


def test_per_expert_dropout_draws_independent_masks():
    """Two identical experts with B = [1, -1]: a shared mask cancels exactly, separate masks do not."""
    router = MoELoRARouter(
        gate="uniform", num_experts=2, rank=2, task_ids=[0], task_names=["a"], num_embeddings=1
    )
    outs = {}
    for mode in ("shared", "per_expert"):
        layer = MoELoRALinear(
            nn.Linear(16, 1),
            num_experts=2,
            rank=2,
            alpha=2.0,
            dropout=0.5,
            dropout_mode=mode,
            weight_source=router,
        )
        with torch.no_grad():
            layer.lora_A.copy_(torch.ones(2, 16))
            layer.lora_B.copy_(torch.tensor([[1.0, -1.0]]))
        layer.train()
        torch.manual_seed(0)
        x = torch.ones(8, 16)
        outs[mode] = layer(x) - layer.base_layer(x)
        layer.eval()
        assert torch.equal(layer(x), layer.base_layer(x))  # eval: no dropout, cancels
    assert torch.equal(outs["shared"], torch.zeros(8, 1))
    assert outs["per_expert"].abs().sum() > 0


def test_init_and_scaling_options():
    lin = nn.Linear(64, 8)
    normal = MoELoRALinear(lin, num_experts=8, rank=16, alpha=32)
    assert normal.scaling == 2.0 and torch.count_nonzero(normal.lora_B) == 0
    assert 0.007 < normal.lora_A.std().item() < 0.013
    kaiming = MoELoRALinear(
        nn.Linear(64, 8),
        num_experts=8,
        rank=16,
        alpha=32,
        expert_init="kaiming",
        scaling_rank="expert",
    )
    assert kaiming.scaling == 16.0  # α / (r/N) = 32 / 2
    assert kaiming.lora_A.abs().max() <= 1 / math.sqrt(64) + 1e-7  # kaiming_uniform(a=√5)
    assert kaiming.lora_A.abs().max() > 0.05
