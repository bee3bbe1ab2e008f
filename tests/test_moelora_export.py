"""Per-task export as stock PEFT LoRA adapters (Eq. 8, docs/methods.md §6.5, §9b)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from moelora.engine.adapters import save_adapter
from moelora.inference.export import main
from moelora.method.export import export_task_adapters
from moelora.method.gate import task_context
from moelora.method.model import build, moelora_layers
from tests.test_moelora_model import TARGETS, TASKS, _base, _inputs, _logits


def _trained(**kw):
    model = build(
        _base(), tasks=TASKS, target_modules=TARGETS, num_experts=4, rank=8, dropout=0.0, **kw
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for _, layer in moelora_layers(model):
            layer.lora_B.normal_(std=0.5)
    return model.eval()


@pytest.mark.parametrize(
    "kw,rank,alpha",
    [
        ({}, 8, 32.0),  # s = 32/8 = 4 → lora_alpha 32
        ({"gate": "sparse", "top_k": 2}, 4, 16.0),  # zero blocks dropped: r' = 2·8/4
        ({"scaling_rank": "expert", "alpha": 8}, 8, 32.0),  # s = 8/(8/4) = 4 → 4·8
        ({"gate": "per_layer"}, 8, 32.0),
    ],
)
def test_stock_peft_reproduces_each_tasks_logits(tmp_path, kw, rank, alpha):
    model = _trained(**kw)
    paths = export_task_adapters(model, tmp_path, tasks=TASKS, base_name_or_path="tiny-base")
    assert [p.name for p in paths] == TASKS
    ids = _inputs()
    for t, path in enumerate(paths):
        config = json.loads((path / "adapter_config.json").read_text())
        assert config["peft_type"] == "LORA" and config["r"] == rank
        assert config["lora_alpha"] == pytest.approx(alpha)
        assert sorted(config["target_modules"]) == sorted(TARGETS)
        keys = load_file(str(path / "adapter_model.safetensors"))
        assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
        peft_model = PeftModel.from_pretrained(_base(), str(path)).eval()
        with torch.no_grad():
            got = peft_model(input_ids=ids).logits
        want = _logits(model, ids, torch.full((3,), t))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(got, _base()(input_ids=ids).logits, atol=1e-3)


def test_cli_exports_a_run_dir(tmp_path):
    """The command line rebuilds the base from the recorded local path, re-applies build with
    the saved hyper-parameters, loads the adapter, and exports every task."""
    base_dir = tmp_path / "base"
    _base().save_pretrained(str(base_dir))
    (base_dir / "tokenizer_config.json").write_text("{}")  # the loader checks it exists
    model = _trained(gate="sparse", top_k=1)
    hparams = {
        "num_experts": 4,
        "rank": 8,
        "dropout": 0.0,
        "gate": "sparse",
        "top_k": 1,
        "task_id_scheme": "dense",
        "batch_axis": 0,
    }
    meta = {
        "method": "moelora_sparse",
        "hparams": hparams,
        "builder": "moelora.method.model.build",
        "tasks": TASKS,
        "task_id_scheme": "dense",
        "target_modules": TARGETS,
        "base_model": {"name_or_path": str(base_dir)},
    }
    save_adapter(model, tmp_path / "run" / "adapter", meta=meta)
    paths = main([str(tmp_path / "run"), "--out", str(tmp_path / "out")])
    ids = _inputs()
    for t, path in enumerate(paths):
        peft_model = PeftModel.from_pretrained(_base(), str(path)).eval()
        with torch.no_grad(), task_context(model, torch.full((3,), t)):
            want = model(input_ids=ids).logits
            got = peft_model(input_ids=ids).logits
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    meta["builder"] = "baselines.lora.build"
    save_adapter(model, tmp_path / "lora_run" / "adapter", meta=meta)
    with pytest.raises(ValueError, match="only MOELoRA runs"):
        main([str(tmp_path / "lora_run"), "--out", str(tmp_path / "out2")])


def _saved_run(tmp_path, base_path: str) -> dict:
    """A MOELoRA run dir whose adapter records ``base_path`` (as RunContext.adapter_meta does)."""
    hparams = {
        "num_experts": 4,
        "rank": 8,
        "dropout": 0.0,
        "task_id_scheme": "dense",
        "batch_axis": 0,
    }
    meta = {
        "method": "moelora_dense",
        "hparams": hparams,
        "builder": "moelora.method.model.build",
        "tasks": TASKS,
        "task_id_scheme": "dense",
        "target_modules": TARGETS,
        "base_model": {"name_or_path": base_path},
    }
    save_adapter(_trained(), tmp_path / "run" / "adapter", meta=meta)
    return meta


def test_export_refuses_another_base_of_the_same_shape(tmp_path):
    """#12: names and shapes match, the weights do not: the export stops instead of writing
    adapters for the wrong base."""
    from moelora.engine.adapters import AdapterMismatchError

    base_dir = tmp_path / "base"
    _base().save_pretrained(str(base_dir))
    (base_dir / "tokenizer_config.json").write_text("{}")
    _saved_run(tmp_path, str(base_dir))
    assert main([str(tmp_path / "run"), "--out", str(tmp_path / "ok")])  # the right base
    other = _base()
    torch.manual_seed(5)
    with torch.no_grad():
        other.model.layers[1].mlp.up_proj.weight.normal_()
    other.save_pretrained(str(base_dir))  # same names, shapes
    with pytest.raises(AdapterMismatchError, match="names, shapes and sampled weights"):
        main([str(tmp_path / "run"), "--out", str(tmp_path / "out")])
    config = json.loads((tmp_path / "run" / "adapter" / "adapter_config.json").read_text())
    assert config["format_version"] == 2 and config["base_dtype"] == "float32"


def test_recorded_base_path_is_absolute_and_export_works_from_another_directory(
    tmp_path, monkeypatch
):
    from moelora.harness.context import RunContext
    from moelora.method.tasks import TaskMap
    from tests.conftest import compose

    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    _base().save_pretrained("base")
    Path("base", "tokenizer_config.json").write_text("{}")
    cfg = compose(["model=hf", "model.path=base", "method=moelora_dense"])
    ctx = RunContext(
        cfg=cfg,
        run_dir=Path("run"),
        task_map=TaskMap(TASKS),
        splits={},
        accelerator=None,
        logger=None,
    )
    recorded = ctx.adapter_meta()["base_model"]["name_or_path"]
    assert recorded == str(tmp_path / "project" / "base")
    _saved_run(tmp_path, recorded)
    monkeypatch.chdir(tmp_path)  # somewhere else
    paths = main([str(tmp_path / "run"), "--out", "exported"])
    assert [p.name for p in paths] == TASKS
    exported = json.loads((tmp_path / "exported" / TASKS[0] / "adapter_config.json").read_text())
    assert exported["base_model_name_or_path"] == recorded


def test_base_fingerprint_sees_weights_but_not_the_load_dtype():
    """A base fingerprinted in bf16 (training on GPU) matches the same base loaded in fp32
    (export); one changed weight does not match."""
    from moelora.engine.adapters import base_dtype, base_fingerprint

    fp32 = build(_base(), tasks=TASKS, target_modules=TARGETS, num_experts=4, rank=8)
    bf16 = build(
        _base().to(torch.bfloat16), tasks=TASKS, target_modules=TARGETS, num_experts=4, rank=8
    )
    assert base_dtype(bf16) == "bfloat16"
    assert base_fingerprint(fp32, dtype="bfloat16") == base_fingerprint(bf16)
    assert base_fingerprint(fp32) != base_fingerprint(fp32, weights=False)
    with torch.no_grad():
        fp32.model.embed_tokens.weight[-1, -1] += 1.0  # the last element is always sampled
    assert base_fingerprint(fp32, dtype="bfloat16") != base_fingerprint(bf16)
