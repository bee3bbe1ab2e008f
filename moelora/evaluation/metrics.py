"""Micro-F1 for extraction and sklearn-based classification scores.

docs/evaluation.md §4.1, §4.2, §6.1.

Official: set-based micro P/R/F1 (0 when TP = 0) and ``classification_report`` macro or weighted
averages. Authors' (``moelora_compat``): list-based counting, undefined when TP = 0 (their code
divides by zero), and ``precision_recall_fscore_support`` micro/macro averages.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Counts:
    tp: int
    fp: int
    fn: int


def item_key(item: dict[str, Any]) -> tuple[str, ...]:
    """An item's identity: ``json.dumps`` of its values in sorted-key order (lists keep order)."""
    return tuple(json.dumps(item[k], ensure_ascii=False) for k in sorted(item))


def set_counts(gold: Sequence[list[dict]], pred: Sequence[list[dict]]) -> Counts:
    """Official counting: per sample, items deduplicated into sets; TP/FP/FN summed."""
    tp = fp = fn = 0
    for g_items, p_items in zip(gold, pred, strict=True):
        g = {item_key(i) for i in g_items}
        p = {item_key(i) for i in p_items}
        tp += len(g & p)
        fp += len(p - g)
        fn += len(g - p)
    return Counts(tp, fp, fn)


def micro_prf(counts: Counts) -> tuple[float, float, float]:
    """Official micro P, R, F1; all 0 when TP = 0 (no predictions, no gold items, or no hit)."""
    tp, fp, fn = counts.tp, counts.fp, counts.fn
    if not tp:
        return 0.0, 0.0, 0.0
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    return precision, recall, 2 * precision * recall / (precision + recall)


def list_counts(gold: Sequence[list[dict]], pred: Sequence[list[dict]]) -> Counts:
    """Authors' counting (MOELoRA-peft ``calculate_ner_f1``): each gold item found in the
    prediction list is a TP (else FN), each predicted item absent from the gold list is an FP.
    Duplicated gold items count each time; duplicated wrong predictions are several FPs."""
    tp = fp = fn = 0
    for g_items, p_items in zip(gold, pred, strict=True):
        for item in g_items:
            if item in p_items:
                tp += 1
            else:
                fn += 1
        fp += sum(1 for item in p_items if item not in g_items)
    return Counts(tp, fp, fn)


def compat_micro_prf(counts: Counts) -> tuple[float, float, float] | None:
    """Authors' micro P, R, F1, or None where their code raises ZeroDivisionError (TP = 0)."""
    tp, fp, fn = counts.tp, counts.fp, counts.fn
    if not tp:
        return None
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    return precision, recall, 2 * precision * recall / (precision + recall)


def classification_prf(
    y_true: list[str], y_pred: list[str], average: str
) -> tuple[float, float, float]:
    """Official: ``classification_report(..., output_dict=True, zero_division=0)`` without
    ``labels=``, so the classes are the sorted union of gold and predicted strings.

    Args:
        average: ``"macro"`` or ``"weighted"``.
    """
    from sklearn.metrics import classification_report

    report = classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    avg = report[f"{average} avg"]
    return float(avg["precision"]), float(avg["recall"]), float(avg["f1-score"])


def compat_classification_prf(
    y_true: list[str], y_pred: list[str], average: str
) -> tuple[float, float, float]:
    """Authors': ``precision_recall_fscore_support(average=...)`` with the default
    ``zero_division`` (warns, then 0). ``average="micro"`` is accuracy for single-label data."""
    import numpy as np
    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import precision_recall_fscore_support

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        p, r, f, _ = precision_recall_fscore_support(
            y_pred=np.array(y_pred), y_true=np.array(y_true), average=average
        )
    return float(p), float(r), float(f)
