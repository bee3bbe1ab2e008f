"""Corpus lines that explain terms: what labels mean and how medical records are written.

A base model fine-tuned with LoRA keeps its embeddings frozen, so every word an answer needs
must be one the base met in pre-training. The task answers use words that their prompts do
not contain (a report's ``既往体健`` or ``暂缺``, an extraction's ``头实体``, a doctor's
``先查一下``, the fallback ``非上述类型``), and labels whose meaning a real LLM knows from
elsewhere (``知情同意``, ``治疗方案``). These generators state that knowledge as textbook
prose, filled with knowledge-base entities: never in a task's prompt or answer layout, never
a task sample (docs/medsynth.md §4). Each ``*_lines`` function returns every phrasing it has;
the corpus states each phrasing at least once, then draws more at random.
"""

from __future__ import annotations

import random

from moelora.data.medsynth.common import DURATIONS, pick, sample
from moelora.data.medsynth.concepts import CTC_CONCEPTS, QIC_CONCEPTS
from moelora.data.medsynth.kb import Disease, KnowledgeBase


def criterion_lines(label: str, rng: random.Random) -> tuple[str, ...]:
    """Ways to explain a clinical-trial screening-criterion category (moelora.data.medsynth.concepts)."""
    about = "、".join(sample(rng, CTC_CONCEPTS[label], rng.randint(1, 3)))
    return (
        f"临床试验的筛选标准可以按内容分类，{label}类的条目关注{about}。",
        f"关于{about}的入组或排除条件，属于{label}这一类筛选标准。",
        f"在试验方案里，{label}方面的要求写的是{about}。",
    )


def intent_lines(label: str, rng: random.Random) -> tuple[str, ...]:
    """Ways to explain a kind of health search: what a user who searches like that wants."""
    about = "、".join(sample(rng, QIC_CONCEPTS[label], rng.randint(1, 2)))
    return (
        f"人们上网搜索{about}，想了解的是{label}。",
        f"医疗搜索的意图可以分为几类，其中{label}指的是想知道{about}。",
        f"搜索词问的是{about}时，用户关心的是{label}。",
    )


def other_category_lines(rng: random.Random) -> tuple[str, ...]:
    """What falls outside a list of categories, and an unmatched term."""
    return (
        "给条目分类时，如果它不属于列出的任何一类，就归为非上述类型。",
        "分类表里找不到合适的类别时，只能记作非上述类型。",
        "把口语诊断换成标准名称叫作归一化，词表中没有对应的标准名称时不能硬套。",
    )


def record_lines(kb: KnowledgeBase, d: Disease, rng: random.Random) -> tuple[str, ...]:
    """How a consultation record is written: its six sections and their usual wording."""
    s = sample(rng, d.symptoms, min(2, len(d.symptoms)))
    return (
        f"写诊疗报告时，主诉写最主要的症状和时间，比如{'伴'.join(s)}{pick(rng, DURATIONS)}；"
        f"现病史写发病经过，比如患者{pick(rng, DURATIONS)}前出现{'、'.join(s)}。",
        "病历的辅助检查一栏记录做过的检查，没有做检查就写暂缺，结果不正常就写异常。",
        "既往史记录以前得过的病，以前身体健康就写既往体健，说不清楚就写不详，"
        f"有病的写某某病史，比如{pick(rng, [x.name for x in kb.diseases])}病史。",
        f"报告最后是诊断和建议：诊断写病名，比如{d.name}；建议写用药和检查，"
        f"比如{d.drugs[0]}和{d.exams[0]}。",
        "一份问诊对话的诊疗报告分为主诉、现病史、辅助检查、既往史、诊断和建议六个部分。",
        "上述病历的要点如下，依次是主诉、现病史和诊断。",
    )


def extraction_lines(kb: KnowledgeBase, d: Disease, rng: random.Random) -> tuple[str, ...]:
    """Terms of relation and event extraction, with knowledge-base facts as examples."""
    sym = kb.symptoms[pick(rng, d.symptoms)]
    return (
        f"一个医学关系由头实体和尾实体组成，二者合称头尾实体对，比如{d.name}和"
        f"{sym.name}之间具有临床表现关系，{d.name}是头实体，{sym.name}是尾实体。",
        f"{d.name}和{d.drugs[0]}之间具有药物治疗关系，{d.name}和{d.department}之间具有"
        "就诊科室关系。",
        "临床发现事件由主体词、发生状态、描述词和解剖部位组成；发生状态可以是否定或不确定，"
        "描述词和解剖部位可以为空。",
        "上述句子中的临床发现事件如下，每个事件都有主体词。",
        f"比如{sym.site}{sym.core}这个临床发现，主体词是{sym.core}"
        + (f"，解剖部位是{sym.site}。" if sym.site else "，没有解剖部位。"),
        "判断临床发现实体的阴阳性，就是看患者是已有这个症状、没有这个症状，还是回答不明确。",
        "阴阳性判别要读完整段对话，以及其中医生的提问和患者的回答。",
        "对话中临床发现实体以及其阴阳性，是病历质控关心的内容。",
    )


def doctor_lines(kb: KnowledgeBase, d: Disease, rng: random.Random) -> tuple[str, ...]:
    """How doctors usually phrase a question, an examination, a prescription, a referral.

    Each phrase starts after a delimiter, as MedDG's answers do, so the pre-tokenizer cuts it
    alike in both and its tokens are pre-trained (``tests/test_medsynth.py``)."""
    s = pick(rng, d.symptoms)
    return (
        f"问诊时医生常问：有没有{s}？还有{pick(rng, d.symptoms)}吗？",
        f"要做检查时医生会说：建议做个{d.exams[0]}看看。也可以说：先查一下{d.exams[0]}。",
        f"开药时医生会说：可以用{d.drugs[0]}治疗。也可以说：建议吃{d.drugs[0]}。",
        f"让患者转诊时医生会说：建议去{d.department}就诊。也可以简单说：挂{d.department}。",
    )
