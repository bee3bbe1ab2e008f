"""The memory plan (moelora/engine/memory.py) against what the code really saves and holds.

A block's predicted saved bytes are compared with the bytes measured (saved_tensor_bytes) at
the real widths of ChatGLM-6B, Qwen2.5-7B and Llama-3-8B (random weights, two blocks, short
sequences: the bytes per token are what matters) under bf16 autocast, as a GPU job trains;
within 10%. The parameter counts the plan takes from the meta device equal the real model's.
"""

from __future__ import annotations

import pytest
import torch

from moelora.engine import memory
from moelora.method.gate import task_context
from moelora.method.model import build
from moelora.utils.measure import saved_tensor_bytes
from tests.conftest import REPO_ROOT

NARROW = {  # the same layouts at a fraction of the width: the default suite's variant
    "chatglm-6b": {"hidden_size": 512, "inner_hidden_size": 2048, "num_attention_heads": 8},
    "qwen2.5-7b": {
        "hidden_size": 448,
        "intermediate_size": 2368,
        "num_attention_heads": 7,
        "num_key_value_heads": 1,
    },
    "llama-3-8b": {
        "hidden_size": 512,
        "intermediate_size": 1792,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
    },
}
VOCAB = 1024
SEQ, BATCH = 32, 2


def _spec(preset: str, layers: int, narrow: bool) -> dict:
    spec = dict(memory.PRESETS[preset], vocab_size=VOCAB)
    if narrow:
        spec.update(NARROW[preset])
    key = "num_layers" if spec["model_type"] == "chatglm" else "num_hidden_layers"
    spec[key] = layers
    if spec["model_type"] == "chatglm":  # special tokens inside the small vocabulary
        spec.update(
            bos_token_id=VOCAB - 3, eos_token_id=VOCAB - 2, mask_token_id=VOCAB - 5,
            gmask_token_id=VOCAB - 4, pad_token_id=0,
        )  # fmt: skip
    return spec


def _model(spec: dict) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    config = memory.hf_config(spec)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.requires_grad_(False)
    glm = spec["model_type"] == "chatglm"
    build(model, tasks=["a", "b"], target_modules="all-linear", batch_axis=1 if glm else 0)
    return model.train()


def _inputs(spec: dict) -> torch.Tensor:
    ids = torch.randint(10, VOCAB - 10, (BATCH, SEQ))
    if spec["model_type"] == "chatglm":
        ids[:, SEQ // 2 - 2] = spec["gmask_token_id"]
        ids[:, SEQ // 2 - 1] = spec["bos_token_id"]
    return ids


def _measure(model: torch.nn.Module, ids: torch.Tensor) -> int:
    def step() -> None:
        with task_context(model, torch.zeros(BATCH, dtype=torch.long)):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()

    return saved_tensor_bytes(step, exclude=list(model.parameters()))


def _drop_last_block(model: torch.nn.Module) -> None:
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.endswith("layers"):
            del module[-1]
            model.config.num_hidden_layers = len(module)
            return
    raise AssertionError("no block list")


def check_block(preset: str, narrow: bool) -> None:
    spec = _spec(preset, layers=2, narrow=narrow)
    model, ids = _model(spec), _inputs(spec)
    two = _measure(model, ids)
    _drop_last_block(model)
    one = _measure(model, ids)
    measured = two - one  # the second block: its input requires grad, as all but the first

    est = memory.Estimator(
        spec, memory.MethodSpec(), memory.Settings(precision="bf16", device="cpu")
    )
    tokens = BATCH * SEQ
    predicted = est.saved_bytes(tokens, layers=2) - est.saved_bytes(tokens, layers=1)
    assert predicted == pytest.approx(measured, rel=0.10), (preset, predicted, measured)


def check_parameters(preset: str) -> None:
    spec = _spec(preset, layers=2, narrow=True)
    model = _model(spec)
    counts = memory.count_parameters(memory.hf_config(spec), memory.MethodSpec())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert counts.trainable == trainable
    assert counts.frozen == sum(p.numel() for p in model.parameters()) - trainable


@pytest.mark.parametrize("preset", list(memory.PRESETS))
def test_block_saved_bytes_narrow(preset):
    check_block(preset, narrow=True)


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(memory.PRESETS))
def test_block_saved_bytes_real_width(preset):
    check_block(preset, narrow=False)


@pytest.mark.parametrize("preset", list(memory.PRESETS))
def test_parameter_counts_from_the_meta_device(preset):
    check_parameters(preset)


def test_real_width_weights_bytes():
    """The frozen weights of the presets at bf16: the models' published sizes."""
    sizes = {"chatglm-6b": 6.2e9, "qwen2.5-7b": 7.6e9, "llama-3-8b": 8.0e9}
    for name, params in sizes.items():
        counts = memory.count_parameters(memory.hf_config(name), memory.MethodSpec())
        assert counts.frozen == pytest.approx(params, rel=0.03), name


def test_plan_reaches_the_effective_batch_on_every_world_size():
    for world in (1, 2, 4, 8):
        p = memory.plan(
            "qwen2.5-7b", memory.MethodSpec(), memory.Settings(world=world, gpu_mem_gb=80)
        )
        assert p.world * p.micro_batch * p.grad_accum == 64
        assert p.train_bytes <= memory.usable_bytes(80)


def test_more_memory_never_chooses_a_smaller_micro_batch():
    micro = [
        memory.plan("llama-3-8b", memory.MethodSpec(), memory.Settings(gpu_mem_gb=gb)).micro_batch
        for gb in (24, 40, 80)
    ]
    assert micro == sorted(micro) and micro[0] < micro[-1]


def test_checkpointing_lowers_the_training_peak():
    on = memory.Estimator("chatglm-6b", memory.MethodSpec(), memory.Settings())
    off = memory.Estimator(
        "chatglm-6b", memory.MethodSpec(), memory.Settings(gradient_checkpointing=False)
    )
    assert on.train_peak(4) < off.train_peak(4)


def test_refuses_before_loading_with_the_numbers_and_the_fix():
    settings = memory.Settings(gpu_mem_gb=16, gradient_checkpointing=False)
    with pytest.raises(memory.MemoryPlanError) as err:
        memory.plan("llama-3-8b", memory.MethodSpec(), settings)
    msg = str(err.value)
    assert "16 GB" in msg and "GiB" in msg and "gradient_checkpointing=true" in msg


def test_world_size_must_divide_the_effective_batch():
    with pytest.raises(memory.MemoryPlanError, match="multiple of the 3 processes"):
        memory.plan("chatglm-6b", memory.MethodSpec(), memory.Settings(world=3))


def test_unknown_model_folder_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="preset"):
        memory.hf_config(tmp_path)


