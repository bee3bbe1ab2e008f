"""The v0.1 answer parsers (docs/evaluation.md §3, §9) and their quirks (§7, items 2–7)."""

from __future__ import annotations

import json

import pytest

from moelora.evaluation import ALL_TASKS, ScoringError, parse_answer
from moelora.evaluation.parsers import prenormalise
from moelora.utils.io import read_jsonl

MDCF_CHOICES = [
    "已有症状疾病或者假设未来可能发生的疾病等",
    "未患有症状疾病",
    "没有回答、不知道、回答不明确或者模棱两可不好推断",
    "无实际意义的不标注或者和病人当前的状态独立不标注",
]
POS, FALLBACK = MDCF_CHOICES[0], MDCF_CHOICES[3]
MDCF_HEAD = "上述对话中临床发现实体以及其阴阳性判别如下："
CDEE_HEAD = "上述句子中的临床发现事件如下："
MRG_HEAD = "上述问诊对话的诊疗报告如下："


def _event(subject="", status="", desc=(), site=()):
    return {"主体词": subject, "发生状态": status, "描述词": list(desc), "解剖部位": list(site)}


# ---- the toy data ---------------------------------------------------------------------


def test_toy_dev_reproduces_dev_structured(shared_dir):
    """Uses ../shared (real PromptCBLUE toy lines): parsing every dev.json line gives
    dev_structured.json, CHIP-CDN lists compared as sets (upstream dedupes through a set)."""
    toy = shared_dir / "data" / "promptcblue_toy"
    dev = read_jsonl(toy / "dev.json")
    structured = json.loads((toy / "dev_structured.json").read_text(encoding="utf-8"))
    assert sorted(structured) == sorted(ALL_TASKS)
    assert sum(len(v) for v in structured.values()) == len(dev)
    for task, samples in structured.items():
        lines = [r for r in dev if r["task_dataset"] == task]
        assert [s["sample_id"] for s in samples] == [r["sample_id"] for r in lines]
        for sample, line in zip(samples, lines):
            got = parse_answer(task, line["target"], line["answer_choices"])
            if task == "CHIP-CDN":

                def key(items):
                    return sorted(json.dumps(i, ensure_ascii=False, sort_keys=True) for i in items)

                assert len(got) == len(sample["answer"])
                assert key(got) == key(sample["answer"]), sample["sample_id"]
            else:
                assert got == sample["answer"], sample["sample_id"]


def test_toy_spec_examples():
    assert parse_answer(
        "CMeIE",
        "具有药物治疗关系的头尾实体对如下：头实体为心力衰竭，尾实体为伊伐布雷。\n"
        "具有相关（症状）关系的头尾实体对如下：",
        ["药物治疗", "相关（症状）"],
    ) == [{"predicate": "药物治疗", "subject": "心力衰竭", "object": "伊伐布雷"}]
    assert parse_answer(
        "CHIP-CDEE", f"{CDEE_HEAD}\n主体词：包块；发生状态：不确定；描述词：；解剖部位：盆腔", None
    ) == [_event("包块", "不确定", (), ["盆腔"])]
    assert parse_answer("KUAKE-QIC", " 就医建议\n", None) == "就医建议"


# ---- quirk 2: v0.1 pre-normalisation, 100 replacements per character -------------------


def test_prenormalisation_limit_is_100_per_character():
    text = "," * 101 + ":" * 3 + ";"
    out = prenormalise(text)
    assert out == "，" * 100 + "," + "：" * 3 + "；"
    assert parse_answer("MedDG", "a,b:c;d", None) == "a，b：c；d"
    assert parse_answer("MedDG", "a,b", None, parser="v0.2") == "a,b"  # v0.2 does not


def test_prenormalisation_changes_labels_and_lets_ascii_comma_split_cdn():
    assert parse_answer("CHIP-CTC", "疾病:肿瘤", None) == "疾病：肿瘤"
    got = parse_answer(
        "CHIP-CDN", "管状腺瘤,十二指肠交界性肿瘤", ["管状腺瘤", "十二指肠交界性肿瘤"]
    )
    assert [i["entity"] for i in got] == ["管状腺瘤", "十二指肠交界性肿瘤"]
    assert (
        parse_answer("CHIP-CDN", "管状腺瘤,十二指肠交界性肿瘤", ["管状腺瘤"], parser="v0.2") == []
    )


# ---- quirk 3: CDEE, MDCFNPC and MRG drop the first line; only MRG strips first ---------


