"""``score_records`` input checks: every problem is a ScoringError that says what and how."""

from __future__ import annotations

import pytest

from moelora.evaluation import (
    ALL_TASKS,
    PAPER_TASKS,
    TASK_METRIC,
    ScoreReport,
    ScoringError,
    main_metric,
    score_records,
)
from tests.test_evaluation_helpers import rec

CHOICES = ["管状腺瘤", "胃炎"]


def _gold() -> list[dict]:
    return [
        rec("CHIP-CDN", "管状腺瘤", "d1", CHOICES),
        rec("KUAKE-QIC", "就医建议", "q1"),
        rec("MedDG", "多喝水。", "m1"),
    ]


def test_matched_by_sample_id_and_scored_in_gold_order():
    gold = _gold()
    report = score_records(gold, list(reversed(gold)))
    assert isinstance(report, ScoreReport)
    assert list(report.scores) == ["CHIP-CDN", "KUAKE-QIC", "MedDG", "avg"]
    assert report.n_samples == {"CHIP-CDN": 1, "KUAKE-QIC": 1, "MedDG": 1}


def test_prediction_uses_its_own_answer_choices():
    gold = _gold()
    pred = [dict(r) for r in gold]
    pred[0]["answer_choices"] = ["胃炎"]  # 管状腺瘤 is no longer a candidate on the pred line
    assert score_records(gold, pred, tasks=["CHIP-CDN"]).scores["CHIP-CDN"] == 0.0


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda p: p.pop(), "have no prediction"),
        (lambda p: p.append(rec("MedDG", "x", "zzz")), "extra sample_id 'zzz'"),
        (lambda p: p.append(dict(p[0])), "duplicate sample_id 'd1'"),
        (lambda p: p[1].update(task_dataset="CHIP-CTC"), "task_dataset 'CHIP-CTC' but 'KUAKE-QIC'"),
        (lambda p: p[1].update(task_dataset="CMeIE-V2"), "unknown task 'CMeIE-V2'"),
        (lambda p: p[0].pop("answer_choices"), "no answer_choices"),
        (lambda p: p[0].update(answer_choices=None), "answer_choices must be a list"),
        (lambda p: p[2].update(target=None), "target of sample_id 'm1' must be a string"),
        (lambda p: p[2].pop("sample_id"), "missing field"),
    ],
)
def test_bad_predictions_raise(edit, match):
    gold = _gold()
    pred = [dict(r) for r in gold]
    edit(pred)
    with pytest.raises(ScoringError, match=match):
        score_records(gold, pred)


def test_bad_arguments_raise():
    gold = _gold()
    with pytest.raises(ScoringError, match="unknown mode"):
        score_records(gold, gold, mode="lenient")
    with pytest.raises(ScoringError, match="unknown task 'QIC'"):
        score_records(gold, gold, tasks=["QIC"])
    with pytest.raises(ScoringError, match=r"\['CMeIE'\] have no gold samples"):
        score_records(gold, gold, tasks=["CMeIE"])
    with pytest.raises(ScoringError, match="no gold samples"):
        score_records([], [])
    with pytest.raises(ScoringError, match="duplicate"):
        score_records(gold + [gold[0]], gold)
    assert issubclass(ScoringError, ValueError)


def test_task_subset_needs_only_its_predictions():
    gold = _gold()
    report = score_records(gold, [gold[1]], tasks=["KUAKE-QIC"])
    assert report.scores == {"KUAKE-QIC": 1.0, "avg": 1.0}


def test_task_tables():
    assert len(ALL_TASKS) == 16 and set(PAPER_TASKS) <= set(ALL_TASKS)
    assert {TASK_METRIC[t] for t in PAPER_TASKS} == {"micro_f1", "macro_f1", "rouge_l"}
    assert main_metric("CHIP-CTC") == "macro_f1"
    assert main_metric("CHIP-CTC", "moelora_compat") == "micro_f1"


def test_jieba_and_rouge_are_imported_only_in_compat_mode():
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "from moelora.evaluation import score_records\n"
        "g = [{'sample_id': 'a', 'task_dataset': 'CHIP-CDN', 'target': 'x', 'answer_choices': ['x']}]\n"
        "assert score_records(g, g).scores['CHIP-CDN'] == 1.0\n"
        "assert 'jieba' not in sys.modules and 'rouge' not in sys.modules\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
