"""P-Tuning (docs/methods.md §3) on a Llama through the shared trainer and generation code, and
LoRA (Full+TP) (§4.3): the task prompt reaches training and test inputs, never the gold."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from accelerate import Accelerator
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from baselines.ptuning import build
from moelora.data.encoding import Encoder, load_split
from moelora.data.samplers import RandomMixSampler
from moelora.engine.generation import DecodingSettings, generate_predictions
from moelora.engine.train import TrainSettings, train
from moelora.method.tasks import PAPER_TASKS, TaskMap
from moelora.utils.io import read_json
from tests.conftest import REPO_ROOT, TINY_LLAMA, compose, tiny_overrides

HIDDEN = TINY_LLAMA["hidden_size"]
KV_DIM = TINY_LLAMA["num_key_value_heads"] * HIDDEN // TINY_LLAMA["num_attention_heads"]


def _base(vocab: int = 97) -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=vocab, pad_token_id=0, eos_token_id=2, **TINY_LLAMA)
    ).eval()
    return model.requires_grad_(False)


def test_v1_builds_a_prompt_encoder_with_an_mlp_of_model_width():
    model = build(_base(), tasks=list(PAPER_TASKS), target_modules=[], num_virtual_tokens=16)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    assert all(".prompt_encoder." in n or n.startswith("prompt_encoder.") for n in shapes)
    assert shapes["prompt_encoder.default.embedding.weight"] == (16, HIDDEN)
    linears = [s for n, s in shapes.items() if n.endswith("weight") and "mlp_head" in n]
    assert linears == [(HIDDEN, HIDDEN)] * 3  # Linear→ReLU→Linear→ReLU→Linear, width = hidden
    assert sum(torch.numel(p) for p in model.parameters() if p.requires_grad) == 16 * HIDDEN + 3 * (
        HIDDEN * HIDDEN + HIDDEN
    )


def test_v2_prefix_has_key_value_vectors_per_layer_and_no_projection():
    model = build(
        _base(),
        tasks=list(PAPER_TASKS),
        target_modules=[],
        variant="v2_prefix",
        num_virtual_tokens=8,
    )
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    assert shapes == {
        "prompt_encoder.default.embedding.weight": (8, TINY_LLAMA["num_hidden_layers"] * 2 * KV_DIM)
    }


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="variant"):
        build(_base(), tasks=[], target_modules=[], variant="v3")


@pytest.mark.parametrize("variant", ["v1_prompt_encoder", "v2_prefix"])
def test_batched_left_padded_generation_matches_one_by_one(variant):
    model = build(_base(), tasks=[], target_modules=[], variant=variant, num_virtual_tokens=8)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    a, b = [5, 6, 7, 8, 9], [11, 12, 13]
    ids = torch.tensor([a, [0, 0] + b])
    mask = torch.tensor([[1] * 5, [0, 0, 1, 1, 1]])
    kw = dict(do_sample=False, max_new_tokens=6, pad_token_id=0, eos_token_id=-1)
    batched = model.generate(input_ids=ids, attention_mask=mask, **kw)
    assert batched.shape == (
        2,
        5 + 6,
    )  # prompt + new tokens: the generation code slices after the prompt
    for row, seq in zip(batched, (a, b)):
        alone = model.generate(
            input_ids=torch.tensor([seq]),
            attention_mask=torch.ones(1, len(seq), dtype=torch.long),
            **kw,
        )
        assert row[5:].tolist() == alone[0, len(seq) :].tolist()


@pytest.mark.parametrize("variant", ["v1_prompt_encoder", "v2_prefix"])
def test_shared_trainer_trains_only_the_prompt_and_generation_runs(tiny_world, tmp_path, variant):
    data_dir, model_dir = tiny_world
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    task_map = TaskMap(PAPER_TASKS)
    records = load_split(data_dir / "train.jsonl", task_map)[:16]
    encoder = Encoder(tokenizer=tok, task_map=task_map, max_source_length=96, max_target_length=8)
    base = LlamaForCausalLM.from_pretrained(str(model_dir)).requires_grad_(False)
    frozen = {n: p.detach().clone() for n, p in base.named_parameters()}
    torch.manual_seed(0)
    model = build(
        base, tasks=list(PAPER_TASKS), target_modules=[], variant=variant, num_virtual_tokens=8
    )
    fixed = encoder.collate_train([encoder.train_example(r) for r in records])
    fixed.pop("task_ids")

    def fixed_loss() -> float:
        model.eval()
        with torch.no_grad():
            return model(**fixed).loss.item()

    loss_before = fixed_loss()
    prompt_before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    settings = TrainSettings(
        max_steps=4, per_device_batch_size=2, grad_accum=2, lr=3e-2, progress=False, log_every=1
    )
    sampler = RandomMixSampler(
        [task_map.id(r["task_dataset"]) for r in records], batch_size=4, seed=0
    )
    result = train(
        model,
        encoder,
        records,
        settings=settings,
        sampler=sampler,
        accelerator=Accelerator(cpu=True),
        ckpt_dir=None,
        adapter_meta={"tasks": list(PAPER_TASKS)},
    )
    losses = [v for _, v in result.losses]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert fixed_loss() < loss_before  # the training objective fell on the training examples
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p.detach(), prompt_before[n]), n
    for n, p in base.named_parameters():  # the wrapped base, in place
        assert torch.equal(p.detach(), frozen[n]), n
    gen = generate_predictions(
        model,
        encoder,
        records[:3],
        decoding=DecodingSettings(max_new_tokens=4, batch_size=2),
        seed=0,
        progress=False,
    )
    assert [p["sample_id"] for p in gen.predictions] == [r["sample_id"] for r in records[:3]]
    assert all(isinstance(p["target"], str) for p in gen.predictions)


@pytest.mark.slow
def test_ptuning_smoke_through_run_py(tiny_world, tmp_path):
    job = tmp_path / "job"
    overrides = tiny_overrides(
        tiny_world,
        tmp_path,
        "method=ptuning",
        f"hydra.run.dir={job}",
        "method.ptuning.num_virtual_tokens=16",
    )
    proc = subprocess.run(
        [sys.executable, "run.py", *overrides],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = read_json(job / "results.json")
    assert r["status"] == "success" and r["train"]["steps"] == 4
    assert r["params"]["trainable"] == 16 * HIDDEN + 3 * (HIDDEN * HIDDEN + HIDDEN)
    assert r["config"]["method"]["optim"]["lr"] == 1e-3
    assert (job / "adapter" / "adapter_model.safetensors").is_file()


# ---- LoRA (Full+TP) --------------------------------------------------------------------------
CAPTURED: dict = {}


def capture_pipeline(ctx):
    """A pipeline that records what a method's pipeline receives and answers with blanks."""
    from moelora.harness.context import PipelineOutput

    CAPTURED["splits"] = ctx.splits
    return PipelineOutput(predictions=[{**r, "target": "-"} for r in ctx.splits["test"]])


