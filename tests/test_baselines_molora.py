"""MoLoRA (docs/methods.md §5.3): token router, fused forward vs a per-expert loop, no merging."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from baselines.molora import TokenRouter, build, chatglm6b_extra_parameters, molora_layers
from tests.conftest import TINY_LLAMA

ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _tiny() -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=61, **TINY_LLAMA)).eval()
    model.requires_grad_(False)
    return model


def _layer(top_k=None, scaling_rank="total", d_in=12, d_out=10):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(d_in, d_out))
    build(
        model,
        tasks=["a"],
        target_modules=["0"],
        num_experts=4,
        rank=8,
        alpha=16,
        dropout=0.0,
        top_k=top_k,
        scaling_rank=scaling_rank,
    )
    layer = model[0]
    with torch.no_grad():  # B = 0 at init; make every expert matter
        layer.lora_B.normal_()
        layer.router.weight.normal_()
    return layer.eval()


def test_router_probabilities_sum_to_one_per_token_in_fp32():
    router = TokenRouter(16, 8)
    x = torch.randn(3, 5, 16, dtype=torch.bfloat16)
    p = router.probs(x)
    assert p.shape == (3, 5, 8) and p.dtype == torch.float32
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(-1), torch.ones(3, 5), rtol=0, atol=1e-6)
    # softmax over experts, not over batch or sequence: each token on its own
    torch.testing.assert_close(router.probs(x[1:2, 2:3]), p[1:2, 2:3])


def _loop_reference(layer, x, k=None):
    """h = W0 x + b + s Σ_i p_i(x) B_i A_i x with p = softmax(R x), written out per expert and
    per token; with k, all but the k largest p_i of the token are zeroed (no renormalisation)."""
    n, r = layer.num_experts, layer.rank
    e = r // n
    W = layer.router.weight.detach().double()
    A, B = layer.lora_A.detach().double(), layer.lora_B.detach().double()
    flat = x.double().reshape(-1, x.shape[-1])
    out = layer.base_layer(x).double().reshape(-1, B.shape[0]).clone()
    for t in range(flat.shape[0]):
        logits = W @ flat[t]
        p = torch.exp(logits - logits.max())
        p = p / p.sum()
        if k is not None:
            ranked = sorted(range(n), key=lambda i: -float(p[i]))
            p = torch.tensor(
                [float(p[i]) if i in ranked[:k] else 0.0 for i in range(n)], dtype=torch.float64
            )
        for i in range(n):
            out[t] += (
                layer.scaling
                * p[i]
                * (B[:, i * e : (i + 1) * e] @ (A[i * e : (i + 1) * e] @ flat[t]))
            )
    return out.reshape(*x.shape[:-1], -1)


@pytest.mark.parametrize("top_k", [None, 2])
def test_fused_forward_equals_per_expert_loop(top_k):
    layer = _layer(top_k=top_k)
    x = torch.randn(2, 3, 12)
    with torch.no_grad():
        fused = layer(x)
    torch.testing.assert_close(
        fused.double(), _loop_reference(layer, x, top_k), rtol=1e-5, atol=1e-5
    )


def test_top_k_keeps_k_experts_without_renormalising():
    router = TokenRouter(6, 8, top_k=2)
    dense = TokenRouter(6, 8)
    dense.weight = router.weight
    x = torch.randn(4, 6)
    p, full = router.probs(x), dense.probs(x)
    assert ((p > 0).sum(-1) == 2).all()
    assert (p.sum(-1) < 1).all()
    top2 = full.topk(2, dim=-1).values.sum(-1)
    torch.testing.assert_close(p.sum(-1), top2)


def test_scaling_total_and_expert_rank():
    assert _layer(scaling_rank="total").scaling == 16 / 8
    assert _layer(scaling_rank="expert").scaling == 16 / 2


def test_router_sees_the_input_before_dropout():
    """The expert path uses drop(x); the router must see x (same p in train and eval)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 10))
    build(model, tasks=["a"], target_modules=["0"], num_experts=4, rank=8, alpha=16, dropout=0.9)
    layer, seen = model[0], []
    original = layer.router.rank_weights

    def spy(lay, x):
        seen.append(x.clone())
        return original(lay, x)

    layer.router.rank_weights = spy
    x = torch.randn(3, 12)
    layer.train()(x)
    torch.testing.assert_close(seen[0], x, rtol=0, atol=0)


def test_build_on_tiny_llama_counts_and_cannot_merge():
    model = build(_tiny(), tasks=["a", "b"], target_modules=ALL)
    layers = molora_layers(model)
    assert len(layers) == 2 * 7
    # (d_in, d_out) of the tiny Llama's projections (hidden 32, ffn 64, 4 heads, 2 kv heads)
    shapes = [(32, 32), (32, 16), (32, 16), (32, 32), (32, 64), (32, 64), (64, 32)]
    per_block = sum(16 * (i + o) + 8 * i for i, o in shapes)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 2 * per_block
    from moelora.method.merge import supports_merge

    assert not supports_merge(model)
    with pytest.raises(RuntimeError, match="cannot merge"):
        layers[0].merge(task_id=0)


def test_equals_base_at_init_and_no_task_id_needed():
    ids = torch.randint(3, 61, (2, 7))
    ref = _tiny()(input_ids=ids).logits
    model = build(_tiny(), tasks=["a"], target_modules=ALL).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, ref, rtol=1e-5, atol=1e-6)


def test_chatglm6b_router_parameter_count():
    """§5.3: 28 × (3·4096 + 16384) × 8 router parameters on ChatGLM-6B."""
    assert chatglm6b_extra_parameters() == 6_422_528