def test_first_line_dropped_unconditionally():
    line = "主体词：腹痛；发生状态：；描述词：；解剖部位：腹"
    assert parse_answer("CHIP-CDEE", line, None) == []  # no header: the event is lost
    assert parse_answer("CHIP-MDCFNPC", f"痛：{POS}", MDCF_CHOICES) == []
    assert parse_answer("IMCS-V2-MRG", "主诉：便秘。\n诊断：便秘。", None) == {"诊断": "便秘。"}


def test_leading_newline_mrg_strips_but_cdee_and_mdcfnpc_do_not():
    # MRG: the text is stripped first, so the header is still the dropped first line
    assert parse_answer("IMCS-V2-MRG", f"\n{MRG_HEAD}\n主诉：便秘。", None) == {"主诉": "便秘。"}
    # CDEE: "" is dropped, the header becomes an all-empty event
    assert parse_answer("CHIP-CDEE", f"\n{CDEE_HEAD}\n主体词：腹痛", None) == [
        _event(),
        _event("腹痛"),
    ]
    # MDCFNPC: the header splits into exactly 2 parts on ： and falls back
    assert parse_answer("CHIP-MDCFNPC", f"\n{MDCF_HEAD}\n痛：{POS}", MDCF_CHOICES) == [
        {"entity": MDCF_HEAD[:-1], "attr": FALLBACK},
        {"entity": "痛", "attr": POS},
    ]


# ---- quirk 4: CDEE phantom events, list order kept ------------------------------------


def test_cdee_blank_and_garbage_lines_are_all_empty_events():
    text = f"{CDEE_HEAD}\n主体词：腹痛；描述词：胀痛，持续性\n\n随便写写\n"
    assert parse_answer("CHIP-CDEE", text, None) == [
        _event("腹痛", desc=["胀痛", "持续性"]),
        _event(),
        _event(),
        _event(),
    ]


def test_cdee_fields_lists_overwrite_and_space_after_semicolon():
    text = f"{CDEE_HEAD}\n主体词：a；主体词：b；描述词：x， ，y，x；发生状态：否定"
    assert parse_answer("CHIP-CDEE", text, None) == [_event("b", "否定", ["x", "y", "x"])]
    assert parse_answer("CHIP-CDEE", f"{CDEE_HEAD}\n主体词：a； 解剖部位：腹", None) == [
        _event("a")
    ]


def test_cdee_rewritten_chunk_is_tested_against_later_keys():
    """Upstream reassigns the chunk on a match, so later keys see the rest of it."""
    text = f"{CDEE_HEAD}\n主体词：描述词：胀痛"
    assert parse_answer("CHIP-CDEE", text, None) == [_event("描述词：胀痛", desc=["胀痛"])]


# ---- quirk 5: MDCFNPC labels ----------------------------------------------------------


def test_mdcfnpc_label_not_stripped_one_colon_and_fallback():
    text = (
        f"{MDCF_HEAD}\n痛：{POS} \n咳嗽：{POS}。\n发热：{MDCF_CHOICES[1]}\n"
        f"a：b：{POS}\n没有冒号\n\n 头晕 ：胡说"
    )
    assert parse_answer("CHIP-MDCFNPC", text, MDCF_CHOICES) == [
        {"entity": "痛", "attr": FALLBACK},  # trailing space → fallback
        {"entity": "咳嗽", "attr": FALLBACK},  # trailing 。 → fallback
        {"entity": "发热", "attr": MDCF_CHOICES[1]},
        {"entity": "头晕", "attr": FALLBACK},  # entity stripped, unknown label
    ]
    assert parse_answer("CHIP-MDCFNPC", f"{MDCF_HEAD}\n痛：胡说", MDCF_CHOICES, parser="v0.2") == [
        {"entity": "痛", "attr": "不标注"}
    ]


def test_sr_uses_its_own_fallback():
    assert parse_answer("IMCS-V2-SR", "上述对话中的症状如下：\n咳嗽：不知道", ["患有该症状"]) == [
        {"entity": "咳嗽", "attr": "无法根据上下文确定病人是否患有该症状"}
    ]


# ---- quirk 6 (and 1): CDN last line, candidate filter ---------------------------------


def test_cdn_last_line_filter_dedupe():
    choices = ["管状腺瘤", "十二指肠交界性肿瘤", "十二指肠球炎"]
    ents = lambda text: [i["entity"] for i in parse_answer("CHIP-CDN", text, choices)]  # noqa: E731
    assert ents("管状腺瘤，十二指肠交界性肿瘤\n") == []  # trailing newline
    assert ents("好的，我来回答：\n管状腺瘤， 管状腺瘤，胃炎，") == [
        "管状腺瘤"
    ]  # chatty line harmless
    assert ents("管状腺瘤、十二指肠球炎") == []  # wrong separator
    assert ents("十二指肠球炎。") == []  # trailing punctuation
    assert ents("没有对应的标准化实体") == []
    assert parse_answer("CHIP-CDN", "管状腺瘤", choices) == [
        {"entity": "管状腺瘤", "type": "normalization"}
    ]