def test_lora_full_tp_prefixes_train_and_test_inputs_but_not_the_gold(tiny_world, tmp_path):
    from moelora.harness.runner import run

    cfg = compose(
        tiny_overrides(
            tiny_world,
            tmp_path,
            "method=lora_full_tp",
            "method.pipeline=tests.test_baselines_ptuning.capture_pipeline",
        )
    )
    lora_full = compose(tiny_overrides(tiny_world, tmp_path, "method=lora_full"))
    assert cfg.method.name == "lora_full_tp" and cfg.method.task_prompt == "name"
    assert (
        cfg.method.adapter == lora_full.method.adapter
        and cfg.method.optim == lora_full.method.optim
    )
    run_dir = tmp_path / "job"
    run_dir.mkdir()
    assert run(cfg, run_dir) == 0
    splits = CAPTURED["splits"]
    data_dir, _ = tiny_world
    task_map = TaskMap(PAPER_TASKS)
    for split in ("train", "test"):
        gold = {r["sample_id"]: r for r in load_split(data_dir / f"{split}.jsonl", task_map)}
        for r in splits[split]:
            g = gold[r["sample_id"]]
            assert r["input"] == f"【任务：{_ZH[r['task_dataset']]}】\n" + g["input"]
            assert r["target"] == g["target"]
    written = [json.loads(x) for x in (run_dir / "predictions.jsonl").read_text().splitlines()]
    gold_test = {r["sample_id"]: r for r in load_split(data_dir / "test.jsonl", task_map)}
    assert written and all(w["input"] == gold_test[w["sample_id"]]["input"] for w in written)


_ZH = {
    "CMeIE": "医学实体关系抽取",
    "CHIP-CDN": "临床术语标准化",
    "CHIP-CDEE": "临床发现事件抽取",
    "CHIP-MDCFNPC": "临床发现阴阳性判断",
    "CHIP-CTC": "临床试验筛选标准分类",
    "KUAKE-QIC": "医疗搜索检索词意图分类",
    "IMCS-V2-MRG": "医疗对话诊疗报告生成",
    "MedDG": "医疗对话生成",
}
