"""Classification generators: CHIP-CTC and KUAKE-QIC (docs/medsynth.md §3).

The target is one label from the listed options, or ``非上述类型`` when the true label
is not among them (docs/evaluation.md §3.5–3.6). Classes share slot vocabulary (a disease can
appear in 疾病, 诊断, 疾病分期 and 口腔相关 criteria; a drug in 药物 and 过敏耐受), so the
label has to be read from the wording, not from the entity.
"""

from __future__ import annotations

import random
from typing import Any

from moelora.data.medsynth.common import pick, rec, sample
from moelora.data.medsynth.kb import LAB_EXAMS, KnowledgeBase

NOT_LISTED = "非上述类型"

# ---------------------------------------------------------------- CHIP-CTC (§3.5)
# 20 classes, the low end of the ~20–44 range (docs/medsynth.md §3): at 34 classes (v1) the ~360
# training criteria left ~10 per class, and a CTC-only LoRA on the v2 base reached 0.32 against
# 0.48 with these 20 (docs/notes/2026-12-02-medsynth-v2-redesign.md).
CTC_TEMPLATES: dict[str, tuple[str, ...]] = {
    "疾病": ("患有{disease}且病情未控制者", "合并严重{disease}的患者", "既往有{disease}病史者"),
    "诊断": ("经{exam}确诊为{disease}的患者", "符合{disease}诊断标准", "临床诊断为{disease}"),
    "症状(患者感受)": (
        "存在明显{symptom}症状者",
        "近{n}周内出现{symptom}的患者",
        "主诉{symptom}持续{n}天以上",
    ),
    "体征(医生检测）": ("收缩压≥{big}mmHg", "体温≥{temp}℃", "静息心率＞{big}次/分"),
    "药物": ("近{n}周内使用过{drug}者", "正在服用{drug}治疗的患者", "需长期使用{drug}者"),
    "实验室检查": ("{lab}结果明显异常者", "筛选期{lab}超过正常上限{n}倍"),
    "过敏耐受": ("对{drug}过敏者", "已知对{drug}或其成分不耐受者"),
    "治疗或手术": ("近{n}个月内接受过{surgery}者", "计划在研究期间进行{surgery}"),
    "年龄": ("年龄{n}0～{m}0岁", "年龄大于{n}0周岁"),
    "性别": ("男性患者", "女性受试者", "性别不限"),
    "怀孕相关": ("妊娠期或哺乳期妇女", "计划在研究期间怀孕者", "育龄期女性未采取有效避孕措施"),
    "知情同意": ("自愿参加并签署知情同意书", "患者或家属同意参加本研究并签字"),
    "吸烟状况": ("每日吸烟{n}支以上者", "目前仍在吸烟的患者"),
    "酒精使用": ("有酗酒史者", "每周饮酒超过{n}次"),
    "参与其它试验": ("近{n}个月内参加过其他临床试验者", "正在参加其他药物试验"),
    "预期寿命": ("预计生存期少于{n}个月", "预期寿命大于{n}周"),
    "能力": ("无法配合完成问卷调查者", "有认知障碍不能理解研究内容者"),
    "依存性": ("依从性差不能按时随访者", "能够按要求完成随访"),
    "研究者决定": ("研究者认为不适合参加本研究的其他情况", "研究者判断存在其他不宜入组的因素"),
    "疾病分期": ("{disease}处于急性发作期", "{disease}分期为{stage}"),
}
CTC_LABELS: tuple[str, ...] = tuple(CTC_TEMPLATES)
CTC_PROMPTS = (
    "确定试验筛选标准的类型：\n{text}\n类型选项：{opts}\n答：",
    "{text}\n是什么临床试验筛选标准类型？\n选项：{opts}\n答：",
    "请问是什么类型？\n{text}\n临床试验筛选标准选项：{opts}\n答：",
)
_SURGERIES = ("阑尾切除术", "胆囊切除术", "冠脉支架植入术", "关节置换术", "放疗", "化疗")
_STAGES = ("早期", "中期", "晚期")
_PREFIXES = ("", "", "1.", "2、", "（3）", "④")


