"""MOELoRA on a tiny HF Llama: build, routing through task_context, merge, generation,
gradient checkpointing, introspection and adapter save/load."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from moelora.engine.adapters import AdapterMismatchError, load_adapter, save_adapter
from moelora.method.gate import TaskGate, task_context
from moelora.method.introspect import count_parameters, expert_weights, expert_weights_per_layer
from moelora.method.layer import MoELoRALinear
from moelora.method.merge import merged_for_task, supports_merge
from moelora.method.model import build, get_router, moelora_layers

TASKS = ["t0", "t1", "t2"]
TARGETS = ["q_proj", "v_proj", "down_proj"]
VOCAB = 64


def _base(hidden: int = 32) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=VOCAB,
    )
    return LlamaForCausalLM(cfg).eval()


def _model(gate: str = "dense", *, randomize_b: bool = True, **kw) -> LlamaForCausalLM:
    model = build(
        _base(),
        tasks=TASKS,
        target_modules=TARGETS,
        num_experts=4,
        rank=8,
        gate=gate,
        dropout=kw.pop("dropout", 0.0),
        **kw,
    )
    if randomize_b:
        torch.manual_seed(1)
        with torch.no_grad():
            for _, layer in moelora_layers(model):
                layer.lora_B.normal_(std=0.5)
    return model.eval()


def _inputs(batch: int = 3, seq: int = 6):
    g = torch.Generator().manual_seed(0)
    return torch.randint(1, VOCAB, (batch, seq), generator=g)


def _logits(model, ids, task_ids):
    with torch.no_grad(), task_context(model, task_ids):
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def test_build_freezes_base_and_equals_base_at_init():
    base = _base()
    reference = copy.deepcopy(base)
    model = build(base, tasks=TASKS, target_modules=TARGETS, num_experts=4, rank=8)
    assert model is base
    trainable = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    expected = sorted(
        [
            f"model.layers.{i}.{m}.lora_{x}"
            for i in range(2)
            for m in ("self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj")
            for x in "AB"
        ]
        + ["moelora_router.gate.task_embedding.weight", "moelora_router.gate.w_t.weight"]
    )
    assert trainable == expected
    ids = _inputs()
    expected_logits = reference(input_ids=ids).logits
    torch.testing.assert_close(
        _logits(model.eval(), ids, torch.tensor([0, 1, 2])), expected_logits, rtol=0, atol=0
    )


def test_parameter_counts_by_gate():
    # q_proj 32→32, v_proj 32→16 (2 kv heads × 8), down_proj 64→32; 2 blocks; r = 8
    adapters = 2 * 8 * ((32 + 32) + (32 + 16) + (64 + 32))
    gate = 3 * 64 + 4 * 64  # E (T×d_T) + W_T (N×d_T)
    for g, extra in (("dense", gate), ("sparse", gate), ("uniform", 0), ("per_layer", 6 * gate)):
        counts = count_parameters(_model(g, randomize_b=False))
        assert counts["trainable"] == adapters + extra, g
    base_total = count_parameters(_base())["total"]
    assert count_parameters(_model("uniform"))["total"] == base_total + adapters


def test_unknown_target_and_task_ids_raise():
    with pytest.raises(
        ValueError,
        match=r"\['query_key_value'\] match no linear layer .*"
        r"'down_proj'.*'q_proj'.*Set method.target_modules",
    ):
        build(_base(), tasks=TASKS, target_modules=["q_proj", "query_key_value"])
    with pytest.raises(ValueError, match="rank=6 is not divisible by num_experts=4"):
        build(_base(), tasks=TASKS, target_modules=TARGETS, num_experts=4, rank=6)
    model = _model()
    with pytest.raises(
        ValueError, match=r"unknown task id\(s\) \[3\]; valid ids are 0=t0, 1=t1, 2=t2"
    ):
        _logits(model, _inputs(), torch.tensor([0, 3, 1]))
    with pytest.raises(RuntimeError, match="task_context"):
        model(input_ids=_inputs())
    with pytest.raises(ValueError, match="already carries MOELoRA"):
        build(model, tasks=TASKS, target_modules=TARGETS, num_experts=4, rank=8)


def test_authors_task_id_scheme_uses_17_rows():
    tasks = ["CHIP-CDN", "KUAKE-QIC"]  # authors' ids 8 and 12
    model = build(
        _base(),
        tasks=tasks,
        target_modules=["q_proj"],
        num_experts=4,
        rank=8,
        task_id_scheme="authors",
    )
    assert get_router(model).gate.task_embedding.weight.shape == (17, 64)
    _logits(model, _inputs(2), torch.tensor([8, 12]))
    with pytest.raises(ValueError, match="valid ids are 8=CHIP-CDN, 12=KUAKE-QIC"):
        _logits(model, _inputs(2), torch.tensor([0, 1]))


@pytest.mark.parametrize("gate", ["dense", "sparse", "per_layer"])
def test_mixed_task_batch_equals_per_task_batches(gate):
    model = _model(gate)
    ids = _inputs(4)
    task_ids = torch.tensor([2, 0, 1, 2])
    mixed = _logits(model, ids, task_ids)
    for b in range(4):
        single = _logits(model, ids[b : b + 1], task_ids[b : b + 1])
        torch.testing.assert_close(single, mixed[b : b + 1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(mixed[0], _logits(model, ids[:1], torch.tensor([0]))[0])


@pytest.mark.parametrize("gate", ["dense", "sparse", "uniform", "per_layer"])
def test_merged_for_task_equals_unmerged_and_restores_base(gate):
    model = _model(gate)
    assert supports_merge(model) and not supports_merge(_base())
    originals = {n: m.base_layer.weight.detach().clone() for n, m in moelora_layers(model)}
    ids = _inputs()
    for t in range(3):
        task_ids = torch.full((3,), t)
        ref = _logits(model, ids, task_ids)
        layers = moelora_layers(model)
        with merged_for_task(model, t):
            assert all(m.merged_task == t for _, m in layers)
            # while merged the model holds the base architecture's modules, nothing more
            assert moelora_layers(model) == []
            assert all(type(model.get_submodule(n)) is type(m) for n, m in _base().named_modules())
            out = _logits(model, ids, task_ids)
        assert [n for n, _ in moelora_layers(model)] == [n for n, _ in layers]
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
        for n, m in moelora_layers(model):
            assert torch.equal(m.base_layer.weight, originals[n]) and m.merged_task is None
    with pytest.raises(ValueError, match="cannot be merged"):
        with merged_for_task(_base(), 0):
            pass


def _count_gate_calls(model) -> list[int]:
    calls = [0]
    for m in model.modules():
        if isinstance(m, TaskGate):
            m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_generation_computes_the_gate_once_and_matches_full_forward():
    model = _model()
    calls = _count_gate_calls(model)
    ids = _inputs(2, 5)
    mask = torch.ones_like(ids)
    task_ids = torch.tensor([1, 2])
    with torch.no_grad(), task_context(model, task_ids):
        greedy = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=6,
            pad_token_id=0,
            eos_token_id=None,
            output_logits=True,
            return_dict_in_generate=True,
        )
    assert calls[0] == 1
    # KV-cache decoding equals a full forward over the generated sequence
    full = _logits(model, greedy.sequences[:, :-1], task_ids)
    torch.testing.assert_close(
        torch.stack(greedy.logits, dim=1), full[:, ids.shape[1] - 1 :], rtol=1e-4, atol=1e-5
    )
    with torch.no_grad(), merged_for_task(model, 1), task_context(model, task_ids[:1]):
        merged = model.generate(
            input_ids=ids[:1],
            attention_mask=mask[:1],
            do_sample=False,
            max_new_tokens=6,
            pad_token_id=0,
            eos_token_id=None,
        )
    assert torch.equal(merged, greedy.sequences[:1])
    calls[0] = 0
    torch.manual_seed(0)
    with torch.no_grad(), task_context(model, task_ids):
        sampled = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=True,
            top_p=0.7,
            temperature=0.95,
            num_return_sequences=3,
            max_new_tokens=4,
            pad_token_id=0,
            eos_token_id=None,
        )
    assert calls[0] == 1 and sampled.shape == (6, 9)


def test_expanded_batch_uses_each_examples_task():
    """num_return_sequences repeats rows in place: rows 0-2 are example 0, rows 3-5 example 1.

    Equal up to float rounding: the gate's matmul over 2 task ids and over 6 may take different
    CPU kernels (seen with AMX: 5e-8 apart). Rows given the wrong tasks differ by far more."""
    model = _model()
    ids = _inputs(2, 5)
    task_ids = torch.tensor([0, 2])
    expanded = _logits(model, ids.repeat_interleave(3, dim=0), task_ids)
    explicit = _logits(model, ids.repeat_interleave(3, dim=0), task_ids.repeat_interleave(3))
    torch.testing.assert_close(expanded, explicit, rtol=1e-5, atol=1e-6)
    tiled = _logits(model, ids.repeat_interleave(3, dim=0), task_ids.repeat(3))  # 0,2,0,2,0,2
    assert (expanded - tiled).abs().max() > 1e-3


def _grads(model, *, checkpointing: bool):
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    ids = _inputs(3, 7)
    with task_context(model, torch.tensor([0, 2, 1])):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()  # inside the context
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_gradient_checkpointing_gives_the_same_gradients():
    plain = _grads(_model(), checkpointing=False)
    ckpt_model = _model()
    ckpt = _grads(ckpt_model, checkpointing=True)
    assert ckpt_model.model.gradient_checkpointing
    assert plain.keys() == ckpt.keys()
    assert any("task_embedding" in n for n in plain) and any("w_t" in n for n in plain)
    for name in plain:
        assert plain[name].abs().sum() > 0, name
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_reentrant_checkpointing_loses_the_gate_gradient():
    """Why non-reentrant checkpointing is required: the reentrant variant's no-grad first pass
    cuts the graph to the gate, whose output is computed outside the checkpointed blocks."""
    model = _model()
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.train()
    ids = _inputs(3, 7)
    with task_context(model, torch.tensor([0, 2, 1])):
        model(input_ids=ids, labels=ids).loss.backward()
    assert model.moelora_router.gate.w_t.weight.grad is None
    assert model.model.layers[0].self_attn.q_proj.lora_A.grad is not None


def test_expert_weights_introspection():
    model = _model()
    router = get_router(model)
    g = router.gate
    by_hand = torch.softmax(g.task_embedding.weight @ g.w_t.weight.T, dim=-1)
    table = expert_weights(model)
    assert table.shape == (3, 4) and table.dtype == torch.float32
    torch.testing.assert_close(table, by_hand.detach())
    assert expert_weights_per_layer(model).shape == (6, 3, 4)
    multi = _model("per_layer")
    per_layer = expert_weights_per_layer(multi)
    assert per_layer.shape == (6, 3, 4)
    torch.testing.assert_close(per_layer.sum(-1), torch.ones(6, 3))
    torch.testing.assert_close(expert_weights(multi), per_layer.mean(0))
    assert not torch.allclose(per_layer[0], per_layer[1])
    sparse = expert_weights(_model("sparse"))
    assert (sparse > 0).sum(-1).tolist() == [2, 2, 2]


def test_seq_first_flag_reaches_every_layer():
    model = build(
        _base(), tasks=TASKS, target_modules=["q_proj"], num_experts=4, rank=8, batch_axis=1
    )
    assert all(m.batch_axis == 1 for _, m in moelora_layers(model))
    assert all(isinstance(m, MoELoRALinear) for _, m in moelora_layers(model))


def test_adapter_save_load_round_trip(tmp_path):
    model = _model()
    meta = {
        "method": "moelora_dense",
        "hparams": {"num_experts": 4, "rank": 8},
        "tasks": TASKS,
        "task_id_scheme": "dense",
        "target_modules": TARGETS,
        "base_model": {"name_or_path": "tiny"},
    }
    save_adapter(model, tmp_path / "adapter", meta=meta)
    fresh = _model(randomize_b=False)
    ids, task_ids = _inputs(), torch.tensor([0, 1, 2])
    assert not torch.allclose(_logits(fresh, ids, task_ids), _logits(model, ids, task_ids))
    load_adapter(fresh, tmp_path / "adapter", expected_tasks=TASKS)
    torch.testing.assert_close(
        _logits(fresh, ids, task_ids), _logits(model, ids, task_ids), rtol=0, atol=0
    )
    with pytest.raises(AdapterMismatchError, match="use the same data.tasks"):
        load_adapter(_model(), tmp_path / "adapter", expected_tasks=["t1", "t0", "t2"])
    other_base = build(_base(hidden=64), tasks=TASKS, target_modules=TARGETS, num_experts=4, rank=8)
    with pytest.raises(AdapterMismatchError, match="does not match"):
        load_adapter(other_base, tmp_path / "adapter", expected_tasks=TASKS)
    per_layer = _model("per_layer")
    with pytest.raises(AdapterMismatchError, match="missing"):
        load_adapter(per_layer, tmp_path / "adapter", check_base=False)


def test_router_is_not_duplicated_in_state_dict():
    model = _model()
    keys = [k for k in model.state_dict() if "task_embedding" in k]
    assert keys == ["moelora_router.gate.task_embedding.weight"]
    assert isinstance(model.moelora_router, nn.Module)
