"""Official PromptCBLUE per-task scores from aligned structured answers (docs/evaluation.md §3, §4).

Mirrors ``src/evaluation/evaluators.py``: set-based micro-F1 (``calc_info_extract_task_scores``),
``classification_report`` macro/weighted averages (``calc_cls_task_scores``), per-pair ROUGE for
MedDG (``calc_nlg_task_scores``) and per-(sample, gold section) pairs for IMCS-V2-MRG
(``calc_nlg_task_scores_by_sessions``).
"""

from __future__ import annotations

from typing import Any

from moelora.evaluation.errors import ScoringError
from moelora.evaluation.metrics import classification_prf, micro_prf, set_counts
from moelora.evaluation.registry import EMPTY_FALLBACK, TASK_KIND, TASK_METRIC
from moelora.evaluation.result import TaskResult
from moelora.evaluation.rouge import official_rouge


def _rouge_result(hyps: list[str], refs: list[str]) -> TaskResult:
    s = official_rouge(hyps, refs)
    return TaskResult(
        s["rouge-l"]["f"],
        {
            "rouge_1": s["rouge-1"]["f"],
            "rouge_2": s["rouge-2"]["f"],
            "rouge_l": s["rouge-l"]["f"],
            "rouge_l_precision": s["rouge-l"]["p"],
            "rouge_l_recall": s["rouge-l"]["r"],
        },
    )


def score_task(task: str, gold: list[Any], pred: list[Any], ids: list[str]) -> TaskResult:
    """Score one task. ``gold``/``pred`` are the structured answers in gold order, ``ids`` their
    sample ids (for messages)."""
    kind, metric = TASK_KIND[task], TASK_METRIC[task]
    if kind == "ie":
        p, r, f = micro_prf(set_counts(gold, pred))
        return TaskResult(f, {"precision": p, "recall": r, metric: f})
    if kind == "cls":
        empty = [sid for sid, g in zip(ids, gold) if g == ""]
        if empty:
            raise ScoringError(
                f"{task}: {len(empty)} gold label(s) are empty (e.g. sample_id {empty[0]!r}); the "
                "official scorer asserts a non-empty gold label. Is the gold a split without "
                "targets (such as the toy test.json)?"
            )
        y_pred = [p if p != "" else EMPTY_FALLBACK[task] for p in pred]
        average = "macro" if metric == "macro_f1" else "weighted"
        p, r, f = classification_prf(list(gold), y_pred, average)
        return TaskResult(f, {"precision": p, "recall": r, metric: f})
    if kind == "meddg":
        return _rouge_result(list(pred), list(gold))
    # mrg: one pair per section present in each gold report; a missing section is ""
    hyps, refs = [], []
    for g, p in zip(gold, pred):
        for key in g:
            hyps.append(p.get(key, "").strip())
            refs.append(g[key].strip())
    if not refs:
        return TaskResult(
            None,
            {"rouge_1": None, "rouge_2": None, "rouge_l": None},
            "undefined (no gold sections): no (sample, section) pair to score; "
            "the official scorer divides by zero",
        )
    return _rouge_result(hyps, refs)