def gen_ctc(kb: KnowledgeBase, rng: random.Random) -> dict[str, Any]:
    """A screening criterion of one of 20 classes → its class, or 非上述类型."""
    label = pick(rng, CTC_LABELS)
    d = pick(rng, kb.diseases)
    slots = {
        "disease": pick(rng, (d.name, *d.aliases)),
        "exam": pick(rng, d.exams),
        "symptom": pick(rng, d.symptoms),
        "drug": pick(rng, d.drugs),
        "lab": pick(rng, [e for e in kb.exams if e in LAB_EXAMS]),
        "n": rng.randint(2, 6),
        "m": rng.randint(7, 9),
        "big": rng.choice((100, 120, 140, 160)),
        "temp": rng.choice(("37.5", "38", "38.5")),
        "surgery": pick(rng, _SURGERIES),
        "stage": pick(rng, _STAGES),
        "dept": d.department,
    }
    text = (
        pick(rng, _PREFIXES)
        + pick(rng, CTC_TEMPLATES[label]).format(**slots)
        + pick(rng, ("。", "；", ""))
    )
    others = [x for x in CTC_LABELS if x != label]
    options = sample(rng, others, rng.randint(6, 17))
    if rng.random() < 0.8:
        options.append(label)
    rng.shuffle(options)
    target = label if label in options else NOT_LISTED
    prompt = pick(rng, CTC_PROMPTS).format(text=text, opts="，".join(options))
    return rec("CHIP-CTC", "cls", prompt, target, options)


# ---------------------------------------------------------------- KUAKE-QIC (§3.6)
QIC_TEMPLATES: dict[str, tuple[str, ...]] = {
    "病情诊断": ("{c1}还{c2}是什么病", "{c1}，{c2}，是不是{alias}", "{s1}伴{s2}是得了什么病"),
    "病因分析": ("为什么会{c1}", "{alias}是什么原因引起的", "经常{c1}是怎么回事"),
    "治疗方案": ("{alias}怎么治疗", "{alias}吃什么药好得快", "{c1}怎么办"),
    "就医建议": ("{alias}挂什么科", "{alias}去哪个医院看比较好", "{c1}需要去医院吗"),
    "指标解读": ("{exam}结果偏高说明什么", "{exam}报告怎么看", "{exam}正常值是多少"),
    "后果表述": ("{alias}会有什么后果", "{alias}严重吗会不会恶化", "{alias}不治疗会怎么样"),
    "注意事项": ("{alias}饮食要注意什么", "{alias}能吃辣吗", "{alias}患者平时注意什么"),
    "功效作用": ("{drug}有什么作用", "{drug}能治{alias}吗", "{drug}的功效是什么"),
}
QIC_LABELS: tuple[str, ...] = tuple(QIC_TEMPLATES)
QIC_PROMPTS = (
    "判断下面搜索词的意图：\n{text}\n选项：{opts}\n答：",
    "{text}\n这个医疗搜索词是什么意图分类？\n选项：{opts}\n答：",
    "请问是什么意图类型？\n{text}\n搜索意图选项：{opts}\n答：",
)


def gen_qic(kb: KnowledgeBase, rng: random.Random) -> dict[str, Any]:
    """A search query with one of 8 intents → the intent, or 非上述类型."""
    label = pick(rng, QIC_LABELS)
    d = pick(rng, kb.diseases)
    s1, s2 = sample(rng, d.symptoms, 2) if len(d.symptoms) > 1 else (d.symptoms[0], d.symptoms[0])
    slots = {
        "alias": pick(rng, (d.name, *d.aliases)),
        "c1": kb.symptoms[s1].colloquial,
        "c2": kb.symptoms[s2].colloquial,
        "s1": s1,
        "s2": s2,
        "exam": pick(rng, d.exams),
        "drug": pick(rng, d.drugs),
    }
    text = pick(rng, QIC_TEMPLATES[label]).format(**slots) + pick(rng, ("？", "", "呢？", "啊"))
    options = sample(rng, QIC_LABELS, rng.choice((6, 7, 8, 8)))
    rng.shuffle(options)
    target = label if label in options else NOT_LISTED
    prompt = pick(rng, QIC_PROMPTS).format(text=text, opts="，".join(options))
    return rec("KUAKE-QIC", "cls", prompt, target, options)
