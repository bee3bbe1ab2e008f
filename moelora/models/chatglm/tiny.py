"""A tiny ChatGLM-6B checkpoint, in the released checkpoint's exact file layout, for tests.

:func:`build_tiny_checkpoint` writes what THUDM/chatglm-6b ships, at toy size: ``config.json``
(with its ``auto_map``), ``tokenizer_config.json`` (with its ``auto_map`` and
``num_image_tokens``), ``ice_text.model`` (a SentencePiece model trained here with ChatGLM's
special, newline, tab and blank pieces) and sharded ``pytorch_model-*.bin`` files with their
index, holding the original state-dict names (``rotary_emb.inv_freq`` included). Everything is
deterministic: the SentencePiece trainer runs on one thread over project-generated text, and
the weights come from a seeded generator, so the original code (experiments/chatglm_oracle.py)
and the native port see the same checkpoint. :func:`fixture_digest` fingerprints it, so a test
can tell a changed fixture from a changed model.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

# ChatGLM's pieces, as its SPTokenizer writes them into the text before SentencePiece runs.
MAX_BLANK_LENGTH = 80
SPECIAL_PIECES = (
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<unused_0>",
    "<sop>",
    "<eop>",
    "<ENC>",
    "<dBLOCK>",
)
FORMAT_PIECES = ("<n>", "<|tab|>", *(f"<|blank_{k}|>" for k in range(2, MAX_BLANK_LENGTH + 1)))

# The sizes of issue #15's oracle: hidden 64, 2 layers, 4 heads.
TINY_SIZES: dict[str, int] = {
    "hidden_size": 64,
    "num_layers": 2,
    "num_attention_heads": 4,
    "inner_hidden_size": 256,
    "max_sequence_length": 512,
}

# MedSynth-8 corpus lines the tiny vocabulary is trained on (rarer characters fall back to bytes).
NUM_CORPUS_LINES = 60

# Output projections are scaled up and LayerNorm gains down, so attention and MLP compete with the
# α-scaled residual (the head is tied to the embedding):
# the random model's greedy continuations then vary with the prompt instead of repeating it.
OUTPUT_GAIN = 8.0
NORM_GAIN = 0.3
# Final LayerNorm gain: keeps the tied head's logits at a few units, so fp32 rounding stays far
# below the 1e-5 parity threshold.
FINAL_NORM_GAIN = 0.25

# English lines so the tiny vocabulary has Latin pieces (the Chinese comes from MedSynth-8).
_ENGLISH = (
    "The patient reports a persistent cough and mild fever for three days.",
    "Blood pressure is 130/85 mmHg; heart rate 88 beats per minute.",
    "Please describe the symptoms, their onset and any medication taken.",
    "Diagnosis: acute bronchitis. Treatment: rest, fluids and follow-up in one week.",
    "def main():\n    return 0\n",
    "Tabs\tand  double  spaces   are encoded as blank pieces.",
)


def _corpus_lines() -> list[str]:
    from moelora.data.medsynth.corpus import build_corpus
    from moelora.data.medsynth.kb import load_kb

    text = build_corpus(load_kb(), seed=0, num_chars=0)  # every fact once
    lines = [line for line in text.splitlines() if line]
    return lines[:NUM_CORPUS_LINES] + list(_ENGLISH) * 20


def train_sentencepiece(path: Path, *, vocab_size: int = 800) -> Path:
    """Train ``ice_text.model``: ids 0-3 are ``<unk> <s> </s> <pad>`` as in ChatGLM-6B, then
    the special and formatting pieces, 256 byte pieces, then learned pieces."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus_lines()),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=0.98,
        byte_fallback=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=3,
        unk_piece="<unk>",
        bos_piece="<s>",
        eos_piece="</s>",
        pad_piece="<pad>",
        user_defined_symbols=list(SPECIAL_PIECES + FORMAT_PIECES),
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        split_digits=True,
        num_threads=1,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    path.write_bytes(buf.getvalue())
    return path


