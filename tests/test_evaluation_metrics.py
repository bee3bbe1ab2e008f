"""Official metrics (docs/evaluation.md §4) with hand-computed values, one score-level test per
quirk of §7, and gold scored against itself."""

from __future__ import annotations

import pytest

from moelora.evaluation import TASK_METRIC, ScoringError, score_records, score_structured
from moelora.evaluation.metrics import Counts, classification_prf, micro_prf, set_counts
from moelora.evaluation.rouge import char_tokens
from moelora.utils.io import read_jsonl
from tests.test_evaluation_helpers import rec, rouge_f, score_task

SELF = rouge_f(1.0, 1.0)  # 2 / (2 + 1e-8) = 0.999999995
MDCF = [
    "已有症状疾病或者假设未来可能发生的疾病等",
    "未患有症状疾病",
    "没有回答、不知道、回答不明确或者模棱两可不好推断",
    "无实际意义的不标注或者和病人当前的状态独立不标注",
]
MDCF_HEAD = "上述对话中临床发现实体以及其阴阳性判别如下："
CDEE_HEAD = "上述句子中的临床发现事件如下："
MRG_HEAD = "上述问诊对话的诊疗报告如下："


def f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r)


# ---- metric units ---------------------------------------------------------------------


def test_micro_prf_hand_values():
    assert micro_prf(Counts(tp=3, fp=1, fn=2)) == pytest.approx((0.75, 0.6, f1(0.75, 0.6)))
    assert micro_prf(Counts(tp=0, fp=4, fn=2)) == (0.0, 0.0, 0.0)
    assert micro_prf(Counts(tp=0, fp=0, fn=0)) == (0.0, 0.0, 0.0)


def test_item_identity_sorted_keys_and_ordered_lists():
    gold = [[{"b": "1", "a": ["x", "y"]}]]
    assert set_counts(gold, [[{"a": ["x", "y"], "b": "1"}]]) == Counts(1, 0, 0)
    assert set_counts(gold, [[{"a": ["y", "x"], "b": "1"}]]) == Counts(0, 1, 1)


def test_macro_f1_worked_example():
    """§4.2: y_true [A, A, B, 非上述类型], y_pred [A, C, "", ""] → 0.3333 (P = R = 0.375)."""
    report = score_task("KUAKE-QIC", ["A", "A", "B", "非上述类型"], ["A", "C", "", ""])
    assert report.scores["KUAKE-QIC"] == pytest.approx(1 / 3, abs=1e-12)
    assert report.detail["KUAKE-QIC"] == pytest.approx(
        {"precision": 0.375, "recall": 0.375, "macro_f1": 1 / 3}, abs=1e-12
    )
    assert classification_prf(["A", "A", "B", "N"], ["A", "C", "N", "N"], "macro") == pytest.approx(
        (0.375, 0.375, 1 / 3)
    )


def test_weighted_f1_for_sts():
    """[是的, 是的, 不是] vs [是的, 不是, ""→是的]: 是的 F1 = 0.5 (support 2), 不是 0 → 1/3."""
    report = score_task("CHIP-STS", ["是的", "是的", "不是"], ["是的", "不同", ""])
    assert TASK_METRIC["CHIP-STS"] == "weighted_f1"
    assert report.scores["CHIP-STS"] == pytest.approx(1 / 3, abs=1e-12)


def test_basic_tokenizer_example():
    assert (
        char_tokens("建议：复查CT，12.5mg/d，Ｘ线（阴性）～38℃")
        == "建 议 ： 复 查 ct ， 12 . 5mg / d ， ｘ 线 （ 阴 性 ） ～38℃"
    )
    assert char_tokens("") == "无 。"
    assert char_tokens(" \t\n") == "无 。"


def test_meddg_rouge_worked_example():
    """§4.3: ("小儿便秘" vs "便秘") = 0.6666666622, ("" vs "多喝水。") = 0.3333333289 → 0.4999999956."""
    report = score_task("MedDG", ["便秘", "多喝水。"], ["小儿便秘", ""])
    expected = (rouge_f(0.5, 1.0) + rouge_f(0.5, 0.25)) / 2
    assert report.scores["MedDG"] == pytest.approx(expected, abs=1e-12)
    assert round(report.scores["MedDG"], 10) == 0.4999999956


