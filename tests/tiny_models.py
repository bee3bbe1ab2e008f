"""Tiny random causal LMs of five architecture families, each with a tokenizer that fits it.

Everything is built from config in milliseconds, nothing is downloaded. The tokenizers are
trained on the tiny MedSynth-8 texts and follow their family's conventions:

* Llama, Mistral: the character-level tokenizer (a SentencePiece-like vocabulary) with
  ``<s>``/``</s>``/``<unk>`` and no pad token, as Llama's;
* GPT-2: byte-level BPE, ``<|endoftext|>`` as BOS, EOS and UNK, no pad token;
* Qwen2: byte-level BPE, no BOS, ``<|endoftext|>`` as EOS and pad, the chat markers as
  special tokens; tied input/output embeddings, as the small Qwen2 checkpoints;
* GLM-4: byte-level BPE with GLM-4's special tokens (``[gMASK]``, ``<sop>``, the role
  markers), ``<|endoftext|>`` as EOS and pad.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

ARCHITECTURES = ("llama", "qwen2", "mistral", "gpt2", "glm4")
BLOCK = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=1024,
)
BPE_SPECIALS = {
    "gpt2": ["<|endoftext|>"],
    "qwen2": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
    "glm4": [
        "<|endoftext|>",
        "[MASK]",
        "[gMASK]",
        "[sMASK]",
        "<sop>",
        "<eop>",
        "<|system|>",
        "<|user|>",
        "<|assistant|>",
        "<|observation|>",
    ],
}


def _bpe_tokenizer(texts: list[str], arch: str) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700,
        special_tokens=BPE_SPECIALS[arch],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    eos = "<|endoftext|>"
    specials = {
        "gpt2": dict(bos_token=eos, eos_token=eos, unk_token=eos),
        "qwen2": dict(
            eos_token=eos, pad_token=eos, additional_special_tokens=BPE_SPECIALS["qwen2"][1:]
        ),
        "glm4": dict(
            eos_token=eos, pad_token=eos, additional_special_tokens=BPE_SPECIALS["glm4"][1:]
        ),
    }[arch]
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, clean_up_tokenization_spaces=False, model_max_length=1024, **specials
    )


def build_tokenizer(arch: str, data_dir: Path) -> Any:
    """The fitting tokenizer of ``arch``, trained on the MedSynth-8 texts in ``data_dir``."""
    from transformers import PreTrainedTokenizerFast

    from moelora.data.medsynth.tokenizer import BOS, EOS, UNK, data_texts, train_tokenizer

    texts = data_texts(data_dir)
    if arch in ("llama", "mistral"):
        return PreTrainedTokenizerFast(
            tokenizer_object=train_tokenizer(texts, texts),
            bos_token=BOS,
            eos_token=EOS,
            unk_token=UNK,
            clean_up_tokenization_spaces=False,
            model_max_length=1024,
        )
    return _bpe_tokenizer(texts, arch)


def build_model(arch: str, tokenizer: Any, *, seed: int = 0) -> nn.Module:
    """A random tiny ``arch`` causal LM whose vocabulary and special ids fit ``tokenizer``."""
    import transformers as tf

    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = {
        "llama": lambda: tf.LlamaConfig(**BLOCK, **ids),
        "mistral": lambda: tf.MistralConfig(**BLOCK, **ids),
        "qwen2": lambda: tf.Qwen2Config(**BLOCK, **ids, tie_word_embeddings=True),
        "glm4": lambda: tf.Glm4Config(**BLOCK, **ids, head_dim=8),
        "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=1024, **ids),
    }[arch]()
    torch.manual_seed(seed)
    model = tf.AutoModelForCausalLM.from_config(config).eval()
    model.requires_grad_(False)
    return model


def save_model_dir(arch: str, data_dir: Path, out_dir: Path) -> Path:
    """Save a tiny ``arch`` model with its tokenizer as a standard HF model directory."""
    tokenizer = build_tokenizer(arch, data_dir)
    build_model(arch, tokenizer).save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir
