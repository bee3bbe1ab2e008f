"""``moelora_compat``: the authors' scorer (docs/evaluation.md §6.1), hand-computed values."""

from __future__ import annotations

import pytest

from moelora.evaluation import COMPAT_TASK_METRIC, score_records
from moelora.utils.io import read_jsonl
from tests.test_evaluation_helpers import rouge_f, score_task

COMPAT = "moelora_compat"
SELF = rouge_f(1.0, 1.0)
MRG_HEAD = "上述问诊对话的诊疗报告如下："
NER_HEAD = "上述句子中的实体包含："


def test_ctc_is_accuracy_with_the_paren_fixup():
    """[体征(医生检测）, 疾病, 年龄, 非上述类型] vs [体征(医生检测), 疾病, "", ""]: the fix-up makes
    the first right, "" stays "" (wrong twice) → accuracy 2/4. Official: macro-F1 1/3."""
    gold = ["体征(医生检测）", "疾病", "年龄", "非上述类型"]
    pred = ["体征(医生检测)", "疾病", "", ""]
    compat = score_task("CHIP-CTC", gold, pred, mode=COMPAT)
    assert COMPAT_TASK_METRIC["CHIP-CTC"] == "micro_f1"
    assert compat.scores["CHIP-CTC"] == 0.5
    assert compat.detail["CHIP-CTC"] == {"precision": 0.5, "recall": 0.5, "micro_f1": 0.5}
    # official: "" → 非上述类型; classes 疾病 1, 非上述类型 2/3, 年龄 0, both 体征 spellings 0
    official = score_task("CHIP-CTC", gold, pred)
    assert official.scores["CHIP-CTC"] == pytest.approx((1 + 2 / 3) / 5, abs=1e-12)


def test_qic_empty_prediction_is_its_own_class():
    """[就医建议, 非上述类型] vs [就医建议, ""]: classes {"", 就医建议, 非上述类型} → 1/3
    (official: "" → 非上述类型, all right → 1)."""
    gold, pred = ["就医建议", "非上述类型"], ["就医建议", ""]
    assert score_task("KUAKE-QIC", gold, pred, mode=COMPAT).scores["KUAKE-QIC"] == pytest.approx(
        1 / 3, abs=1e-12
    )
    assert score_task("KUAKE-QIC", gold, pred).scores["KUAKE-QIC"] == 1.0


def test_list_based_counting_with_duplicates():
    """gold [a], pred [a, b, b]: TP 1, FP 2 → P 1/3, R 1 → F1 0.5 (official sets: 2/3).
    gold [a, a], pred [a]: TP 2, FN 0, FP 0 → 1.0. gold [a, c], pred [a, a]: TP 1, FN 1 → 2/3."""

    def ner(*mentions: str) -> str:
        return f"{NER_HEAD}\n疾病实体：{'，'.join(mentions)}"

    report = score_task("CMeEE-V2", [ner("a")], [ner("a", "b", "b")], ["疾病"], mode=COMPAT)
    assert report.scores["CMeEE-V2"] == pytest.approx(0.5, abs=1e-12)
    assert report.detail["CMeEE-V2"] == pytest.approx(
        {"precision": 1 / 3, "recall": 1.0, "micro_f1": 0.5}
    )
    assert score_task("CMeEE-V2", [ner("a")], [ner("a", "b", "b")], ["疾病"]).scores[
        "CMeEE-V2"
    ] == pytest.approx(2 / 3)
    assert (
        score_task("CMeEE-V2", [ner("a", "a")], [ner("a")], ["疾病"], mode=COMPAT).scores[
            "CMeEE-V2"
        ]
        == 1.0
    )
    assert score_task("CMeEE-V2", [ner("a", "c")], [ner("a", "a")], ["疾病"], mode=COMPAT).scores[
        "CMeEE-V2"
    ] == pytest.approx(2 / 3, abs=1e-12)


def test_tp_zero_is_undefined_not_a_crash():
    choices = ["管状腺瘤", "胃炎"]
    report = score_task("CHIP-CDN", ["管状腺瘤"], ["胃炎"], choices, mode=COMPAT)
    assert report.scores == {"CHIP-CDN": None, "avg": None}
    assert report.undefined["CHIP-CDN"].startswith("undefined (TP=0)")
    assert "no predicted item is correct" in report.undefined["CHIP-CDN"]
    assert report.detail["CHIP-CDN"] == {"precision": None, "recall": None, "micro_f1": None}
    assert "CHIP-CDN" in report.undefined["avg"]
    none = score_task("CHIP-CDN", ["管状腺瘤"], [""], choices, mode=COMPAT)
    assert "no predicted items" in none.undefined["CHIP-CDN"]
    # official mode reports 0 instead
    assert score_task("CHIP-CDN", ["管状腺瘤"], [""], choices).scores["CHIP-CDN"] == 0.0


