"""A quantized frozen base (QLoRA, ``model.quantization: 4bit | 8bit``) under MOELoRA and the
peft LoRA baseline: the config key, the errors when bitsandbytes cannot run, and, where
bitsandbytes runs on this machine's CPU, the real thing on a tiny Llama: build, one training
step (gradients reach only the adapters and the gate), unmerged generation, merging refused,
and one job through the harness."""

from __future__ import annotations

import json
import sys
import warnings

import pytest
import torch

from moelora.models.loading import load_base_model, quantization_config, quantization_device

TASKS = ["t0", "t1", "t2"]
TARGETS = ["q_proj", "v_proj", "down_proj"]
QUANTIZATIONS = ("4bit", "8bit")


def _bnb_runs_on_cpu() -> bool:
    try:
        import bitsandbytes as bnb
    except ImportError:
        return False
    return "cpu" in set(getattr(bnb, "supported_torch_devices", ()) or ())


needs_bnb = pytest.mark.skipif(
    not _bnb_runs_on_cpu(), reason="bitsandbytes is not installed or does not run on the CPU"
)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # bitsandbytes' int8 cast notes, one per matmul
        yield


# ---- the config key and its errors (no bitsandbytes needed) ------------------------------
def test_quantization_config_is_nf4_double_quant_in_the_compute_dtype():
    pytest.importorskip("transformers")
    four = quantization_config("4bit", torch.bfloat16)
    assert four.load_in_4bit and not four.load_in_8bit
    assert four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_use_double_quant
    assert four.bnb_4bit_compute_dtype == torch.bfloat16
    eight = quantization_config("8bit", torch.float32)
    assert eight.load_in_8bit and not eight.load_in_4bit
    with pytest.raises(ValueError, match=r"model.quantization='3bit'; use null .*4bit or 8bit"):
        quantization_config("3bit", torch.float32)


def test_the_config_check_knows_the_key_and_its_choices():
    from moelora.harness.schema import check_values
    from tests.conftest import compose

    for model in ("tiny", "hf", "chatglm_6b"):
        cfg = compose([f"model={model}", "model.path=/x"])
        assert cfg.model.quantization is None
        assert not any("quantization" in p for p in check_values(cfg))
    for q in QUANTIZATIONS:
        cfg = compose(["model=hf", "model.path=/x", f"model.quantization={q}"])
        assert not any("quantization" in p for p in check_values(cfg))
    bad = compose(["model=hf", "model.path=/x", "model.quantization=4bits"])
    problems = [p for p in check_values(bad) if "model.quantization" in p]
    assert problems and "model.quantization=4bit" in problems[0]


def test_null_quantization_keeps_the_identity_of_runs_saved_before_the_key():
    from omegaconf import OmegaConf

    from moelora.harness.identity import job_fingerprint
    from tests.conftest import compose

    cfg = OmegaConf.to_container(compose(["method=lora_full"]), resolve=False)
    before = json.loads(json.dumps(cfg))
    del before["model"]["quantization"]
    assert job_fingerprint(cfg) == job_fingerprint(before)
    cfg["model"]["quantization"] = "4bit"
    assert job_fingerprint(cfg) != job_fingerprint(before)
    assert job_fingerprint(cfg, training_only=True) != job_fingerprint(before, training_only=True)


def test_missing_bitsandbytes_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import raises ImportError
    with pytest.raises(ImportError, match=r"model.quantization=4bit needs bitsandbytes.*null"):
        quantization_device("4bit", "cpu")


def test_a_device_bitsandbytes_cannot_run_on_is_a_clear_error(monkeypatch):
    bnb = pytest.importorskip("bitsandbytes")
    monkeypatch.setattr(bnb, "supported_torch_devices", {"cuda"}, raising=False)
    with pytest.raises(RuntimeError, match=r"model.quantization=8bit: .*cannot run on cpu.*null"):
        quantization_device("8bit", "cpu")


def test_an_unknown_quantization_is_refused_before_loading(tiny_world):
    _, model_dir = tiny_world
    with pytest.raises(ValueError, match="model.quantization='int4'"):
        load_base_model(model_dir, dtype="float32", quantization="int4", device="cpu")


