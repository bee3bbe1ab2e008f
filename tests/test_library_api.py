"""The PEFT-style library API (docs/library.md): config checks, routing through forward and
generate, gradient checkpointing, save/load, merge."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import torch

from moelora import MoeLoraConfig, MoeLoraModel, get_moelora_model
from moelora.method.config import BUILDERS
from moelora.method.gate import task_context
from moelora.method.model import moelora_layers
from moelora.method.peft_model import MoeLoraLoadError
from moelora.utils.names import current_name
from tests.conftest import REPO_ROOT
from tests.test_moelora_model import TARGETS, TASKS, _base, _inputs

CONFIG = dict(tasks=TASKS, target_modules=TARGETS, num_experts=4, rank=8, dropout=0.0)


def _model(**kw) -> MoeLoraModel:
    model = get_moelora_model(_base(), MoeLoraConfig(**{**CONFIG, **kw}))
    torch.manual_seed(1)
    with torch.no_grad():  # a trained-looking adapter: B != 0, a gate that differs per task
        for _, layer in moelora_layers(model.model):
            layer.lora_B.normal_(std=0.5)
        for p in model.router.parameters():
            p.normal_()
    return model


def test_import_moelora_is_cheap_and_lazy():
    code = (
        "import sys, moelora, moelora.utils.io; assert 'torch' not in sys.modules, 'torch'; "
        "from moelora import MoeLoraConfig, get_moelora_model, MoeLoraModel; "
        "assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


@pytest.mark.parametrize(
    "kw,field,fix",
    [
        (dict(tasks=[]), "tasks", "ordered list of task names"),
        (dict(tasks=["a", "a"]), "tasks", "distinct"),
        (dict(rank=10), "rank", "rank=8"),
        (dict(gate="sparse", top_k=5), "top_k", "1..num_experts=4"),
        (dict(gate="moe"), "gate", "'dense'"),
        (dict(dropout=1.0), "dropout", "[0, 1)"),
        (dict(target_modules="all"), "target_modules", "'all-linear'"),
        (dict(task_id_scheme="sparse"), "task_id_scheme", "'authors'"),
    ],
)
def test_config_errors_name_the_field_and_the_fix(kw, field, fix):
    with pytest.raises(ValueError, match=rf"MoeLoraConfig\.{field}=") as err:
        MoeLoraConfig(**{**CONFIG, **kw})
    assert fix in str(err.value)


def test_every_field_has_help_and_the_builder_names_resolve():
    import dataclasses

    assert all(f.metadata.get("help") for f in dataclasses.fields(MoeLoraConfig))
    assert {current_name(b) for b in BUILDERS} == {BUILDERS[0]}


def test_forward_routes_by_task_ids_as_task_context_does():
    model = _model().eval()
    ids, task_ids = _inputs(), torch.tensor([2, 0, 1])
    with torch.no_grad():
        got = model(input_ids=ids, task_ids=task_ids).logits
        by_name = model(input_ids=ids, task_ids=["t2", "t0", "t1"]).logits
        with task_context(model.model, task_ids):
            want = model.model(input_ids=ids).logits
            inside = model(input_ids=ids).logits  # no ids: the caller's routing
        other = model(input_ids=ids, task_ids=torch.tensor([0, 0, 0])).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(by_name, want, rtol=0, atol=0)
    torch.testing.assert_close(inside, want, rtol=0, atol=0)
    assert not torch.allclose(other[0], got[0], atol=1e-4)  # the task changes the output
    assert model.router.routing_state()[0] is None  # nothing left behind
    with pytest.raises(RuntimeError, match="pass task_ids="):
        model(input_ids=ids)
    with pytest.raises(ValueError, match="unknown task id"):
        model(input_ids=ids, task_ids=torch.tensor([0, 1, 7]))


def test_generate_routes_and_expands_rows():
    model = _model().eval()
    ids = _inputs(2, 4)
    kw = dict(max_new_tokens=3, do_sample=False, pad_token_id=0)
    out = model.generate(input_ids=ids, task_ids=torch.tensor([0, 2]), **kw)
    with task_context(model.model, torch.tensor([0, 2])):
        want = model.model.generate(input_ids=ids, **kw)
    assert torch.equal(out, want)
    beams = model.generate(
        input_ids=ids, task_ids=[0, 2], num_beams=2, num_return_sequences=2, **kw
    )
    assert beams.shape[0] == 4


def _grads(model: MoeLoraModel, *, checkpointing: bool, interleave: bool = False) -> dict:
    if checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    a, b = _inputs(3, 7), _inputs(2, 5)
    loss = model(input_ids=a, labels=a, task_ids=torch.tensor([0, 2, 1])).loss
    if interleave:  # another forward with other ids before the first one's backward
        other = model(input_ids=b, labels=b, task_ids=torch.tensor([1, 1])).loss
        (loss + 0.0 * other).backward()
    else:
        loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("interleave", [False, True])
def test_checkpointing_recomputes_with_the_forwards_routing(interleave):
    """Backward recomputes each checkpointed block with the task ids of its own forward, even
    after another forward with other ids: the gradients equal those without checkpointing."""
    plain = _grads(_model(), checkpointing=False, interleave=interleave)
    model = _model()
    ckpt = _grads(model, checkpointing=True, interleave=interleave)
    assert model.model.model.gradient_checkpointing
    assert plain.keys() == ckpt.keys() and any("w_t" in n for n in plain)
    for name in plain:
        assert plain[name].abs().sum() > 0, name
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_reentrant_checkpointing_is_refused():
    with pytest.raises(ValueError, match="use_reentrant"):
        _model().gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": True}
        )


def test_keeps_the_hf_interface(capsys):
    model = _model()
    assert model.config is model.model.config
    assert model.generation_config is model.model.generation_config
    assert model.get_base_model() is model.model
    assert model.base_model is model.model.model  # the backbone, as transformers names it
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    model.print_trainable_parameters()
    assert f"trainable params: {trainable:,} || all params: {total:,}" in capsys.readouterr().out


def test_save_and_load_round_trip(tmp_path):
    model = _model().eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "MOELORA" and config["tasks"] == TASKS
    loaded = MoeLoraModel.from_pretrained(_base(), tmp_path)
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    ids, t = _inputs(), torch.tensor([1, 2, 0])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(input_ids=ids, task_ids=t).logits,
            model(input_ids=ids, task_ids=t).logits,
            rtol=0,
            atol=0,
        )
    trainable = MoeLoraModel.from_pretrained(_base(), tmp_path, is_trainable=True)
    assert trainable.get_nb_trainable_parameters()[0] == model.get_nb_trainable_parameters()[0]


def test_load_refuses_another_base_other_tasks_and_pickles(tmp_path):
    _model().save_pretrained(tmp_path)
    with pytest.raises(MoeLoraLoadError, match="'base_fingerprint'.*trained on"):
        MoeLoraModel.from_pretrained(_base(hidden=48), tmp_path)
    other = _base()
    with torch.no_grad():
        other.model.layers[0].mlp.up_proj.weight.add_(1.0)  # same shapes, other weights
    reference = copy.deepcopy(other)
    with pytest.raises(MoeLoraLoadError, match="adapter_config.json: field 'base_fingerprint'"):
        MoeLoraModel.from_pretrained(other, tmp_path)
    # the refused base is left as given: its own layers, no gate, trainable flags, weights
    assert type(other.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    assert not hasattr(other, "moelora_router")
    assert all(p.requires_grad for p in other.parameters())
    assert other.state_dict().keys() == reference.state_dict().keys()
    for name, tensor in reference.state_dict().items():
        assert torch.equal(other.state_dict()[name], tensor), name
    with pytest.raises(MoeLoraLoadError, match="field 'tasks'.*pass the saved task list"):
        MoeLoraModel.from_pretrained(_base(), tmp_path, tasks=["t1", "t0", "t2"])
    (tmp_path / "adapter_model.safetensors").rename(tmp_path / "adapter_model.bin")
    with pytest.raises(MoeLoraLoadError, match="safetensors only"):
        MoeLoraModel.from_pretrained(_base(), tmp_path)
    with pytest.raises(ValueError, match="safetensors only"):
        _model().save_pretrained(tmp_path / "x", safe_serialization=False)


def test_load_refuses_a_stock_lora_adapter(tmp_path):
    from peft import LoraConfig, get_peft_model

    get_peft_model(_base(), LoraConfig(target_modules=TARGETS)).save_pretrained(tmp_path)
    with pytest.raises(MoeLoraLoadError, match="not a MOELoRA adapter.*PeftModel.from_pretrained"):
        MoeLoraModel.from_pretrained(_base(), tmp_path)


def test_merge_and_unload_equals_the_task_routed_model():
    model = _model().eval()
    ids = _inputs()
    with torch.no_grad():
        want = model(input_ids=ids, task_ids=torch.full((3,), 2)).logits
    merged = model.merge_and_unload(task="t2")
    assert type(merged).__name__ == "LlamaForCausalLM" and not hasattr(merged, "moelora_router")
    assert type(merged.model.layers[0].self_attn.q_proj) is torch.nn.Linear
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, want, rtol=1e-5, atol=1e-5)


def test_a_harness_adapter_loads(tmp_path):
    """A harness run's adapter (moelora.engine.adapters, builder moelora.moe.build as older
    runs wrote it) loads with from_pretrained: one file format."""
    from moelora.engine.adapters import save_adapter

    model = _model()
    hparams = {**model.moelora_config.hparams()}
    hparams.pop("task_id_scheme")
    meta = {
        "method": "moelora_dense",
        "hparams": hparams,
        "builder": "moelora.moe.build",
        "tasks": TASKS,
        "task_id_scheme": "dense",
        "target_modules": TARGETS,
        "base_model": {"name_or_path": "tiny"},
    }
    save_adapter(model.model, tmp_path, meta=meta)
    loaded = MoeLoraModel.from_pretrained(_base(), tmp_path)
    ids, t = _inputs(), torch.tensor([0, 1, 2])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(input_ids=ids, task_ids=t).logits, model(input_ids=ids, task_ids=t).logits
        )


def test_get_moelora_model_refuses_a_built_model():
    model = _model()
    with pytest.raises(ValueError, match="fresh base model"):
        get_moelora_model(model.model, MoeLoraConfig(**CONFIG))
    with pytest.raises(TypeError, match="MoeLoraConfig"):
        get_moelora_model(copy.deepcopy(_base()), dict(CONFIG))
