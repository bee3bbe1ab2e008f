"""Every common architecture family, end to end: tiny random Llama, Qwen2, Mistral, GPT-2 and
GLM-4 models (tests/tiny_models.py, each with a tokenizer that fits it) × MOELoRA (D), LoRA
(Full), MoLoRA and P-Tuning through ``run.py trainer=smoke`` (in process, as test_run.py), the
``all-linear`` default of ``model=hf``, the attention-only presets per family, and the per-task
merge and export on GPT-2's Conv1D layers and on Qwen2.
"""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from transformers.pytorch_utils import Conv1D

from moelora.harness.runner import run
from moelora.inference.export import load_run_model, main
from moelora.method.export import export_task_adapters
from moelora.method.gate import task_context
from moelora.method.layer import linear_shape
from moelora.method.merge import merged_for_task
from moelora.method.model import build, find_targets, moelora_layers
from moelora.models.loading import resolve_target_modules
from moelora.utils.io import read_json
from tests.conftest import compose, tiny_overrides
from tests.tiny_models import ARCHITECTURES, build_model, build_tokenizer

METHODS = ("moelora_dense", "lora_full", "molora", "ptuning")
# what the attention-only preset adapts per family (conf/model/hf.yaml families)
QKV = {
    "llama": {"q_proj", "k_proj", "v_proj"},
    "mistral": {"q_proj", "k_proj", "v_proj"},
    "qwen2": {"q_proj", "k_proj", "v_proj"},
    "glm4": {"q_proj", "k_proj", "v_proj"},
    "gpt2": {"c_attn"},
}


def _base(arch: str, tiny_world):
    return build_model(arch, build_tokenizer(arch, tiny_world[0]))


def _cfg(tiny_world, model_dir, out, *extra):
    data_dir, _ = tiny_world
    return compose(
        tiny_overrides((data_dir, model_dir), out, "trainer.eval.limit_per_task=1", *extra)
    )


def _expected_trainable(base, method: str, cfg) -> int:
    """Trainable parameters if every block linear layer (not the head) carries the adapter."""
    hp = cfg.method.adapter
    shapes = [linear_shape(m) for _, m in find_targets(base, "all-linear")]
    lora = sum(hp.rank * (d_in + d_out) for d_in, d_out in shapes)
    if method == "moelora_dense":
        return lora + len(cfg.data.tasks) * hp.task_embed_dim + hp.num_experts * hp.task_embed_dim
    if method == "molora":
        return lora + sum(hp.num_experts * d_in for d_in, _ in shapes)
    return lora


