"""Per-task export through the library API: each task as a stock PEFT LoRA that stock
``peft.PeftModel.from_pretrained`` loads and that a LoRA server accepts, on Llama, Qwen2 and
GPT-2 shapes (tests/tiny_models.py)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from moelora import MoeLoraConfig, get_moelora_model
from moelora.method.export import VLLM_MAX_LORA_RANKS
from moelora.method.layer import is_conv1d
from moelora.method.model import moelora_layers
from tests.tiny_models import build_model

TASKS = ["qa", "ner", "cls"]
VOCAB = 96


class _Vocab(SimpleNamespace):
    """What build_model reads of a tokenizer: its size and special ids."""

    def __len__(self) -> int:
        return VOCAB


def _stock(arch: str):
    """The tiny random ``arch`` model (same weights on every call)."""
    return build_model(arch, _Vocab(bos_token_id=1, eos_token_id=2, pad_token_id=0), seed=0)


def _trained(arch: str, **kw):
    config = MoeLoraConfig(
        tasks=TASKS, target_modules="all-linear", num_experts=4, rank=8, dropout=0.0, **kw
    )
    model = get_moelora_model(_stock(arch), config)
    torch.manual_seed(3)
    with torch.no_grad():
        for _, layer in moelora_layers(model.model):
            layer.lora_B.normal_(std=0.3)
        for p in model.router.parameters():
            p.normal_()
    return model.eval()


def _ids() -> torch.Tensor:
    return torch.randint(3, VOCAB, (2, 7), generator=torch.Generator().manual_seed(0))


def check_vllm_adapter(path: Path, stock: torch.nn.Module, *, max_lora_rank: int) -> None:
    """The rules vLLM applies to a LoRA adapter folder before it serves it.

    From vLLM's LoRA documentation (https://docs.vllm.ai/en/latest/features/lora.html) and its
    adapter checks (``PEFTHelper.validate_legal`` and ``LoRAModel.from_local_checkpoint``,
    https://docs.vllm.ai/api/vllm/config/lora.html for ``max_lora_rank``):

    * the folder holds ``adapter_config.json`` and ``adapter_model.safetensors``;
    * ``r`` is at most ``--max-lora-rank``, which takes one of ``MaxLoRARanks``
      (1, 8, 16, 32, 64, 128, 256, 320, 512; default 16);
    * ``bias`` is ``"none"`` (adapter biases need ``bias_enabled``), no DoRA (``use_dora``);
    * no ``modules_to_save``: full (non-LoRA) weights such as ``lm_head`` or ``embed_tokens``
      are refused; the weights are only ``lora_A``/``lora_B`` matrices;
    * the weight names are ``base_model.model.<module>.lora_{A,B}.weight`` and every module's
      last name is a linear layer name of the stock model (vLLM maps ``q_proj``/``k_proj``/
      ``v_proj`` onto its packed ``qkv_proj`` by these stock names); ``target_modules`` names
      the same modules;
    * shapes: ``lora_A`` is ``(r, d_in)`` and ``lora_B`` ``(d_out, r)`` of that module.
    """
    assert sorted(p.name for p in path.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    config = json.loads((path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert max_lora_rank in VLLM_MAX_LORA_RANKS and 1 <= config["r"] <= max_lora_rank
    assert config["bias"] == "none" and not config.get("use_dora")
    assert not config.get("modules_to_save")
    assert isinstance(config["lora_alpha"], int | float) and config["lora_alpha"] > 0
    stock_modules = dict(stock.named_modules())
    stock_linear_names = {
        n.rsplit(".", 1)[-1]
        for n, m in stock_modules.items()
        if isinstance(m, torch.nn.Linear) or is_conv1d(m)
    }
    targets = config["target_modules"]
    assert targets and all(t.rsplit(".", 1)[-1] in stock_linear_names for t in targets)
    weights = load_file(str(path / "adapter_model.safetensors"))
    assert weights
    for key, tensor in weights.items():
        assert key.startswith("base_model.model.") and key.endswith(
            (".lora_A.weight", ".lora_B.weight")
        ), key
        module_name = key.removeprefix("base_model.model.").rsplit(".", 2)[0]
        module = stock_modules[module_name]  # a module of the stock model, by its stock name
        assert module_name.rsplit(".", 1)[-1] in stock_linear_names
        assert module is not stock.get_output_embeddings(), "the output head is not adapted"
        assert any(module_name == t or module_name.endswith("." + t) for t in targets)
        d0, d1 = module.weight.shape
        d_in, d_out = (d0, d1) if is_conv1d(module) else (d1, d0)
        want = (config["r"], d_in) if ".lora_A." in key else (d_out, config["r"])
        assert tuple(tensor.shape) == want, key


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
def test_each_task_is_a_stock_peft_lora_that_reproduces_its_logits(tmp_path, arch):
    model = _trained(arch)
    exported = model.export_task_adapters(tmp_path, base_model_name_or_path=f"tiny-{arch}")
    assert list(exported.paths) == TASKS
    ids = _ids()
    base_logits = _stock(arch)(input_ids=ids).logits
    for t, task in enumerate(TASKS):
        path = exported.paths[task]
        check_vllm_adapter(path, _stock(arch), max_lora_rank=exported.max_lora_rank)
        assert json.loads((path / "adapter_config.json").read_text())["r"] == 8
        peft_model = PeftModel.from_pretrained(_stock(arch), str(path)).eval()
        with torch.no_grad():
            got = peft_model(input_ids=ids).logits
            want = model(input_ids=ids, task_ids=torch.full((2,), t)).logits
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(got, base_logits, atol=1e-3)  # the adapter does something


def test_sparse_gate_exports_rank_k_r_over_n_and_the_serving_commands(tmp_path):
    model = _trained("llama", gate="sparse", top_k=1)
    exported = model.export_task_adapters(tmp_path / "out", base_model_name_or_path="org/base")
    ranks = {
        json.loads((p / "adapter_config.json").read_text())["r"] for p in exported.paths.values()
    }
    assert ranks == {2} and exported.max_lora_rank == 8  # K·r/N = 1·8/4; vLLM's smallest fit
    ids = _ids()
    peft_model = PeftModel.from_pretrained(_stock("llama"), str(exported.paths["ner"])).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            peft_model(input_ids=ids).logits,
            model(input_ids=ids, task_ids=["ner", "ner"]).logits,
            rtol=1e-5,
            atol=1e-5,
        )
    vllm = shlex.split(exported.vllm_command)
    assert vllm[:4] == ["vllm", "serve", "org/base", "--enable-lora"]
    modules = vllm[vllm.index("--lora-modules") + 1 : vllm.index("--max-loras")]
    assert modules == [f"{t}={tmp_path / 'out' / t}" for t in TASKS]
    assert vllm[vllm.index("--max-loras") + 1] == "3"
    assert vllm[vllm.index("--max-lora-rank") + 1] == "8"
    sglang = shlex.split(exported.sglang_command)
    assert (
        sglang[sglang.index("--lora-paths") + 1 : sglang.index("--max-loras-per-batch")] == modules
    )
    assert exported.vllm_command in str(exported)


@pytest.mark.parametrize(
    "edit",
    [
        {"r": 1024},
        {"bias": "all"},
        {"use_dora": True},
        {"modules_to_save": ["lm_head"]},
        {"target_modules": ["qkv"]},
        "lm_head weights",
    ],
)
def test_the_vllm_check_refuses_what_vllm_refuses(tmp_path, edit):
    """The check of the rules above fails on each kind of adapter vLLM turns away."""
    path = _trained("llama").export_task_adapters(tmp_path, base_model_name_or_path="b").paths["qa"]
    if edit == "lm_head weights":
        from safetensors.torch import save_file

        weights = load_file(str(path / "adapter_model.safetensors"))
        weights["base_model.model.lm_head.weight"] = torch.zeros(VOCAB, 32)
        save_file(weights, str(path / "adapter_model.safetensors"))
    else:
        config = json.loads((path / "adapter_config.json").read_text())
        (path / "adapter_config.json").write_text(json.dumps({**config, **edit}))
    with pytest.raises((AssertionError, KeyError)):
        check_vllm_adapter(path, _stock("llama"), max_lora_rank=16)