def test_mrg_rouge_worked_example():
    """§4.3: gold {主诉: 便秘, 辅助检查: ""}, prediction {主诉: 小儿便秘} → 0.8333333286."""
    report = score_task(
        "IMCS-V2-MRG", [f"{MRG_HEAD}\n主诉：便秘\n辅助检查："], [f"{MRG_HEAD}\n主诉：小儿便秘"]
    )
    expected = (rouge_f(0.5, 1.0) + SELF) / 2
    assert report.scores["IMCS-V2-MRG"] == pytest.approx(expected, abs=1e-12)
    assert round(report.scores["IMCS-V2-MRG"], 10) == 0.8333333286


# ---- §7 quirks, one score-level test each ---------------------------------------------


def test_quirk1_gold_goes_through_the_same_parser():
    """Gold non-candidate 胃炎 is dropped, 没有对应的标准化实体 is [] on both sides:
    TP = 1, FP = FN = 0 → 1.0 (0.667 if the gold item counted)."""
    choices = ["管状腺瘤", "十二指肠球炎"]
    report = score_task(
        "CHIP-CDN",
        ["胃炎，管状腺瘤", "没有对应的标准化实体"],
        ["管状腺瘤", "没有对应的标准化实体"],
        choices,
    )
    assert report.scores["CHIP-CDN"] == 1.0
    # no items anywhere: TP = 0 → 0, not 1
    assert (
        score_task("CHIP-CDN", ["没有对应的标准化实体"], ["没有对应的标准化实体"], choices).scores[
            "CHIP-CDN"
        ]
        == 0.0
    )


def test_quirk2_prenormalisation_reaches_rouge():
    """ASCII , in the gold becomes ， so it matches; past 100 commas it no longer does."""
    assert score_task("MedDG", ["多喝水,少吃辣"], ["多喝水，少吃辣"]).scores["MedDG"] == SELF
    gold, pred = "好" + "，好" * 101, "好" + ",好" * 101  # 203 tokens; the 101st , stays ASCII
    expected = rouge_f(202 / 203, 202 / 203)
    assert score_task("MedDG", [gold], [pred]).scores["MedDG"] == pytest.approx(expected, abs=1e-12)


def test_quirk3_first_line_dropped():
    """MDCFNPC leading newline: the header becomes a false positive → P = 1/2, R = 1 → 2/3.
    MRG leading newline: stripped first, so nothing is lost → SELF."""
    gold = f"{MDCF_HEAD}\n痛：{MDCF[0]}"
    report = score_task("CHIP-MDCFNPC", [gold], ["\n" + gold], MDCF)
    assert report.scores["CHIP-MDCFNPC"] == pytest.approx(2 / 3, abs=1e-12)
    assert (
        score_task("CHIP-MDCFNPC", [gold], [f"痛：{MDCF[0]}"], MDCF).scores["CHIP-MDCFNPC"] == 0.0
    )
    mrg = f"{MRG_HEAD}\n主诉：便秘"
    assert score_task("IMCS-V2-MRG", [mrg], ["\n\n" + mrg]).scores["IMCS-V2-MRG"] == SELF


def test_quirk4_cdee_phantom_event_and_list_order():
    gold = f"{CDEE_HEAD}\n主体词：疼痛；发生状态：；描述词：胀痛，持续性；解剖部位：腹"
    # trailing newline: one all-empty event, deduped per sample → TP 1, FP 1 → 2/3
    assert score_task("CHIP-CDEE", [gold, gold], [gold + "\n", gold + "\n\n"]).scores[
        "CHIP-CDEE"
    ] == pytest.approx(f1(2 / 4, 1.0), abs=1e-12)
    swapped = gold.replace("胀痛，持续性", "持续性，胀痛")
    assert score_task("CHIP-CDEE", [gold], [swapped]).scores["CHIP-CDEE"] == 0.0


def test_quirk5_mdcfnpc_labels():
    """A garbage label falls back to the valid 不标注 label and can be right; a trailing space
    makes a correct label wrong; a line with two ： is skipped. TP 1, FP 1, FN 2 → P 1/2, R 1/3."""
    gold = f"{MDCF_HEAD}\n痛：{MDCF[3]}\n咳：{MDCF[0]}\n热：{MDCF[1]}"
    pred = f"{MDCF_HEAD}\n痛：乱写\n咳：{MDCF[0]} \n热：{MDCF[1]}：补充"
    report = score_task("CHIP-MDCFNPC", [gold], [pred], MDCF)
    assert report.scores["CHIP-MDCFNPC"] == pytest.approx(f1(1 / 2, 1 / 3), abs=1e-12)