@pytest.fixture(scope="module")
def smoke_run(tiny_world, arch_model_dir, tmp_path_factory):
    """``smoke_run(arch, method)``: the run folder of one trainer=smoke job (run once)."""
    done = {}

    def get(arch: str, method: str):
        if (arch, method) not in done:
            out = tmp_path_factory.mktemp(f"{arch}-{method}")
            cfg = _cfg(tiny_world, arch_model_dir(arch), out, f"method={method}")
            assert run(cfg, out / "job") == 0
            done[arch, method] = (out / "job", cfg)
        return done[arch, method]

    return get


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_method_runs_on_every_architecture(arch, method, tiny_world, smoke_run):
    run_dir, cfg = smoke_run(arch, method)
    r = read_json(run_dir / "results.json")
    assert r["status"] == "success", r.get("error")
    assert 0.0 <= r["scores"]["avg"] <= 1.0
    assert len(r["train"]["losses"]) == 4 and all(math.isfinite(v) for _, v in r["train"]["losses"])
    if method != "ptuning":  # the adapter sits on every linear layer of the blocks
        assert r["params"]["trainable"] == _expected_trainable(_base(arch, tiny_world), method, cfg)
        meta = read_json(run_dir / "adapter" / "adapter_config.json")
        assert meta["target_modules"] == "all-linear"
    else:
        assert r["params"]["trainable"] > 0


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_all_linear_is_what_peft_adapts(arch, tiny_world):
    """all-linear = every nn.Linear / Conv1D but the output head, the layers peft wraps."""
    base = _base(arch, tiny_world)
    ours = [n for n, _ in find_targets(base, "all-linear")]
    assert "lm_head" not in ours and len(ours) >= 2 * 4  # ≥ 4 per block, 2 blocks
    peft_model = get_peft_model(
        _base(arch, tiny_world),
        LoraConfig(r=2, target_modules="all-linear", fan_in_fan_out=arch == "gpt2"),
    )
    theirs = sorted(
        n.removeprefix("base_model.model.")
        for n, m in peft_model.named_modules()
        if isinstance(m, BaseTunerLayer)
    )
    assert sorted(ours) == theirs
    if arch == "gpt2":
        assert all(isinstance(m, Conv1D) for _, m in find_targets(base, "all-linear"))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_attention_only_preset_of_each_family(arch, tiny_world, arch_model_dir, tmp_path):
    cfg = _cfg(tiny_world, arch_model_dir(arch), tmp_path, "method=lora_full_qkv")
    targets = resolve_target_modules(cfg.model, cfg.method.target_modules)
    base = _base(arch, tiny_world)
    adapted = {n.rsplit(".", 1)[-1] for n, _ in find_targets(base, targets)}
    assert adapted == QKV[arch]
    qkvo = resolve_target_modules(cfg.model, "qkvo")
    names = [n for n, _ in find_targets(base, qkvo)]
    assert len(names) == 2 * (len(QKV[arch]) + 1)  # + the attention output, 2 blocks
    assert not any(".mlp." in n for n in names)  # GPT-2: attn.c_proj, not mlp.c_proj


def test_unknown_family_and_unknown_model_type_are_clear_errors(
    tiny_world, arch_model_dir, tmp_path
):
    cfg = _cfg(
        tiny_world, arch_model_dir("gpt2"), tmp_path, "method=lora_full_qkv", "model.family=falcon"
    )
    with pytest.raises(
        KeyError,
        match=r"model.family='falcon' is not a family of "
        r"conf/model/hf.yaml; use auto or one of \['chatglm', 'glm4', 'gpt2', 'llama'\]",
    ):
        resolve_target_modules(cfg.model, "qkv")
    cfg = _cfg(tiny_world, arch_model_dir("gpt2"), tmp_path, "method=lora_full_qkv")
    cfg.model.families.gpt2.model_types = ["gpt_neo"]
    with pytest.raises(
        KeyError,
        match=r"model_type 'gpt2', which no family of conf/model/hf.yaml "
        r"lists .* set model.family",
    ):
        resolve_target_modules(cfg.model, "qkv")
    assert resolve_target_modules(cfg.model, "all") == "all-linear"  # needs no family
    cfg.model.family = "gpt2"
    assert resolve_target_modules(cfg.model, "qkv") == ["c_attn"]
    with pytest.raises(
        KeyError,
        match=r"'qkvz' is neither a preset of conf/model/hf.yaml "
        r"\(\['all'\]\) nor of its family 'gpt2' \(\['qkv', 'qkvo'\]\)",
    ):
        resolve_target_modules(cfg.model, "qkvz")


def test_unknown_module_names_list_the_ones_that_exist(tiny_world):
    """GPT-2 has no nn.Linear: the error names its Conv1D layers and what to set."""
    with pytest.raises(
        ValueError,
        match=r"\['q_proj'\] match no linear layer \(nn.Linear or Conv1D\) "
        r"of this GPT2LMHeadModel; its linear layers are named "
        r"\['c_attn', 'c_fc', 'c_proj', 'lm_head', 'attn.c_proj', "
        r"'mlp.c_proj'\]. Set method.target_modules",
    ):
        build(_base("gpt2", tiny_world), tasks=["a"], target_modules=["q_proj"])


# ---- per-task merge and export (Eq. 8) on Conv1D (GPT-2) and on Qwen2 -------------------