def tiny_state_dict(config: dict[str, Any], *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded weights under the original names, keys in the checkpoint's order.

    Linear weights ~ N(0, 1/fan_in) (output projections × OUTPUT_GAIN), embeddings ~ N(0, 1)
    (shared with ``lm_head``), LayerNorm gains NORM_GAIN + N(0, 0.1²) and
    biases ~ N(0, 0.02²): large enough that the logits and greedy generations of the random
    model differ from token to token. ``inv_freq`` is stored (fp16) as in the release, where
    the original code ignores it on load.
    """
    g = torch.Generator().manual_seed(seed)
    h, inner, heads = (
        config["hidden_size"],
        config["inner_hidden_size"],
        config["num_attention_heads"],
    )
    rotary_dim = h // (2 * heads)

    def normal(*shape: int, std: float, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std + mean

    sd: dict[str, torch.Tensor] = {
        "transformer.word_embeddings.weight": normal(config["vocab_size"], h, std=1.0)
    }
    inv_freq = (1.0 / (10000 ** (torch.arange(0, rotary_dim, 2).float() / rotary_dim))).half()
    for i in range(config["num_layers"]):
        p = f"transformer.layers.{i}."
        linears = {
            "attention.query_key_value": (3 * h, h),
            "attention.dense": (h, h),
            "mlp.dense_h_to_4h": (inner, h),
            "mlp.dense_4h_to_h": (h, inner),
        }
        for norm in ("input_layernorm", "post_attention_layernorm"):
            sd[p + norm + ".weight"] = normal(h, std=0.1, mean=NORM_GAIN)
            sd[p + norm + ".bias"] = normal(h, std=0.02)
        for name, (out_f, in_f) in linears.items():
            gain = OUTPUT_GAIN if name in ("attention.dense", "mlp.dense_4h_to_h") else 1.0
            sd[p + name + ".weight"] = normal(out_f, in_f, std=gain * in_f**-0.5)
            sd[p + name + ".bias"] = normal(out_f, std=0.02)
        sd[p + "attention.rotary_emb.inv_freq"] = inv_freq.clone()
    sd["transformer.final_layernorm.weight"] = normal(h, std=0.05, mean=FINAL_NORM_GAIN)
    sd["transformer.final_layernorm.bias"] = normal(h, std=0.02)
    sd["lm_head.weight"] = sd["transformer.word_embeddings.weight"].clone()  # tied, as released
    # the original keeps embeddings and linears in fp16: fp16-exact values load unchanged
    return {
        k: v.half().to(v.dtype) if k.endswith("weight") or k.endswith("bias") else v
        for k, v in sd.items()
    }


def save_sharded_bin(
    state_dict: dict[str, torch.Tensor], out_dir: Path, *, num_shards: int
) -> None:
    """Write ``pytorch_model-0000k-of-0000n.bin`` shards and their index, as the release does
    (the format under test; the project's own checkpoints are safetensors)."""
    keys = list(state_dict)
    per = -(-len(keys) // num_shards)
    weight_map: dict[str, str] = {}
    total = 0
    for k in range(num_shards):
        name = f"pytorch_model-{k + 1:05d}-of-{num_shards:05d}.bin"
        shard = {key: state_dict[key].contiguous() for key in keys[k * per : (k + 1) * per]}
        torch.save(shard, out_dir / name)
        weight_map.update(dict.fromkeys(shard, name))
        total += sum(t.numel() * t.element_size() for t in shard.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / "pytorch_model.bin.index.json").write_text(json.dumps(index, indent=2) + "\n")


def build_tiny_checkpoint(
    out_dir: str | Path,
    *,
    num_image_tokens: int = 0,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    num_shards: int = 8,
) -> Path:
    """Write a tiny ChatGLM-6B directory in the release's layout and return its path.

    Args:
        out_dir: created if missing.
        num_image_tokens: ``tokenizer_config.json``'s offset of the text ids (0 in the
            current release, 20000 in the first one).
        seed: weight seed.
        sizes: overrides of :data:`TINY_SIZES` (e.g. a larger model for a speed check).
        num_shards: number of ``.bin`` shards.
    """
    import sentencepiece as spm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sp = spm.SentencePieceProcessor(model_file=str(train_sentencepiece(out / "ice_text.model")))

    def tid(piece: str) -> int:
        return sp.piece_to_id(piece) + num_image_tokens

    config = {
        "_name_or_path": "THUDM/chatglm-6b",
        "architectures": ["ChatGLMModel"],
        "auto_map": {
            "AutoConfig": "configuration_chatglm.ChatGLMConfig",
            "AutoModel": "modeling_chatglm.ChatGLMForConditionalGeneration",
            "AutoModelForSeq2SeqLM": "modeling_chatglm.ChatGLMForConditionalGeneration",
        },
        "bos_token_id": tid("<sop>"),
        "eos_token_id": tid("<eop>"),
        "mask_token_id": tid("[MASK]"),
        "gmask_token_id": tid("[gMASK]"),
        "pad_token_id": tid("<pad>"),
        **TINY_SIZES,
        **(sizes or {}),
        "layernorm_epsilon": 1e-05,
        "model_type": "chatglm",
        "position_encoding_2d": True,
        "torch_dtype": "float32",
        "transformers_version": "4.23.1",
        "use_cache": True,
        "vocab_size": num_image_tokens + sp.get_piece_size(),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tokenizer_config = {
        "name_or_path": "THUDM/chatglm-6b",
        "bos_token": "<sop>",
        "eos_token": "<eop>",
        "end_token": "</s>",
        "gmask_token": "[gMASK]",
        "mask_token": "[MASK]",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "remove_space": False,
        "do_lower_case": False,
        "tokenizer_class": "ChatGLMTokenizer",
        "num_image_tokens": num_image_tokens,
        "auto_map": {"AutoTokenizer": ["tokenization_chatglm.ChatGLMTokenizer", None]},
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    save_sharded_bin(tiny_state_dict(config, seed=seed), out, num_shards=num_shards)
    return out


def fixture_digest(ckpt_dir: str | Path) -> dict[str, str]:
    """sha256 of the SentencePiece model and of the weights (tensor bytes, key order)."""
    from moelora.models.chatglm.checkpoint import load_original_state_dict

    ckpt = Path(ckpt_dir)
    weights = hashlib.sha256()
    for key, tensor in load_original_state_dict(ckpt).items():
        weights.update(key.encode())
        weights.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return {
        "ice_text.model": hashlib.sha256((ckpt / "ice_text.model").read_bytes()).hexdigest(),
        "weights": weights.hexdigest(),
    }
