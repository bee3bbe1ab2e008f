"""ROUGE through the real packages (docs/evaluation.md §4.3, §6.1).

* Official: transformers' BERT ``BasicTokenizer(tokenize_chinese_chars=True)`` splits each side
  into characters / punctuation / Latin-digit runs, tokens joined by spaces, an empty side
  becomes ``无 。``, then ``rouge_chinese.Rouge().get_scores(hyps, refs, avg=True)``.
* Authors' (``moelora_compat``): ``jieba.cut`` words joined by spaces, scored pair by pair with
  pltrdy ``rouge`` 1.0.1. jieba and rouge are imported only when this mode runs.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

EMPTY_TOKENS = "无 。"


@functools.lru_cache(maxsize=1)
def _basic_tokenizer() -> Any:
    try:
        from transformers import BasicTokenizer
    except ImportError:  # where transformers 5.x keeps it
        from transformers.models.bert.tokenization_bert_legacy import BasicTokenizer
    return BasicTokenizer(tokenize_chinese_chars=True)


def char_tokens(text: str) -> str:
    """BasicTokenizer tokens joined by single spaces, or ``无 。`` when there are none."""
    joined = " ".join(_basic_tokenizer().tokenize(text)).strip()
    return joined if joined else EMPTY_TOKENS


def official_rouge(hyps: list[str], refs: list[str]) -> dict[str, dict[str, float]]:
    """Mean per-pair ROUGE-1/2/L (``{"rouge-l": {"f", "p", "r"}, ...}``) of raw texts, scored as
    the official ``calc_nlg_task_scores``; needs at least one pair."""
    from rouge_chinese import Rouge

    return Rouge().get_scores(
        [char_tokens(h) for h in hyps], [char_tokens(r) for r in refs], avg=True
    )


@functools.lru_cache(maxsize=1)
def _jieba() -> Any:
    import jieba

    jieba.setLogLevel(logging.WARNING)  # silence "Building prefix dict ..." on first use
    return jieba


def jieba_words(text: str) -> str:
    """``" ".join(jieba.cut(text))`` (accurate mode, HMM on), as the authors' scorer does."""
    return " ".join(_jieba().cut(text))


def compat_rouge_l(hyp: str, ref: str) -> dict[str, float]:
    """pltrdy ``rouge`` 1.0.1 ROUGE-L ``{"f", "p", "r"}`` of two already-segmented strings.

    Raises whatever the package raises (ValueError on an empty side); callers turn that into
    an undefined score.
    """
    from rouge import Rouge

    return Rouge().get_scores(hyp, ref)[0]["rouge-l"]