def _trained(arch: str, tiny_world, **kw):
    model = build(
        _base(arch, tiny_world),
        tasks=["t0", "t1", "t2"],
        target_modules="all-linear",
        num_experts=4,
        rank=8,
        dropout=0.0,
        **kw,
    )
    torch.manual_seed(1)
    with torch.no_grad():
        for _, layer in moelora_layers(model):
            layer.lora_B.normal_(std=0.5)
    return model.eval()


def _ids(vocab: int) -> torch.Tensor:
    return torch.randint(3, vocab, (3, 10), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_merge_and_stock_peft_export_reproduce_each_tasks_logits(arch, tiny_world, tmp_path):
    model = _trained(arch, tiny_world)
    ids = _ids(model.config.vocab_size)
    with torch.no_grad():
        base_logits = _base(arch, tiny_world)(input_ids=ids).logits
    paths = export_task_adapters(model, tmp_path, tasks=["t0", "t1", "t2"], base_name_or_path="b")
    for t, path in enumerate(paths):
        with torch.no_grad(), task_context(model, torch.full((3,), t)):
            want = model(input_ids=ids).logits
        with torch.no_grad(), merged_for_task(model, t):
            merged = model(input_ids=ids).logits
        torch.testing.assert_close(merged, want, rtol=1e-5, atol=1e-5)
        config = read_json(path / "adapter_config.json")
        assert config["fan_in_fan_out"] is (arch == "gpt2")
        peft_model = PeftModel.from_pretrained(_base(arch, tiny_world), str(path)).eval()
        with torch.no_grad():
            got = peft_model(input_ids=ids).logits
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(got, base_logits, atol=1e-3)


def test_gpt2_attention_only_export_names_only_the_adapted_c_proj(tiny_world, tmp_path):
    model = build(
        _base("gpt2", tiny_world),
        tasks=["t0"],
        target_modules=["c_attn", "attn.c_proj"],
        num_experts=2,
        rank=4,
    )
    export_task_adapters(model, tmp_path, tasks=["t0"], base_name_or_path="b")
    names = read_json(tmp_path / "t0" / "adapter_config.json")["target_modules"]
    assert sorted(names) == sorted(
        f"transformer.h.{i}.attn.{m}" for i in range(2) for m in ("c_attn", "c_proj")
    )


@pytest.mark.parametrize("arch", ["gpt2", "qwen2"])
def test_a_trained_run_exports_and_merges(arch, smoke_run, arch_model_dir, tmp_path):
    """From a run folder: ``python -m moelora.inference.export RUN_DIR`` gives stock peft adapters that
    reproduce the reloaded model's logits, merged or not."""
    run_dir, cfg = smoke_run(arch, "moelora_dense")
    model, _ = load_run_model(run_dir)
    paths = main([str(run_dir), "--out", str(tmp_path / "export")])
    assert [p.name for p in paths] == list(cfg.data.tasks)
    ids = _ids(model.config.vocab_size)
    for t in (0, 5):
        with torch.no_grad(), task_context(model, torch.full((3,), t)):
            want = model(input_ids=ids).logits
        with torch.no_grad(), merged_for_task(model, t):
            torch.testing.assert_close(model(input_ids=ids).logits, want, rtol=1e-5, atol=1e-5)
        base = type(model).from_pretrained(str(arch_model_dir(arch)))
        with torch.no_grad():
            got = PeftModel.from_pretrained(base, str(paths[t])).eval()(input_ids=ids).logits
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_peft_lora_on_conv1d_merges_per_task(tiny_world):
    from baselines.lora import build as build_lora

    model = build_lora(
        _base("gpt2", tiny_world), tasks=["a"], target_modules="all-linear", rank=4
    ).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.5)
    ids = _ids(model.config.vocab_size)
    with torch.no_grad():
        want = model(input_ids=ids).logits
        with merged_for_task(model, 0):
            torch.testing.assert_close(model(input_ids=ids).logits, want, rtol=1e-5, atol=1e-5)