def test_cli_prints_the_table(capsys):
    assert memory.main(["--table"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") >= 10 and "qwen2.5-7b" in out and "80 GB" in out


def _big_model_dir(tmp_path):
    import json

    spec = dict(memory.PRESETS["qwen2.5-7b"])
    (tmp_path / "config.json").write_text(json.dumps(spec))
    return tmp_path


def _job_cfg(path, *extra):
    from tests.conftest import compose

    return compose(
        [
            "model=hf",
            f"model.path={path}",
            "trainer=paper",
            "method=moelora_dense",
            "data.max_source_length=1024",
            "data.max_target_length=196",
            *extra,
        ]
    )


def test_a_gpu_job_records_its_plan(tmp_path, monkeypatch, capsys):
    from types import SimpleNamespace

    cfg = _job_cfg(_big_model_dir(tmp_path))
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda d: SimpleNamespace(total_memory=80e9)
    )
    acc = SimpleNamespace(
        device=torch.device("cuda"), num_processes=4, mixed_precision="bf16", print=print
    )
    record = memory.gpu_memory_plan(cfg, acc)
    assert record["world"] * record["micro_batch"] * record["grad_accum"] == 64
    assert record["configured"]["micro_batch"] == 4 and record["card_bytes"] == 80e9
    assert "[memory] memory plan" in capsys.readouterr().out
    cpu = SimpleNamespace(device=torch.device("cpu"))
    assert memory.gpu_memory_plan(cfg, cpu) is None


def test_a_gpu_job_whose_micro_batch_does_not_fit_is_refused_with_the_fix(tmp_path):
    cfg = _job_cfg(_big_model_dir(tmp_path), "trainer.per_device_batch_size=64")
    with pytest.raises(memory.MemoryPlanError, match="trainer.per_device_batch_size=") as err:
        memory.check_job(cfg, world=1, mixed_precision="bf16", card_bytes=int(24e9))
    assert "GiB" in str(err.value)


def test_an_unknown_layout_is_skipped_not_guessed(tmp_path):
    import json

    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "n_embd": 64, "n_layer": 2, "n_head": 2})
    )
    cfg = _job_cfg(tmp_path)
    record = memory.check_job(cfg, world=1, mixed_precision="bf16", card_bytes=int(80e9))
    assert "gpt2" in record["skipped"]


def test_the_committed_memory_plan_page_is_what_the_code_renders(tmp_path):
    """docs/results/memory-plan.md is generated (make memory-plan), never typed."""
    from moelora.engine.memory import main

    out = tmp_path / "memory-plan.md"
    assert main(["--table", "--out", str(out)]) == 0
    committed = REPO_ROOT / "docs" / "results" / "memory-plan.md"
    assert committed.read_text(encoding="utf-8") == out.read_text(encoding="utf-8"), (
        "docs/results/memory-plan.md differs from the code's plan: run make memory-plan"
    )
