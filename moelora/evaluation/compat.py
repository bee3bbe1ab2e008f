"""``moelora_compat``: the MOELoRA authors' scorer (MOELoRA-peft ``results/evaluation.py`` as run
by ``results/evaluate.ipynb``; docs/evaluation.md §6.1), from aligned structured answers.

* CHIP-CTC (and STS/IR/QQR/QTR): micro-F1 = accuracy, after replacing ``(医生检测)`` by
  ``(医生检测）`` in CTC predictions; QIC/DAC: macro-F1. An empty prediction stays ``""``.
* Extraction: list-based counting (duplicates count); TP = 0 makes their code divide by zero,
  reported here as undefined.
* MedDG: jieba words + ``rouge`` 1.0.1 ROUGE-L per sample, an empty prediction becomes ``-``,
  mean over samples; an empty reference makes ``rouge`` raise, reported as undefined.
* IMCS-V2-MRG: for each gold section, ``-`` + words of both sides, or 0 if the prediction lacks
  the section; mean over the sample's gold sections, then over samples.
"""

from __future__ import annotations

from typing import Any

from moelora.evaluation.metrics import compat_classification_prf, compat_micro_prf, list_counts
from moelora.evaluation.registry import COMPAT_TASK_METRIC, TASK_KIND
from moelora.evaluation.result import TaskResult
from moelora.evaluation.rouge import compat_rouge_l, jieba_words

CTC_FIX = ("(医生检测)", "(医生检测）")  # the authors' process_CTC


def _undefined(metric: str, keys: tuple[str, ...], reason: str) -> TaskResult:
    return TaskResult(None, {k: None for k in (*keys, metric)}, reason)


def _rouge_or_reason(hyp: str, ref: str, sid: str) -> dict[str, float] | str:
    try:
        return compat_rouge_l(hyp, ref)
    except (ValueError, ZeroDivisionError, RecursionError) as e:
        return f"undefined (rouge 1.0.1 raised {type(e).__name__}: {e} on sample_id {sid!r})"


def score_task(task: str, gold: list[Any], pred: list[Any], ids: list[str]) -> TaskResult:
    kind, metric = TASK_KIND[task], COMPAT_TASK_METRIC[task]
    if kind == "ie":
        counts = list_counts(gold, pred)
        prf = compat_micro_prf(counts)
        if prf is None:
            why = "no predicted items" if counts.fp == 0 else "no predicted item is correct"
            return _undefined(
                metric,
                ("precision", "recall"),
                f"undefined (TP=0): {why}; the authors' scorer raises ZeroDivisionError here",
            )
        p, r, f = prf
        return TaskResult(f, {"precision": p, "recall": r, metric: f})
    if kind == "cls":
        y_pred = list(pred)
        if task == "CHIP-CTC":
            y_pred = [y.replace(*CTC_FIX) for y in y_pred]
        average = "macro" if metric == "macro_f1" else "micro"
        p, r, f = compat_classification_prf(list(gold), y_pred, average)
        return TaskResult(f, {"precision": p, "recall": r, metric: f})
    keys = ("rouge_l_precision", "rouge_l_recall")
    n = len(pred)
    f1 = precision = recall = 0.0
    if kind == "meddg":
        for sid, g, p in zip(ids, gold, pred):
            if not g:
                return _undefined(
                    metric,
                    keys,
                    f"undefined (empty MedDG reference on sample_id "
                    f"{sid!r}): rouge 1.0.1 raises on an empty reference",
                )
            sc = _rouge_or_reason(jieba_words(p if p else "-"), jieba_words(g), sid)
            if isinstance(sc, str):
                return _undefined(metric, keys, sc)
            f1 += sc["f"] / n
            precision += sc["p"] / n
            recall += sc["r"] / n
        return TaskResult(f1, {keys[0]: precision, keys[1]: recall, metric: f1})
    for sid, g, p in zip(ids, gold, pred):  # mrg
        per_f1 = per_p = per_r = 0.0
        for key in g:
            if key in p:
                sc = _rouge_or_reason("-" + jieba_words(p[key]), "-" + jieba_words(g[key]), sid)
                if isinstance(sc, str):
                    return _undefined(metric, keys, sc)
            else:
                sc = {"f": 0, "p": 0, "r": 0}
            per_f1 += sc["f"] / len(g)
            per_p += sc["p"] / len(g)
            per_r += sc["r"] / len(g)
        f1 += per_f1 / n
        precision += per_p / n
        recall += per_r / n
    return TaskResult(f1, {keys[0]: precision, keys[1]: recall, metric: f1})
