"""Merged inference (Eq. 8) in place: no second copy of the model on the device, and the
base weights restored bit for bit afterwards (the originals are kept in host memory)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from moelora.method.gate import task_context
from moelora.method.merge import merged_for_task
from moelora.method.model import build, moelora_layers


def _model(dtype: torch.dtype, device: str = "cpu") -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=128,
    )  # fmt: skip
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()
    build(model, tasks=["a", "b"], target_modules="all-linear", num_experts=4, rank=8)
    for _, layer in moelora_layers(model):
        torch.nn.init.normal_(layer.lora_B, std=0.05)  # a non-zero update
    return model.to(device).eval()


def _bits(layers) -> dict[str, torch.Tensor]:
    return {n: layer.base_layer.weight.detach().cpu().clone() for n, layer in layers}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_merge_then_restore_is_bit_exact(dtype):
    model = _model(dtype)
    layers = moelora_layers(model)  # the wrappers leave the model while merged
    before = _bits(layers)
    ids = torch.randint(0, 128, (2, 6))
    with task_context(model, torch.tensor([1, 1])):
        unmerged = model(input_ids=ids).logits.float()
    with merged_for_task(model, 1):
        assert all(m._original_weight.device.type == "cpu" for _, m in layers)
        changed = _bits(layers)
        assert any(not torch.equal(changed[n], before[n]) for n in before)
        merged = model(input_ids=ids).logits.float()
    after = _bits(layers)
    for name, w in before.items():
        assert torch.equal(w.view(torch.uint8), after[name].view(torch.uint8)), name
    if dtype == torch.float32:
        torch.testing.assert_close(merged, unmerged, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_merged_inference_holds_one_copy_on_the_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = _model(torch.bfloat16, "cuda")
    largest = max(4 * m.in_features * m.out_features for _, m in moelora_layers(model))
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    with merged_for_task(model, 0):
        torch.cuda.synchronize()
        assert torch.cuda.memory_allocated() - base < largest
    assert torch.cuda.max_memory_allocated() - base <= 3 * largest  # ΔW in fp32, one at a time
