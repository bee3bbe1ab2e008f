"""Set-up and loading per family: ChatGLM2/3 and original GLM-4 folders refused with the fix,
a BOS where the family's tokenizer adds one (model.add_special_tokens=auto)."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from moelora.models.loading import adds_bos, check_native_version, resolve_special_tokens

GLM4_ORIGINAL = {  # THUDM/glm-4-9b's config.json fields (abridged)
    "model_type": "chatglm",
    "num_layers": 40,
    "padded_vocab_size": 151552,
    "hidden_size": 4096,
    "ffn_hidden_size": 13696,
    "kv_channels": 128,
    "multi_query_attention": True,
    "multi_query_group_num": 2,
}


def test_chatglm2_3_and_original_glm4_are_refused_with_the_fix(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(GLM4_ORIGINAL))
    with pytest.raises(ValueError, match="glm-4-9b-hf") as err:
        check_native_version(tmp_path)
    assert str(tmp_path / "config.json") in str(err.value) and "ChatGLM2" in str(err.value)


def test_chatglm_6b_v1_passes(tiny_chatglm):
    check_native_version(tiny_chatglm)


def test_the_loaders_refuse_before_reading_weights(tmp_path):
    from moelora.models.loading import load_base_model

    (tmp_path / "config.json").write_text(json.dumps(GLM4_ORIGINAL))
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ValueError, match="ChatGLM2"):
        load_base_model(tmp_path)


def _tokenizer(template: str | None) -> PreTrainedTokenizerFast:
    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, "a": 3, "b": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if template:
        tok.post_processor = processors.TemplateProcessing(
            single=template, special_tokens=[("<s>", 0), ("</s>", 1)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def test_auto_adds_a_bos_only_where_the_tokenizer_does():
    llama3_like = _tokenizer("<s> $A")
    assert adds_bos(llama3_like) and resolve_special_tokens("auto", llama3_like) is True
    qwen_like = _tokenizer(None)
    assert not adds_bos(qwen_like) and resolve_special_tokens("auto", qwen_like) is False
    both = _tokenizer("<s> $A </s>")  # an EOS at the end of a prompt: not for a causal LM
    assert not adds_bos(both)
    assert resolve_special_tokens(True, qwen_like) is True
    with pytest.raises(ValueError, match="true, false or auto"):
        resolve_special_tokens("yes", qwen_like)