def test_quirk6_cdn_trailing_newline_empties_answer():
    """Sample 1 right, sample 2 emptied by a trailing newline: TP 1, FP 0, FN 2 → R 1/3."""
    choices = ["管状腺瘤", "十二指肠交界性肿瘤"]
    gold = ["管状腺瘤", "管状腺瘤，十二指肠交界性肿瘤"]
    pred = ["解释一下：\n管状腺瘤", "管状腺瘤，十二指肠交界性肿瘤\n"]
    report = score_task("CHIP-CDN", gold, pred, choices)
    assert report.scores["CHIP-CDN"] == pytest.approx(f1(1.0, 1 / 3), abs=1e-12)


def test_quirk7_cmeie_separators():
    """`；` instead of `。` merges the pairs: 1 wrong triple for 2 gold → TP 0 → 0; a leading
    space garbles the predicate → 0; no closing 。 is fine → 1."""
    head = "具有病因关系的头尾实体对如下："
    gold = head + "头实体为A，尾实体为B。头实体为C，尾实体为D。"
    assert (
        score_task(
            "CMeIE", [gold], [head + "头实体为A，尾实体为B；头实体为C，尾实体为D。"], ["病因"]
        ).scores["CMeIE"]
        == 0.0
    )
    assert score_task("CMeIE", [gold], [" " + gold], ["病因"]).scores["CMeIE"] == 0.0
    assert score_task("CMeIE", [gold], [gold[:-1]], ["病因"]).scores["CMeIE"] == 1.0


def test_quirk8_classification_fallback_and_union():
    """ "" → 非上述类型 (right here); 其他 and the ASCII-paren 体征(医生检测) add F1-0 classes:
    classes {非上述类型, 疾病, 体征(医生检测）, 其他, 体征(医生检测)} → (1 + 1 + 0 + 0 + 0) / 5."""
    gold = ["非上述类型", "疾病", "体征(医生检测）", "疾病"]
    pred = ["", "疾病", "体征(医生检测)", "其他"]
    report = score_task("CHIP-CTC", gold, pred)
    # 疾病: P 1, R 1/2 → 2/3; 非上述类型: 1
    assert report.scores["CHIP-CTC"] == pytest.approx((1 + 2 / 3) / 5, abs=1e-12)


def test_quirk9_rouge_pairs_and_substitution():
    """Per-pair mean (not corpus LCS): (甲 vs 甲乙丙丁) = F(1, 1/4), (戊 vs 戊) = SELF.
    MRG: a section only in the prediction is ignored; a missing one is "" → 无 。 (F = 0 here);
    an empty gold section with an empty prediction scores SELF."""
    report = score_task("MedDG", ["甲乙丙丁", "戊"], ["甲", "戊"])
    assert report.scores["MedDG"] == pytest.approx((rouge_f(1, 0.25) + SELF) / 2, abs=1e-12)
    gold = f"{MRG_HEAD}\n主诉：便秘\n诊断：\n建议：多喝水"
    pred = f"{MRG_HEAD}\n主诉：便秘\n既往史：无\n诊断："
    report = score_task("IMCS-V2-MRG", [gold], [pred])
    assert report.scores["IMCS-V2-MRG"] == pytest.approx((SELF + SELF + 0.0) / 3, abs=1e-12)
    assert report.detail["IMCS-V2-MRG"]["rouge_l"] == report.scores["IMCS-V2-MRG"]


def test_quirk10_set_semantics_and_zero_tp():
    """Duplicates collapse: gold [a], pred [a, b, b] → TP 1, FP 1 → 2/3; TP = 0 → 0."""
    gold = "上述句子中的实体包含：\n疾病实体：a"
    report = score_task("CMeEE-V2", [gold], ["疾病实体：a，b，b，a"], ["疾病"])
    assert report.scores["CMeEE-V2"] == pytest.approx(2 / 3, abs=1e-12)
    report = score_task("CMeEE-V2", [gold], ["疾病实体：c"], ["疾病"])
    assert report.scores["CMeEE-V2"] == 0.0 and report.undefined == {}


