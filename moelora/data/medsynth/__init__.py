"""MedSynth-8: the embedded, generated mini benchmark in PromptCBLUE format, and its tiny
pre-trained base model (docs/medsynth.md).

Public API:
    build_dataset(out_dir, *, scale, eval_scale, seed) -> Path
    build_base(data_dir, out_dir, *, seed, ...) -> Path
    build_tiny_fixture(out_dir, *, scale, eval_scale) -> (data_dir, tokenizer_dir)
"""

from __future__ import annotations

import json
from pathlib import Path

from moelora.data.medsynth.build import (
    DEFAULT_EVAL_SCALE,
    DEFAULT_SCALE,
    GENERATOR_VERSION,
    build_dataset,
)
from moelora.data.medsynth.generators import EVAL_SIZES, GENERATORS, TRAIN_SIZES, split_sizes
from moelora.data.medsynth.pretrain import BaseConfig, build_base


def build_tiny_fixture(
    out_dir: str | Path, *, scale: float = 0.005, eval_scale: float = 0.005, seed: int = 0
) -> tuple[Path, Path]:
    """A small dataset plus its tokenizer, in about a second, for tests (no pre-training).

    Builds ``out_dir/data`` (``build_dataset`` with a 20k-character corpus) and
    ``out_dir/tokenizer`` (the char-level tokenizer trained on it). Tests build a
    random-init tiny ``LlamaForCausalLM`` with ``vocab_size=len(tokenizer)`` on top.

    Returns:
        ``(data_dir, tokenizer_dir)``.
    """
    from moelora.data.medsynth.tokenizer import build_tokenizer

    out = Path(out_dir)
    data_dir = build_dataset(
        out / "data",
        scale=scale,
        eval_scale=eval_scale,
        seed=seed,
        corpus_chars=20_000,
        verbose=False,
    )
    tok_dir = out / "tokenizer"
    stamp = tok_dir / "data_hash.txt"
    data_hash = json.loads((data_dir / "meta.json").read_text(encoding="utf-8"))["input_hash"]
    if not stamp.is_file() or stamp.read_text(encoding="utf-8") != data_hash:
        build_tokenizer(data_dir, tok_dir)
        stamp.write_text(data_hash, encoding="utf-8")
    return data_dir, tok_dir


__all__ = [
    "DEFAULT_EVAL_SCALE",
    "DEFAULT_SCALE",
    "EVAL_SIZES",
    "GENERATORS",
    "GENERATOR_VERSION",
    "TRAIN_SIZES",
    "BaseConfig",
    "build_base",
    "build_dataset",
    "build_tiny_fixture",
    "split_sizes",
]
