"""Native ChatGLM-6B: loading without remote code, safe weights, conversion, padding, cache,
checkpointing, prompt learning and the real model's shapes (issue #15)."""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch

from moelora.method.gate import task_context
from moelora.models.chatglm.checkpoint import convert_to_safetensors, load_bin, main
from moelora.models.chatglm.configuration import ChatGLMConfig
from moelora.models.chatglm.modeling import ChatGLMForConditionalGeneration
from moelora.models.loading import load_base_model, load_tokenizer

PROMPTS = ["患者咳嗽三天，伴有发热。诊断：", "Diagnosis:", "头痛\n恶心\n请给出诊断  结果："]
GREEDY = dict(do_sample=False, max_new_tokens=6)


@pytest.fixture(scope="module")
def tok(tiny_chatglm):
    return load_tokenizer(tiny_chatglm)


@pytest.fixture(scope="module")
def model(tiny_chatglm):
    return load_base_model(tiny_chatglm, dtype="float32").eval()


def _logits(model, tok, prompts, **kw):
    batch = tok(prompts, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch, **kw).logits, batch["attention_mask"].bool()


class _Marker:
    """Pickled into a fake shard: unpickling it would create ``path``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("trust_remote_code", [False, True])
def test_the_release_directory_loads_natively_and_runs_none_of_its_files(
    tiny_chatglm, tmp_path, trust_remote_code
):
    """Its config.json and tokenizer_config.json keep their auto_map; the code files it names
    would leave a marker and fail. Even trust_remote_code=true takes the native classes."""
    ckpt = tmp_path / "chatglm-6b"
    shutil.copytree(tiny_chatglm, ckpt)
    marker = tmp_path / "remote_code_ran"
    for name in ("modeling_chatglm.py", "configuration_chatglm.py", "tokenization_chatglm.py"):
        (ckpt / name).write_text(
            f"open({str(marker)!r}, 'w').close()\nraise RuntimeError('remote code')\n"
        )
    assert "auto_map" in (ckpt / "config.json").read_text()
    tok = load_tokenizer(ckpt, trust_remote_code=trust_remote_code)
    model = load_base_model(ckpt, dtype="float32", trust_remote_code=trust_remote_code)
    assert type(model) is ChatGLMForConditionalGeneration
    assert type(tok).__module__ == "moelora.models.chatglm.tokenization"
    assert not marker.exists()
    assert model.transformer.word_embeddings.weight is model.lm_head.weight  # tied, as released


def test_a_shard_that_is_not_plain_tensors_is_refused_unexecuted(tiny_chatglm, tmp_path):
    ckpt = tmp_path / "chatglm-6b"
    shutil.copytree(tiny_chatglm, ckpt)
    marker = tmp_path / "unpickled"
    shard = ckpt / "pytorch_model-00008-of-00008.bin"
    tensors = torch.load(shard, weights_only=True)
    with open(shard, "wb") as f:
        pickle.dump({**tensors, "extra": _Marker(str(marker))}, f)
    with pytest.raises(ValueError, match="pytorch_model-00008-of-00008.bin.*weights_only"):
        load_bin(shard)
    with pytest.raises(Exception):  # noqa: B017 - transformers' own refusal
        load_base_model(ckpt, dtype="float32")
    assert not marker.exists()


def test_conversion_to_safetensors_keeps_the_model(tiny_chatglm, tmp_path, tok, model, capsys):
    load_base_model(tiny_chatglm, dtype="float32")
    assert (
        "convert once to safetensors with: python -m moelora.models.chatglm.checkpoint"
        in capsys.readouterr().out
    )
    out = tmp_path / "chatglm-6b-st"
    main([str(tiny_chatglm), "--out", str(out)])
    assert "tensors written" in capsys.readouterr().out
    assert not list(out.glob("*.bin")) and list(out.glob("*.safetensors"))
    assert not list(out.glob("*.py"))
    converted = load_base_model(out, dtype="float32").eval()
    assert "convert once" not in capsys.readouterr().out
    want, real = _logits(model, tok, PROMPTS)
    got, _ = _logits(converted, tok, PROMPTS)
    assert torch.equal(got[real], want[real])
    assert load_tokenizer(out)(PROMPTS[0])["input_ids"] == tok(PROMPTS[0])["input_ids"]
    with pytest.raises(ValueError, match="source directory"):
        convert_to_safetensors(tiny_chatglm, tiny_chatglm)


def test_left_padded_batched_generation_equals_one_by_one(tok, model):
    batch = tok(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        batched = model.generate(**batch, **GREEDY)[:, batch["input_ids"].shape[1] :]
        for row, prompt in zip(batched, PROMPTS):
            alone = tok([prompt], return_tensors="pt")
            one = model.generate(**alone, **GREEDY)[0, alone["input_ids"].shape[1] :]
            assert row.tolist() == one.tolist()


def test_right_padded_rows_equal_each_sequence_alone(tok, model):
    ids = [
        tok(p)["input_ids"] + tok("答案", add_special_tokens=False)["input_ids"] for p in PROMPTS
    ]
    width = max(map(len, ids))
    batch = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in ids])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ids])
    with torch.no_grad():
        padded = model(input_ids=batch, attention_mask=mask).logits
        for i, r in enumerate(ids):
            alone = model(input_ids=torch.tensor([r])).logits[0]
            torch.testing.assert_close(padded[i, : len(r)], alone, rtol=0, atol=1e-5)


def test_decoding_with_the_cache_equals_the_full_forward(tok, model):
    """Each cached step (continued 2D positions, mask over the cache) = a full re-run."""
    batch = tok(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        seq = model.generate(**batch, **GREEDY)
        mask = torch.cat([batch["attention_mask"], torch.ones(3, 6, dtype=torch.long)], dim=1)
        full = model(input_ids=seq, attention_mask=mask).logits
        out = model(**batch, use_cache=True)
        steps = [out.logits[:, -1]]
        for t in range(5):
            pos = batch["input_ids"].shape[1] + t
            out = model(
                input_ids=seq[:, pos : pos + 1],
                attention_mask=mask[:, : pos + 1],
                past_key_values=out.past_key_values,
                use_cache=True,
            )
            steps.append(out.logits[:, -1])
    start = batch["input_ids"].shape[1] - 1
    torch.testing.assert_close(torch.stack(steps, 1), full[:, start : start + 6], rtol=0, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_moelora_gradients(tiny_chatglm, tok):
    from moelora.method.model import build

    def grads(checkpointing: bool) -> dict[str, torch.Tensor]:
        model = load_base_model(tiny_chatglm, dtype="float32", gradient_checkpointing=checkpointing)
        torch.manual_seed(0)
        build(
            model,
            tasks=["a", "b"],
            target_modules=["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
            num_experts=2,
            rank=4,
            dropout=0.0,
            batch_axis=1,
        )
        for n, p in model.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.1)
        model.train()
        batch = tok(PROMPTS, padding=True, return_tensors="pt")
        with task_context(model, torch.tensor([0, 1, 0])):
            model(**batch, labels=batch["input_ids"]).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain, ckpt = grads(False), grads(True)
    assert plain.keys() == ckpt.keys() and any("task_embedding" in n for n in plain)
    assert len(plain) == 2 * 4 * 2 + 2  # A, B of 4 linears x 2 blocks + E, W_T
    for name in plain:
        assert plain[name].abs().sum() > 0, name
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("variant", ["v1_prompt_encoder", "v2_prefix"])
def test_prompt_learning_batched_generation_equals_one_by_one_and_trains(
    tiny_chatglm, tok, variant
):
    """P-Tuning passes embeddings (v1) or a key/value prefix (v2); the layout is found in them.
    (peft refuses prefix tuning under gradient checkpointing, so v2 runs without.)"""
    from baselines.ptuning import build

    base = load_base_model(
        tiny_chatglm, dtype="float32", gradient_checkpointing=variant == "v1_prompt_encoder"
    )
    model = build(base, tasks=[], target_modules=[], variant=variant, num_virtual_tokens=4)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    model.eval()
    batch = tok(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        batched = model.generate(**batch, **GREEDY)[:, -6:]
        for row, prompt in zip(batched, PROMPTS):
            one = model.generate(**tok([prompt], return_tensors="pt"), **GREEDY)[0, -6:]
            assert row.tolist() == one.tolist()
    model.train()
    labels = batch["input_ids"].masked_fill(~batch["attention_mask"].bool(), -100)
    loss = model(**batch, labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters() if p.requires_grad
    )


def test_float16_runs_and_stays_close_to_float32(tiny_chatglm, tok, model):
    """model.dtype=float16 (V100s): the same layout and arithmetic in half precision."""
    half = load_base_model(tiny_chatglm, dtype="float16").eval()
    assert half.lm_head.weight.dtype == torch.float16
    want, real = _logits(model, tok, PROMPTS)
    got, _ = _logits(half, tok, PROMPTS)
    assert torch.isfinite(got).all()
    assert (got.float() - want).abs()[real].max() < 0.05


def test_chatglm_6b_shapes_and_parameter_count():
    """At the release's size: its state-dict names, 6,173,286,400 parameters (head tied) and
    the paper's LoRA count on the four target projections (introspect.chatglm6b_param_counts)."""
    from moelora.method.introspect import chatglm6b_param_counts

    with torch.device("meta"):
        model = ChatGLMForConditionalGeneration(ChatGLMConfig())
    names = set(model.state_dict())
    assert len(names) == 368 - 28  # the release's keys less the 28 rotary buffers
    assert {
        "transformer.word_embeddings.weight",
        "lm_head.weight",
        "transformer.final_layernorm.bias",
        "transformer.layers.27.attention.query_key_value.weight",
        "transformer.layers.0.mlp.dense_4h_to_h.bias",
    } <= names
    assert sum(p.numel() for p in model.parameters()) == 6_173_286_400
    targets = ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")
    lora = sum(
        16 * (m.in_features + m.out_features)
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in targets
    )
    assert lora == chatglm6b_param_counts("lora")["trainable"] == 29_360_128


