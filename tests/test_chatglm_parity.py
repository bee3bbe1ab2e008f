"""The native ChatGLM-6B against the original code (issue #15), through committed goldens.

tests/golden/chatglm_v1.{json,safetensors} were written by the original THUDM/chatglm-6b
modeling and tokenizer code under transformers 4.33 on the tiny checkpoint of
moelora/models/chatglm/tiny.py (command in the JSON's ``command``; see experiments/chatglm_oracle.py).
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from moelora.models.chatglm.layout import chunk_layout, prefix_lm_allowed
from moelora.models.chatglm.tiny import fixture_digest
from moelora.models.loading import load_base_model, load_tokenizer
from tests.conftest import REPO_ROOT

GOLDEN = json.loads(
    (REPO_ROOT / "tests" / "golden" / "chatglm_v1.json").read_text(encoding="utf-8")
)
TENSORS = load_file(str(REPO_ROOT / "tests" / "golden" / "chatglm_v1.safetensors"))
TOL = 1e-5  # fp32 logits, max abs diff (issue #15)


@pytest.fixture(scope="module")
def tok(tiny_chatglm):
    return load_tokenizer(tiny_chatglm)


@pytest.fixture(scope="module", params=["eager", "sdpa"])
def model(request, tiny_chatglm):
    from transformers import AutoModelForCausalLM

    load_tokenizer(tiny_chatglm)  # registers the native classes
    return AutoModelForCausalLM.from_pretrained(
        str(tiny_chatglm), dtype=torch.float32, attn_implementation=request.param
    ).eval()


def test_the_fixture_is_the_one_the_goldens_were_made_with(tiny_chatglm):
    """A failure here means the tiny checkpoint changed (sentencepiece or torch RNG version,
    or tiny.py), not the model: regenerate the goldens with the command in the JSON."""
    assert fixture_digest(tiny_chatglm) == GOLDEN["fixture"]


def test_token_ids_pieces_and_decodings_equal_the_original(tok, tiny_chatglm):
    from transformers import AutoTokenizer

    tok16 = AutoTokenizer.from_pretrained(str(tiny_chatglm), num_image_tokens=16)
    assert {
        k: tok.convert_tokens_to_ids(t)
        for k, t in [
            ("mask", "[MASK]"),
            ("gmask", "[gMASK]"),
            ("sop", "<sop>"),
            ("eop", "<eop>"),
            ("pad", "<pad>"),
        ]
    } == GOLDEN["special_ids"]
    for case in GOLDEN["texts"]:
        text = case["text"]
        ids = tok(text, add_special_tokens=False)["input_ids"]
        special = tok(text)["input_ids"]
        assert tok.tokenize(text) == case["tokens"], text
        assert ids == case["ids"], text
        assert special == case["ids_special"] == ids + [tok.gmask_token_id, tok.bos_token_id], text
        assert tok16(text, add_special_tokens=False)["input_ids"] == case["ids_image_tokens"], text
        assert [i - 16 for i in case["ids_image_tokens"]] == ids
        assert tok.decode(ids) == case["decode"], text
        assert tok.decode(special) == case["decode_special"], text
        assert tok.decode(special, skip_special_tokens=True) == case["decode_skip"], text


def test_chinese_english_whitespace_and_newline_strings_round_trip(tok):
    """Decoding gives the text back, as in the original, except where its decoder's
    clean-up of spaces before punctuation and the dropping of spaces around literal special
    tokens change it (both reproduced above)."""
    changed = {"Hello , world ! Isn 't it ?", "问：<sop>答 [MASK] 之后 <eop> end"}
    for case in GOLDEN["texts"]:
        round_trip = tok.decode(tok(case["text"], add_special_tokens=False)["input_ids"])
        assert (round_trip == case["text"]) == (case["text"] not in changed), case["text"]


def test_left_padded_batch_layout_equals_the_original_tokenizers(tok):
    """Position ids (position, block position) and the prefix-LM mask that the original
    tokenizer returns are what the native model derives from ids + 2D padding mask."""
    p = GOLDEN["prompts"]
    batch = tok(p["texts"], padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist() == p["input_ids"]
    real = batch["attention_mask"].bool()
    assert (~real).any()  # the batch really is left-padded
    position_ids, context_end = chunk_layout(
        batch["input_ids"],
        real,
        bos_token_id=tok.bos_token_id,
        mask_token_id=tok.mask_token_id,
        gmask_token_id=tok.gmask_token_id,
    )
    assert position_ids.tolist() == p["position_ids"]
    allowed = prefix_lm_allowed(real, query_length=real.shape[1], context_end=context_end)
    masked = torch.tensor(p["attention_mask"])  # original: True = masked
    assert torch.equal(allowed, ~masked)


def test_logits_on_left_padded_prompts_equal_the_original(tok, model):
    batch = tok(GOLDEN["prompts"]["texts"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    real = batch["attention_mask"].bool()
    diff = (logits - TENSORS["prompt_logits"]).abs()[real].max().item()
    assert diff <= TOL, f"max abs logit diff {diff:.2e}"
    assert torch.isfinite(logits).all()


def test_greedy_generation_with_kv_cache_equals_the_original_token_for_token(tok, model):
    batch = tok(GOLDEN["prompts"]["texts"], padding=True, return_tensors="pt")
    kw = dict(max_new_tokens=GOLDEN["generation"]["max_new_tokens"], do_sample=False)
    with torch.no_grad():
        cached = model.generate(**batch, use_cache=True, **kw)
        uncached = model.generate(**batch, use_cache=False, **kw)
    assert cached.tolist() == GOLDEN["generation"]["sequences"]
    assert uncached.tolist() == cached.tolist()


def test_right_padded_training_batch_of_the_harness_equals_the_original(tok, model):
    """moelora.data.encoding.Encoder builds the batch (right padding, 2D mask); the original computed
    the same ids without a mask, its own masks and positions from the ids."""
    from moelora.data.encoding import Encoder
    from moelora.method.tasks import TaskMap

    train = GOLDEN["train"]
    enc = Encoder(
        tok, TaskMap(["CMeIE"]), max_source_length=64, max_target_length=32, add_special_tokens=True
    )
    batch = enc.collate_train(
        [
            enc.train_example({"input": p, "target": a, "task_dataset": "CMeIE"})
            for p, a in train["pairs"]
        ]
    )
    assert batch["input_ids"].tolist() == train["input_ids"]
    assert batch["labels"].tolist() == train["labels"]
    assert batch["attention_mask"].tolist() == train["padding_mask"]
    with torch.no_grad():
        out = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            labels=batch["labels"],
        )
    real = batch["attention_mask"].bool()
    diff = (out.logits - TENSORS["train_logits"]).abs()[real].max().item()
    assert diff <= TOL, f"max abs logit diff {diff:.2e}"
    assert out.loss.item() == pytest.approx(train["loss"], abs=1e-5)


def test_the_harness_loader_gives_the_same_model(tiny_chatglm, tok):
    """moelora.models.loading.load_base_model (what run.py uses) on the unmodified directory."""
    model = load_base_model(tiny_chatglm, dtype="float32").eval()
    batch = tok(GOLDEN["prompts"]["texts"], padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    real = batch["attention_mask"].bool()
    assert (logits - TENSORS["prompt_logits"]).abs()[real].max().item() <= TOL


def test_generation_through_the_harness_equals_the_original(tok, model):
    """moelora.engine.generation (left-padded batches of moelora.data.encoding.Encoder, KV cache, greedy):
    the answers the original's greedy generation decodes to."""
    from moelora.data.encoding import Encoder
    from moelora.engine.generation import DecodingSettings, generate_predictions
    from moelora.method.tasks import TaskMap

    gen = GOLDEN["generation"]
    width = len(GOLDEN["prompts"]["input_ids"][0])
    enc = Encoder(
        tok, TaskMap(["CMeIE"]), max_source_length=64, max_target_length=16, add_special_tokens=True
    )
    records = [
        {"input": p, "target": "", "task_dataset": "CMeIE", "sample_id": str(i)}
        for i, p in enumerate(GOLDEN["prompts"]["texts"])
    ]
    assert enc.collate_generate(records)["input_ids"].tolist() == GOLDEN["prompts"]["input_ids"]
    out = generate_predictions(
        model,
        enc,
        records,
        seed=0,
        progress=False,
        decoding=DecodingSettings(
            mode="greedy", batch_size=2, max_new_tokens=gen["max_new_tokens"]
        ),
    )
    want = [tok.decode(seq[width:], skip_special_tokens=True).strip() for seq in gen["sequences"]]
    assert [p["target"] for p in out.predictions] == want
    assert any(want)