# ---- gold against itself ----------------------------------------------------------------


def test_toy_dev_gold_scores_itself(shared_dir):
    """Uses ../shared (real PromptCBLUE toy lines): F1 tasks 1.0, ROUGE tasks 0.999999995."""
    dev = read_jsonl(shared_dir / "data" / "promptcblue_toy" / "dev.json")
    report = score_records(dev, list(reversed(dev)))
    assert report.mode == "official" and len(report.scores) == 17
    for task, score in report.scores.items():
        if task == "avg":
            continue
        if TASK_METRIC[task] == "rouge_l":
            assert score == pytest.approx(0.999999995, abs=1e-12), task
            assert score != 1.0
        else:
            assert score == 1.0, task
    assert report.scores["avg"] == pytest.approx((14 + 2 * 0.999999995) / 16, abs=1e-12)


def test_paper_tasks_in_table2_order(shared_dir):
    """Uses ../shared: the default task order puts the 8 paper tasks first, in Table 2 order."""
    dev = read_jsonl(shared_dir / "data" / "promptcblue_toy" / "dev.json")
    report = score_records(dev, dev)
    assert list(report.scores)[:8] == [
        "CMeIE",
        "CHIP-CDN",
        "CHIP-CDEE",
        "CHIP-MDCFNPC",
        "CHIP-CTC",
        "KUAKE-QIC",
        "IMCS-V2-MRG",
        "MedDG",
    ]
    sub = score_records(dev, dev, tasks=["MedDG", "CMeIE"])
    assert list(sub.scores) == ["MedDG", "CMeIE", "avg"]
    assert sub.scores["avg"] == pytest.approx((1.0 + 0.999999995) / 2)


# ---- degenerate inputs ------------------------------------------------------------------


def test_empty_gold_label_is_an_error():
    with pytest.raises(ScoringError, match="gold label"):
        score_task("CHIP-CTC", [""], ["疾病"])


def test_mrg_without_gold_sections_is_undefined():
    report = score_task("IMCS-V2-MRG", ["无关内容"], [f"{MRG_HEAD}\n主诉：x"])
    assert report.scores == {"IMCS-V2-MRG": None, "avg": None}
    assert "no gold sections" in report.undefined["IMCS-V2-MRG"]
    assert "IMCS-V2-MRG" in report.undefined["avg"]


def test_score_structured_position_by_position():
    gold = {
        "KUAKE-QIC": [
            {"sample_id": "a", "answer": "就医建议"},
            {"sample_id": "b", "answer": "病因分析"},
        ],
        "CHIP-CDN": [{"sample_id": "c", "answer": [{"entity": "x", "type": "normalization"}]}],
    }
    pred = {
        "KUAKE-QIC": [{"sample_id": "a", "answer": "就医建议"}, {"sample_id": "b", "answer": ""}],
        "CHIP-CDN": [{"sample_id": "c", "answer": [{"entity": "x", "type": "normalization"}]}],
    }
    report = score_structured(gold, pred)
    assert report.scores["CHIP-CDN"] == 1.0
    # classes 就医建议 (1), 病因分析 (0), 非上述类型 (0) → 1/3
    assert report.scores["KUAKE-QIC"] == pytest.approx(1 / 3)
    swapped = {**pred, "KUAKE-QIC": pred["KUAKE-QIC"][::-1]}
    with pytest.raises(ScoringError, match="gold order"):
        score_structured(gold, swapped)
    with pytest.raises(ScoringError, match="answer must be"):
        score_structured(gold, {**pred, "CHIP-CDN": [{"sample_id": "c", "answer": "x"}]})


def test_to_dict_shape():
    report = score_records([rec("MedDG", "便秘", "s0")], [rec("MedDG", "便秘", "s0")])
    out = report.to_dict()
    assert out == {"mode": "official", "MedDG": SELF, "avg": SELF}
    full = report.to_dict(detail=True)
    assert set(full["detail"]["MedDG"]) == {
        "rouge_1",
        "rouge_2",
        "rouge_l",
        "rouge_l_precision",
        "rouge_l_recall",
    }
    assert full["n_samples"] == {"MedDG": 1}