# ---- quirk 7: CMeIE -------------------------------------------------------------------


def test_cmeie_predicate_is_line_minus_two_chars():
    text = " 具有药物治疗关系的头尾实体对如下：头实体为A，尾实体为B。"
    assert parse_answer("CMeIE", text, ["药物治疗"]) == [
        {"predicate": "有药物治疗", "subject": "具有药物治疗关系的头尾实体对如下：A", "object": "B"}
    ]
    # no 具有 prefix: two real characters are lost; nothing is checked against answer_choices
    assert parse_answer("CMeIE", "药物治疗关系的头尾实体对如下：头实体为A，尾实体为B", ["x"]) == [
        {"predicate": "治疗", "subject": "药物治疗关系的头尾实体对如下：A", "object": "B"}
    ]


def test_cmeie_only_full_stop_separates_pairs_and_first_two_parts_kept():
    head = "具有病因关系的头尾实体对如下："
    assert parse_answer(
        "CMeIE", head + "头实体为A，尾实体为B；头实体为C，尾实体为D。", ["病因"]
    ) == [{"predicate": "病因", "subject": "A", "object": "B；头实体为C"}]
    assert parse_answer("CMeIE", head + "头实体为A，尾实体为B。头实体为C，尾实体为D", ["病因"]) == [
        {"predicate": "病因", "subject": "A", "object": "B"},
        {"predicate": "病因", "subject": "C", "object": "D"},
    ]  # no closing 。 still parses
    assert parse_answer("CMeIE", head + "头实体为A，尾实体为B尾实体为C。", ["病因"]) == [
        {"predicate": "病因", "subject": "A", "object": "BC"}
    ]  # upstream deletes 尾实体为 too
    assert parse_answer("CMeIE", head, ["病因"]) == []
    assert parse_answer("CMeIE", "", ["病因"]) == []


# ---- the other tasks ------------------------------------------------------------------


def test_entities_sts_and_mrg():
    text = "上述句子中的实体包含：\n疾病实体：a， b，，a\n药物实体：\n疾病实体c"
    assert parse_answer("CMeEE-V2", text, ["药物", "疾病"]) == [
        {"entity": "a", "type": "疾病"},
        {"entity": "b", "type": "疾病"},
        {"entity": "a", "type": "疾病"},
        {"entity": "疾病实体c", "type": "疾病"},
    ]
    assert parse_answer("CHIP-STS", "相同", None) == "是的"
    assert parse_answer("CHIP-STS", "不同 ", None) == "不是"
    mrg = f"{MRG_HEAD}\n主诉：a：主诉：b\n 现病史：hidden\n诊断：x\n诊断： y \n建议："
    assert parse_answer("IMCS-V2-MRG", mrg, None) == {"主诉": "b", "诊断": "y", "建议": ""}
    assert parse_answer("IMCS-V2-MRG", "", None) == {}


def test_parse_answer_errors():
    with pytest.raises(ScoringError, match="unknown task"):
        parse_answer("CMeIE-V2", "x", [])
    with pytest.raises(ScoringError, match="CMeIE-V2"):
        parse_answer("CMeIE", "x", [], parser="v0.2")
    assert parse_answer("CMeIE-V2", "", [], parser="v0.2") == []
    with pytest.raises(ScoringError, match="unknown parser"):
        parse_answer("MedDG", "x", None, parser="v9")
    with pytest.raises(ScoringError, match="answer_choices"):
        parse_answer("CHIP-CDN", "x", None)
    with pytest.raises(ScoringError, match="answer_choices"):
        parse_answer("CHIP-MDCFNPC", f"{MDCF_HEAD}\n痛：x", None)
    with pytest.raises(ScoringError, match="answer_choices"):
        parse_answer("CMeIE", "", None)  # upstream asserts a list here
    # upstream tests CDN / MDCFNPC membership only when there is an item to test
    assert parse_answer("CHIP-CDN", "\n", None) == []
    assert parse_answer("CHIP-MDCFNPC", f"{MDCF_HEAD}\n没有冒号", None) == []
    with pytest.raises(ScoringError, match="string"):
        parse_answer("MedDG", None, None)
