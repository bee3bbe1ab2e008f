"""Character-level tokenizer for the MedSynth-8 base model (spec/medsynth.md §5).

Trained with HF ``tokenizers`` (a ``WordLevel`` model over single characters), so every
character of the data is one token: prompt and target lengths in characters are their
lengths in tokens. The vocabulary holds the special tokens, printable ASCII, and every
character of the corpus and of the three splits, ordered by frequency then code point.
Saved as a ``PreTrainedTokenizerFast`` so ``AutoTokenizer.from_pretrained(dir)`` loads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from moelora.io import read_jsonl

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
ASCII_PRINTABLE = "".join(chr(c) for c in range(32, 127)) + "\n\t"


def data_texts(data_dir: str | Path) -> list[str]:
    """Every text the tokenizer must cover: the corpus and all inputs, targets and options."""
    data_dir = Path(data_dir)
    texts = [(data_dir / "corpus.txt").read_text(encoding="utf-8")]
    for split in ("train", "dev", "test"):
        path = data_dir / f"{split}.jsonl"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: missing; build the data first (python -m moelora.medsynth data)"
            )
        for r in read_jsonl(path):
            texts += [r["input"], r["target"], *(r.get("answer_choices") or [])]
    return texts


def train_tokenizer(texts: Iterable[str]) -> Any:
    """Train the char-level ``tokenizers.Tokenizer`` (deterministic for the same texts).

    Each character is its own pre-token (``[\\s\\S]`` split, isolated), so the
    ``WordLevel`` trainer counts characters; ``Fuse`` joins tokens back without spaces.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    trainer = trainers.WordLevelTrainer(
        vocab_size=1_000_000,
        min_frequency=0,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
    )
    # Counting through the trainer keeps the HF pipeline; ASCII is added once so it is always covered.
    tok.train_from_iterator([*texts, ASCII_PRINTABLE], trainer=trainer)
    # Re-index deterministically: specials first, then by (-count, code point).
    counts: dict[str, int] = {}
    for text in [*texts, ASCII_PRINTABLE]:
        for ch in text:
            counts[ch] = counts.get(ch, 0) + 1
    chars = sorted(counts, key=lambda c: (-counts[c], ord(c)))
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for ch in chars:
        if ch not in vocab:
            vocab[ch] = len(vocab)
    trained = set(tok.get_vocab())
    missing = [c for c in chars if c not in trained]
    if missing:
        raise RuntimeError(f"tokenizer training missed characters {missing[:10]}")
    final = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    final.pre_tokenizer = tok.pre_tokenizer
    final.decoder = tok.decoder
    return final


def to_hf(tok: Any) -> Any:
    """Wrap as a ``PreTrainedTokenizerFast`` with pad/bos/eos/unk set."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )
    return hf


def build_tokenizer(data_dir: str | Path, out_dir: str | Path) -> Any:
    """Train on ``data_dir`` (corpus + splits) and save into ``out_dir``; returns the HF tokenizer."""
    hf = to_hf(train_tokenizer(data_texts(data_dir)))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out_dir))
    return hf
