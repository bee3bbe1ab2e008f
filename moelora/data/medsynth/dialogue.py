"""Dialogue generators: CHIP-MDCFNPC, IMCS-V2-MRG, MedDG (docs/medsynth.md §3).

Patients speak colloquially (``Symptom.colloquial``), reports and doctors use standard
terms, and the knowledge base supplies what the dialogue leaves implicit (the diagnosis
from the symptoms, the drug and examination for a disease), so these tasks reward the
knowledge shared with the other tasks and the pre-training corpus.
"""

from __future__ import annotations

import random
from typing import Any

from moelora.data.medsynth.common import DURATIONS, pick, rec, sample
from moelora.data.medsynth.kb import Disease, KnowledgeBase

# ---------------------------------------------------------------- CHIP-MDCFNPC (§3.4)
POSITIVE = "已有症状疾病或者假设未来可能发生的疾病等"
NEGATIVE = "未患有症状疾病"
UNKNOWN = "没有回答、不知道、回答不明确或者模棱两可不好推断"
NOT_LABELLED = "无实际意义的不标注或者和病人当前的状态独立不标注"
MDCFNPC_CHOICES = (POSITIVE, NEGATIVE, UNKNOWN, NOT_LABELLED)
MDCFNPC_HEADER = "上述对话中临床发现实体以及其阴阳性判别如下："
MDCFNPC_PROMPTS = (
    "给出对话中临床发现实体的阴阳性判断：\n{dialogue}\n临床发现实体：{mentions}\n阴阳性选项：{opts}\n答：",
    "医疗对话中临床发现实体的阴阳性判别：\n{dialogue}\n临床发现实体：{mentions}\n阴阳性选项：{opts}\n答：",
)


def gen_mdcfnpc(kb: KnowledgeBase, rng: random.Random) -> dict[str, Any]:
    """A short dialogue with present, denied, unclear and irrelevant findings → labels."""
    d = pick(rng, kb.diseases)
    others = [s for s in kb.symptoms if s not in d.symptoms]
    turns: list[str] = []
    findings: list[tuple[str, str]] = []
    pos = sample(rng, d.symptoms, rng.choice((1, 1, 2)))
    turns.append(f"患者：我{pick(rng, DURATIONS)}{'，还'.join(pos)}。")
    findings += [(s, POSITIVE) for s in pos]
    extra = sample(rng, ("neg", "neg", "unk", "na"), rng.choice((1, 1, 2)))
    asked = sample(rng, others, 2)
    for kind, s in zip(extra, asked):
        if kind == "neg":
            turns.append(f"医生：有没有{s}？")
            turns.append(
                f"患者：{pick(rng, ('没有。', '没有{s}。', '不{s}。' if len(s) == 2 else '没有。')).format(s=s)}"
            )
            findings.append((s, NEGATIVE))
        elif kind == "unk":
            turns.append(f"医生：{s}吗？")
            turns.append(f"患者：{pick(rng, ('不太清楚。', '说不好。', '没注意。'))}")
            findings.append((s, UNKNOWN))
        else:
            turns.append(
                f"医生：{pick(rng, ('如果加重可能会出现{s}', '{s}一般与此无关', '平时要预防{s}'))}。".format(
                    s=s
                )
            )
            findings.append((s, NOT_LABELLED))
    mentions = "，".join(s for s, _ in findings)
    body = "\n".join(f"{s}：{label}" for s, label in findings)
    prompt = pick(rng, MDCFNPC_PROMPTS).format(
        dialogue="\n".join(turns), mentions=mentions, opts="，".join(MDCFNPC_CHOICES)
    )
    return rec("CHIP-MDCFNPC", "attr_cls", prompt, f"{MDCFNPC_HEADER}\n{body}", MDCFNPC_CHOICES)


# ---------------------------------------------------------------- IMCS-V2-MRG (§3.7)
MRG_HEADER = "上述问诊对话的诊疗报告如下："
MRG_SECTIONS = ("主诉", "现病史", "辅助检查", "既往史", "诊断", "建议")  # the report's six sections
MRG_PROMPTS = (
    "根据下面的问诊对话自动生成对应的诊疗报告：\n{dialogue}\n说明：诊疗报告分为主诉, 现病史, 辅助检查, 既往史, 诊断, 建议这六个章节。\n答：",
    "问诊对话历史：\n{dialogue}\n根据上述对话，给出诊疗报告\n说明：诊疗报告分为主诉, 现病史, 辅助检查, 既往史, 诊断, 建议这六个章节。\n答：",
)
_CHRONIC = ("原发性高血压", "2型糖尿病", "慢性胃炎", "支气管哮喘", "高脂血症")


def _colloquial(kb: KnowledgeBase, s: str) -> str:
    return kb.symptoms[s].colloquial