def test_layout_tokens_are_found_in_embeddings_behind_virtual_tokens(tok, model):
    """What P-Tuning v1 hands the model: virtual token embeddings, then the looked-up prompt."""
    batch = tok(PROMPTS, padding=True, return_tensors="pt")
    ids = batch["input_ids"]
    embeds = torch.cat([torch.randn(3, 4, 64), model.transformer.word_embeddings(ids)], dim=1)
    layout = (tok.bos_token_id, tok.mask_token_id, tok.gmask_token_id)
    want = torch.where(torch.isin(ids, torch.tensor(layout)), ids, -1)
    found = model.transformer.special_token_ids(embeds.detach())
    assert torch.equal(found, torch.cat([torch.full((3, 4), -1), want], dim=1))
    assert (found == tok.bos_token_id).sum() == 3


def test_tokenizer_save_and_reload_and_attention_choice(tiny_chatglm, tok, tmp_path):
    tok.save_pretrained(str(tmp_path))
    shutil.copy2(tiny_chatglm / "config.json", tmp_path / "config.json")
    again = load_tokenizer(tmp_path)
    text = "患者  咳嗽\n[gMASK] end"
    assert again(text)["input_ids"] == tok(text)["input_ids"]
    assert again.decode(again(text)["input_ids"], skip_special_tokens=True) == tok.decode(
        tok(text)["input_ids"], skip_special_tokens=True
    )
    eager = load_base_model(tiny_chatglm, dtype="float32", attn_implementation="eager")
    assert eager.config._attn_implementation == "eager"
    assert load_base_model(tiny_chatglm, dtype="float32").config._attn_implementation == "sdpa"
