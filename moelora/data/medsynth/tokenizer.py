"""Subword (BPE) tokenizer for the MedSynth-8 base model (docs/medsynth.md §5).

Trained with HF ``tokenizers``: byte-pair merges learned on the base model's pre-training text
(``corpus.txt`` and the unlabelled inputs of the training split, :func:`pretraining_texts`),
over an initial alphabet of every character of the corpus, of all three splits and of printable
ASCII, so no character of the data is ever ``<unk>`` (character-level
coverage) while frequent words, entity names, labels and template phrases become one or two
tokens. Punctuation, whitespace, digits and ASCII letters are isolated before the merges, so a
merge never crosses a delimiter and an entity is tokenised the same way in a prompt and in an
answer (copying an entity is copying its token or two). Saved as a ``PreTrainedTokenizerFast``
so ``AutoTokenizer.from_pretrained(dir)`` loads it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from moelora.utils.io import read_jsonl

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
ASCII_PRINTABLE = "".join(chr(c) for c in range(32, 127)) + "\n\t"
DEFAULT_VOCAB_SIZE = 3000
# One pre-token per delimiter: whitespace, punctuation, symbols, digits and ASCII letters.
ISOLATED = r"[\s\p{P}\p{S}0-9A-Za-z]"


def lexicon() -> list[str]:
    """The benchmark's terms, each kept whole by the pre-tokenizer (longest first): every
    knowledge-base name (diseases, aliases, symptoms and their core words and sites, drugs,
    examinations, departments) and every label and answer field of the eight tasks. A merge
    never joins a term to its neighbours, so a term is tokenised alike wherever it stands."""
    from moelora.data.medsynth.classification import CTC_LABELS, NOT_LISTED, QIC_LABELS
    from moelora.data.medsynth.dialogue import MDCFNPC_CHOICES, MRG_SECTIONS
    from moelora.data.medsynth.extraction import (
        CDEE_FIELDS,
        CDEE_STATUSES,
        CDN_NONE,
        CMEIE_RELATIONS,
    )
    from moelora.data.medsynth.kb import load_kb

    kb = load_kb()
    terms = {d.name for d in kb.diseases} | {a for d in kb.diseases for a in d.aliases}
    terms |= {d.site for d in kb.diseases} | set(kb.symptoms) | set(kb.drugs) | set(kb.exams)
    terms |= {x for s in kb.symptoms.values() for x in (s.core, s.site) if x}
    terms |= set(kb.departments) | set(CTC_LABELS) | set(QIC_LABELS) | set(MDCFNPC_CHOICES)
    terms |= set(CMEIE_RELATIONS) | set(CDEE_FIELDS) | set(CDEE_STATUSES) | set(MRG_SECTIONS)
    terms |= {NOT_LISTED, CDN_NONE}
    return sorted((t for t in terms if len(t) > 1), key=lambda t: (-len(t), t))


def _records(data_dir: Path, split: str) -> list[dict[str, Any]]:
    path = data_dir / f"{split}.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; build the data first (python -m moelora.data.medsynth data)"
        )
    return read_jsonl(path)


def _record_texts(r: dict[str, Any]) -> list[str]:
    return [r["input"], r["target"], *(r.get("answer_choices") or [])]


def data_texts(data_dir: str | Path) -> list[str]:
    """Every text the tokenizer must cover: the corpus and all inputs, targets and options."""
    data_dir = Path(data_dir)
    texts = [(data_dir / "corpus.txt").read_text(encoding="utf-8")]
    for split in ("train", "dev", "test"):
        for r in _records(data_dir, split):
            texts += _record_texts(r)
    return texts


ANSWER_CUE = "答："


def _without_answer_cue(prompt: str) -> str:
    """``prompt`` without its trailing answer cue (and the line break before it)."""
    return prompt.removesuffix(ANSWER_CUE).rstrip("\n") if prompt.endswith(ANSWER_CUE) else prompt


def pretraining_texts(data_dir: str | Path) -> list[str]:
    """What the base model is pre-trained on, one paragraph each: every line of ``corpus.txt``
    and the *inputs* of the training split (unlabelled: no target is ever included), in a fixed
    shuffled order. The training inputs are task-adaptive pre-training text (the prompts' words,
    line breaks and layouts); the merges are learned from the same texts, so every token of the
    vocabulary is one the base has been trained on.

    Each input loses its final answer cue (``答：``): every paragraph ends with EOS, and a base that
    has seen the cue followed by EOS answers every prompt with nothing (measured with the cue
    kept: in-context learning gave an empty answer to 714 of the 715 test prompts). The cue itself
    is pre-trained in the corpus's question lines (``…？答：…``, ``corpus._faq_paragraph``), where
    an answer follows it."""
    import random

    data_dir = Path(data_dir)
    texts = [
        line for line in (data_dir / "corpus.txt").read_text(encoding="utf-8").splitlines() if line
    ]
    texts += [_without_answer_cue(r["input"]) for r in _records(data_dir, "train")]
    random.Random("medsynth-pretraining-order").shuffle(texts)
    return texts


def train_tokenizer(
    merge_on: Iterable[str], cover: Iterable[str], *, vocab_size: int = DEFAULT_VOCAB_SIZE
) -> Any:
    """Train the BPE ``tokenizers.Tokenizer`` (deterministic for the same texts).

    Args:
        merge_on: texts whose pair counts decide the merges.
        cover: texts whose every character must be in the alphabet (never ``<unk>``).
        vocab_size: the vocabulary size, special tokens and alphabet included.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    alphabet = sorted({c for text in cover for c in text} | set(ASCII_PRINTABLE))
    if vocab_size < len(alphabet) + len(SPECIAL_TOKENS):
        raise ValueError(
            f"vocab_size={vocab_size} is smaller than the alphabet "
            f"({len(alphabet)} characters + {len(SPECIAL_TOKENS)} special tokens)"
        )
    tok = Tokenizer(models.BPE(unk_token=UNK))
    terms = "|".join(re.escape(t) for t in lexicon())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(terms), behavior="isolated"),
            pre_tokenizers.Split(Regex(ISOLATED), behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Fuse()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet),
        show_progress=False,
    )
    tok.train_from_iterator(list(merge_on), trainer=trainer)
    vocab = tok.get_vocab()
    missing = [c for c in alphabet if c not in vocab]
    if missing:
        raise RuntimeError(
            f"tokenizer training left characters out of the vocabulary: {missing[:10]}"
        )
    return tok


def to_hf(tok: Any) -> Any:
    """Wrap as a ``PreTrainedTokenizerFast`` with pad/bos/eos/unk set."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )


def build_tokenizer(
    data_dir: str | Path, out_dir: str | Path, *, vocab_size: int = DEFAULT_VOCAB_SIZE
) -> Any:
    """Train on ``data_dir`` (merges: :func:`pretraining_texts`; alphabet: every character of
    the data) and save into ``out_dir``; returns the HF tokenizer."""
    hf = to_hf(
        train_tokenizer(pretraining_texts(data_dir), data_texts(data_dir), vocab_size=vocab_size)
    )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out_dir))
    return hf