def gen_mrg(kb: KnowledgeBase, rng: random.Random) -> dict[str, Any]:
    """A consultation dialogue → the six-section report (diagnosis from the knowledge base)."""
    d = pick(rng, kb.diseases)
    dur = pick(rng, DURATIONS)
    main = sample(rng, d.symptoms, 2 if len(d.symptoms) > 1 else 1)
    turns = [f"患者：医生你好，我{dur}了，{'，还'.join(_colloquial(kb, s) for s in main)}。"]
    rest = [s for s in d.symptoms if s not in main]
    has_third = bool(rest) and rng.random() < 0.5
    third = rest[0] if has_third else pick(rng, [s for s in kb.symptoms if s not in d.symptoms])
    turns += [f"医生：有没有{third}？", f"患者：{'有一点。' if has_third else '没有。'}"]
    history = "不详。"
    if rng.random() < 0.7:
        past = pick(rng, [c for c in _CHRONIC if c != d.name])
        turns.append("医生：以前有什么病吗？")
        if rng.random() < 0.5:
            turns.append("患者：没有。")
            history = "既往体健。"
        else:
            turns.append(f"患者：有{past}。")
            history = f"{past}病史。"
    exam_done = pick(rng, d.exams)
    aux = "暂缺。"
    if rng.random() < 0.5:
        turns += ["医生：做过检查吗？", f"患者：做了{exam_done}，说有问题。"]
        aux = f"{exam_done}异常。"
    if rng.random() < 0.5:
        turns.append(f"医生：考虑是{pick(rng, (d.name, *d.aliases))}。")
    drug = d.drugs[0]
    exam = d.exams[0]
    if rng.random() < 0.6:
        turns.append(
            f"医生：建议用{drug}，{'复查' if aux != '暂缺。' and exam == exam_done else '做个'}{exam}。"
        )
    else:
        turns.append("医生：按我说的用药，注意休息。")
    present = "、".join(main)
    contents = (
        f"{'伴'.join(main)}{dur}。",
        f"患者{dur}前出现{present}，{'伴' if has_third else '无'}{third}。",
        aux,
        history,
        f"{d.name}。",
        f"{drug}，{exam}。",
    )
    report = [f"{section}：{content}" for section, content in zip(MRG_SECTIONS, contents)]
    prompt = pick(rng, MRG_PROMPTS).format(dialogue="\n".join(turns))
    return rec("IMCS-V2-MRG", "report_generation", prompt, "\n".join([MRG_HEADER, *report]), None)


# ---------------------------------------------------------------- MedDG (§3.8)
MEDDG_PROMPTS = (
    "根据下面的问诊对话历史，给出医生的下一句回复\n{dialogue}\n答：",
    "自动生成问诊对话中的医生下一句回复：\n{dialogue}\n答：",
)
_ASKS = {
    "exam": ("需要做什么检查吗？", "要查什么？"),
    "drug": ("吃什么药好？", "能用什么药？"),
    "dept": ("挂什么科？", "去哪个科看？"),
}


def _next_symptom(d: Disease, mentioned: list[str]) -> str | None:
    for s in d.symptoms:
        if s not in mentioned:
            return s
    return None


def gen_meddg(kb: KnowledgeBase, rng: random.Random) -> dict[str, Any]:
    """A dialogue history → the doctor's next utterance: ask, examine, treat or refer."""
    d = pick(rng, kb.diseases)
    n = min(len(d.symptoms) - 1, rng.choice((1, 2))) if len(d.symptoms) > 1 else 1
    mentioned = list(d.symptoms[:n]) if rng.random() < 0.5 else sample(rng, d.symptoms, n)
    turns = [
        f"患者：{pick(rng, ('你好，', '医生，', ''))}我{pick(rng, DURATIONS)}{'，还'.join(_colloquial(kb, s) for s in mentioned)}。"
    ]
    named = rng.random() < 0.5
    if named:
        turns.append(
            f"医生：{pick(rng, ('考虑是{a}。', '可能是{a}。'))}".format(
                a=pick(rng, (d.name, *d.aliases))
            )
        )
    nxt = _next_symptom(d, mentioned)
    kind = (
        pick(rng, ("ask", "exam", "drug", "dept")) if nxt else pick(rng, ("exam", "drug", "dept"))
    )
    if kind == "ask":
        target = pick(rng, ("有没有{s}？", "还有{s}吗？")).format(s=nxt)
        if named:
            turns.append("患者：严重吗？")
    else:
        turns.append(f"患者：{pick(rng, _ASKS[kind])}")
        target = {
            "exam": pick(rng, ("建议做个{x}看看。", "先查一下{x}。")).format(x=d.exams[0]),
            "drug": pick(rng, ("可以用{x}治疗。", "建议吃{x}。")).format(x=d.drugs[0]),
            "dept": pick(rng, ("建议去{x}就诊。", "挂{x}。")).format(x=d.department),
        }[kind]
    prompt = pick(rng, MEDDG_PROMPTS).format(dialogue="\n".join(turns))
    return rec("MedDG", "response_generation", prompt, target, None)