def test_meddg_jieba_rouge_and_dash_for_empty():
    """jieba: 小儿便秘 → 小儿 便秘, 便秘 → 便秘: P 1/2, R 1 → F(1/2, 1); an empty prediction is
    "-" (no overlap) → 0. Mean over samples."""
    report = score_task("MedDG", ["便秘", "多喝水。"], ["小儿便秘", ""], mode=COMPAT)
    assert report.scores["MedDG"] == pytest.approx(rouge_f(0.5, 1.0) / 2, abs=1e-12)
    empty_ref = score_task("MedDG", ["", "便秘"], ["便秘", "便秘"], mode=COMPAT)
    assert empty_ref.scores["MedDG"] is None
    assert "empty MedDG reference" in empty_ref.undefined["MedDG"]


def test_rouge_101_uses_distinct_tokens():
    """Repeating the prediction does not change rouge 1.0.1's score."""
    report = score_task("MedDG", ["hello world"], ["hello world hello world"], mode=COMPAT)
    assert report.scores["MedDG"] == SELF


def test_mrg_missing_section_scores_zero_per_sample_mean():
    """ "-" is glued to the first jieba word: "-便秘 两天" vs "-便秘" → P 1/2, R 1, while
    "-小儿 便秘" vs "-便秘" has no common token → 0. An absent section scores 0.
    Sample 1: gold {主诉: 便秘, 辅助检查: ""}, pred {主诉: 便秘两天} → (F(1/2, 1) + 0) / 2
    (official: (F(1/2, 1) + SELF) / 2 over pairs). Sample 2 → 0. Mean over samples."""
    gold = [f"{MRG_HEAD}\n主诉：便秘\n辅助检查：", f"{MRG_HEAD}\n诊断：便秘"]
    pred = [f"{MRG_HEAD}\n主诉：便秘两天", f"{MRG_HEAD}\n诊断：小儿便秘"]
    report = score_task("IMCS-V2-MRG", gold, pred, mode=COMPAT)
    expected = (rouge_f(0.5, 1.0) / 2 + 0.0) / 2
    assert report.scores["IMCS-V2-MRG"] == pytest.approx(expected, abs=1e-12)
    official = score_task("IMCS-V2-MRG", gold, pred)
    expected = (rouge_f(2 / 4, 1.0) + SELF + rouge_f(2 / 4, 1.0)) / 3  # char tokens
    assert official.scores["IMCS-V2-MRG"] == pytest.approx(expected, abs=1e-12)
    # an empty gold section present in the prediction: "-" vs "-" → SELF
    both_empty = score_task(
        "IMCS-V2-MRG", [f"{MRG_HEAD}\n辅助检查："], [f"{MRG_HEAD}\n辅助检查："], mode=COMPAT
    )
    assert both_empty.scores["IMCS-V2-MRG"] == SELF


def test_output_is_labelled_with_the_mode():
    report = score_task("KUAKE-QIC", ["就医建议"], ["就医建议"], mode=COMPAT)
    assert report.mode == COMPAT
    assert report.to_dict() == {"mode": COMPAT, "KUAKE-QIC": 1.0, "avg": 1.0}
    undefined = score_task("CHIP-CDN", ["a"], [""], ["a"], mode=COMPAT).to_dict()
    assert undefined["mode"] == COMPAT and undefined["CHIP-CDN"] is None
    assert set(undefined["undefined"]) == {"CHIP-CDN", "avg"}


def test_toy_dev_gold_scores_itself(shared_dir):
    """Uses ../shared (real PromptCBLUE toy lines): every compat score is 1.0 or 0.999999995."""
    dev = read_jsonl(shared_dir / "data" / "promptcblue_toy" / "dev.json")
    report = score_records(dev, dev, mode=COMPAT)
    assert report.undefined == {}
    for task, score in report.scores.items():
        if task != "avg":
            expected = SELF if COMPAT_TASK_METRIC[task] == "rouge_l" else 1.0
            assert score == pytest.approx(expected, abs=1e-12), task