# ---- the real thing, where bitsandbytes runs on the CPU ----------------------------------
@pytest.fixture(scope="module")
def qlora_world(tiny_world, tmp_path_factory):
    """(data_dir, model_dir): the tiny world with a tiny random Llama of width 64 (bitsandbytes'
    CPU 4-bit kernel packs the input axis in blocks of 64, so the tiny world's width 32 is too
    narrow for it)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tests.conftest import TINY_LLAMA

    data_dir, tiny_dir = tiny_world
    tok = AutoTokenizer.from_pretrained(str(tiny_dir))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **{**TINY_LLAMA, "hidden_size": 64, "intermediate_size": 128},
    )
    out = tmp_path_factory.mktemp("qlora") / "model"
    LlamaForCausalLM(config).save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return data_dir, out


def _quantized(world, quantization: str):
    _, model_dir = world
    return load_base_model(model_dir, dtype="float32", quantization=quantization, device="cpu")


def _batch(model, seq: int = 7, batch: int = 3):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def _bnb_class(quantization: str):
    import bitsandbytes as bnb

    return bnb.nn.Linear4bit if quantization == "4bit" else bnb.nn.Linear8bitLt


@needs_bnb
@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_moelora_on_a_quantized_base(qlora_world, quantization):
    """MOELoRA wraps the quantized linears (shape from their attributes), computes
    ``W0 x`` with their own forward plus the fp32 adapter path (Eq. 4), trains only the
    adapters and the gate, generates unmerged, and refuses to merge (Eq. 8)."""
    from moelora.method.gate import task_context
    from moelora.method.layer import is_quantized
    from moelora.method.merge import merge_blocker, merged_for_task, supports_merge
    from moelora.method.model import build, moelora_layers

    model = _quantized(qlora_world, quantization)
    assert isinstance(model.model.layers[0].self_attn.q_proj, _bnb_class(quantization))
    build(model, tasks=TASKS, target_modules=TARGETS, num_experts=2, rank=4, dropout=0.0)
    layers = dict(moelora_layers(model))
    assert len(layers) == 2 * len(TARGETS)
    h = model.config.hidden_size
    for name, layer in layers.items():
        assert is_quantized(layer.base_layer)
        d_in = model.config.intermediate_size if name.endswith("down_proj") else h
        assert (layer.in_features, layer.lora_A.shape[1]) == (d_in, d_in)
        assert layer.lora_A.dtype == layer.lora_B.dtype == torch.float32
    torch.manual_seed(1)
    with torch.no_grad():
        for layer in layers.values():
            layer.lora_B.normal_(std=0.5)

    # Eq. 4 on the quantized base: the base module's own output plus the adapter path
    layer = layers["model.layers.0.self_attn.q_proj"]
    x = torch.randn(3, 5, h)
    w = layer._broadcast(torch.rand(3, layer.rank), x)

    class Fixed:
        mergeable = True

        def rank_weights(self, _layer, _x):
            return w

    source = layer.weight_source
    layer.set_weight_source(Fixed())
    with torch.no_grad():
        expected = layer.base_layer(x) + layer.adapter_output(x, w)
        assert torch.allclose(layer(x), expected, atol=1e-5)
        assert not torch.allclose(layer(x), layer.base_layer(x), atol=1e-3)
    layer.set_weight_source(source)

    # one training step: gradients on the adapters and the gate only
    model.train()
    batch = _batch(model)
    with task_context(model, torch.tensor([0, 1, 2])):
        loss = model(**batch).loss
    loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable
    assert any("moelora_router" in n for n in with_grad)
    assert all("lora_" in n or "moelora_router" in n for n in with_grad)
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)

    # unmerged generation works, merged is refused with the fix
    model.eval()
    ids = batch["input_ids"][:2, :4]
    with torch.no_grad(), task_context(model, torch.tensor([0, 2])):
        out = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    assert out.shape == (2, 7)
    assert not supports_merge(model) and "method.infer=unmerged" in merge_blocker(model)
    with pytest.raises(ValueError, match=r"quantized.*method.infer=unmerged"):
        with merged_for_task(model, 0):
            pass
    with pytest.raises(RuntimeError, match=r"quantized.*method.infer=unmerged"):
        layer.merge(0)
    assert layer.merged_task is None


@needs_bnb
@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_lora_baseline_on_a_quantized_base(qlora_world, quantization):
    """peft's LoRA wraps the quantized linears natively; one step trains only LoRA; unmerged
    generation works; merging is refused."""
    from baselines.lora import build
    from moelora.method.merge import merge_blocker

    model = build(
        _quantized(qlora_world, quantization), tasks=TASKS, target_modules=TARGETS, rank=4
    )
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.get_base_layer(), _bnb_class(quantization))
    model.train()
    batch = _batch(model)
    model(**batch).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad and all("lora_" in n for n in with_grad)
    assert len(with_grad) == 2 * 2 * len(TARGETS)
    model.eval()
    with torch.no_grad():
        out = model.generate(
            input_ids=batch["input_ids"][:1, :4], max_new_tokens=3, do_sample=False, pad_token_id=0
        )
    assert out.shape == (1, 7)
    assert "quantized" in merge_blocker(model)


@needs_bnb
@pytest.mark.parametrize("method", ["moelora_dense", "lora_full"])
def test_a_job_on_a_4bit_base_trains_generates_unmerged_and_reloads(
    qlora_world, tmp_path, capsys, method
):
    """Through the harness: model.quantization=4bit with method.infer=merged_per_task trains,
    says why it generates unmerged, records the unmerged inference; the finished run reloads
    onto a 4-bit base (load_run) and predicts what the job predicted."""
    from moelora.harness.runner import run
    from moelora.inference.load import load_run
    from moelora.inference.predict import predict
    from moelora.method.layer import is_quantized
    from tests.conftest import compose, tiny_overrides

    cfg = compose(
        tiny_overrides(
            qlora_world,
            tmp_path,
            f"method={method}",
            "model.quantization=4bit",
            "method.infer=merged_per_task",
            "trainer.max_steps=2",
            "decoding=greedy",
        )
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert run(cfg, run_dir) == 0, (run_dir / "results.json").read_text()
    out = capsys.readouterr().out
    assert "cannot be merged per task (the base weights are quantized" in out
    results = json.loads((run_dir / "results.json").read_text())
    timing = results["timing"]
    assert (timing["infer_requested"], timing["infer_mode"]) == ("merged_per_task", "unmerged")
    assert results["train"]["steps"] == 2 and len(results["train"]["losses"]) == 2

    loaded = load_run(run_dir)
    assert not loaded.mergeable
    assert any(is_quantized(m) for m in loaded.model.modules())
    job = [json.loads(line) for line in (run_dir / "predictions.jsonl").read_text().splitlines()]
    again = predict(loaded, [{**r, "target": ""} for r in job], score=False)
    assert [r["target"] for r in again.predictions] == [r["target"] for r in job]


def test_the_memory_plan_skips_a_quantized_base_instead_of_refusing_it(tmp_path):
    """The plan counts the frozen weights at the compute dtype: Qwen2.5-7B at micro-batch 64 on
    a 24 GB card is refused unquantized; with model.quantization it is skipped, not refused."""
    from moelora.engine import memory
    from tests.test_memory_plan import _big_model_dir, _job_cfg

    path = _big_model_dir(tmp_path)
    with pytest.raises(memory.MemoryPlanError):
        memory.check_job(
            _job_cfg(path, "trainer.per_device_batch_size=64"),
            world=1,
            mixed_precision="bf16",
            card_bytes=int(24e9),
        )
    cfg = _job_cfg(path, "trainer.per_device_batch_size=64", "model.quantization=4bit")
    record = memory.check_job(cfg, world=1, mixed_precision="bf16", card_bytes=int(24e9))
    assert "model.quantization=4bit" in record["skipped"]


@needs_bnb
@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_moelora_on_a_quantized_chatglm_with_checkpointing(tiny_chatglm, quantization):
    """ChatGLM-6B's port (sequence-first, batch_axis=1) on a quantized base, with gradient
    checkpointing: one step trains the adapters and the gate."""
    from moelora.method.gate import task_context
    from moelora.method.model import build

    model = load_base_model(
        tiny_chatglm,
        dtype="float32",
        quantization=quantization,
        device="cpu",
        gradient_checkpointing=True,
    )
    targets = ["query_key_value", "dense_4h_to_h"]
    build(model, tasks=TASKS, target_modules=targets, num_experts=2, rank=4, batch_axis=1)
    model.train()
    batch = _batch(model, seq=6, batch=2)
    with task_context(model, torch.tensor([0, 2])):
        model(**batch).loss.backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("moelora_router" in n for n in with_grad)
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


@needs_bnb
def test_a_moelora_adapter_saved_on_a_4bit_base_loads_back_onto_it(qlora_world, tmp_path):
    """The adapter file and the base check work on a quantized base: saved, loaded into a
    freshly quantized base, the outputs are the same."""
    from moelora.engine.adapters import load_adapter, save_adapter
    from moelora.method.gate import task_context
    from moelora.method.model import build, moelora_layers

    def fresh():
        model = _quantized(qlora_world, "4bit")
        return build(model, tasks=TASKS, target_modules=TARGETS, num_experts=2, rank=4).eval()

    model = fresh()
    torch.manual_seed(3)
    with torch.no_grad():
        for _, layer in moelora_layers(model):
            layer.lora_B.normal_(std=0.5)
    meta = {"method": "moelora", "tasks": TASKS, "target_modules": TARGETS}
    save_adapter(model, tmp_path / "adapter", meta=meta)
    other = fresh()
    load_adapter(other, tmp_path / "adapter", expected_tasks=TASKS)
    ids = _batch(model)["input_ids"]
    with torch.no_grad(), task_context(model, torch.tensor([0, 1, 2])):
        a = model(input_ids=ids).logits
    with torch.no_grad(), task_context(other, torch.tensor([0, 1, 2])):
        b = other(input_ids=ids).logits
    assert torch.equal(a, b)
