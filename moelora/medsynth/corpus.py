"""Unlabelled "textbook" pre-training text from the knowledge base (spec/medsynth.md §4).

Definitions, symptom, drug and examination descriptions, case-note sentences and short
dialogue snippets, one paragraph per line. It states the knowledge-base facts in many
phrasings but never contains a task prompt or a task target format (no answer headers,
no option lists, no ``答：``), so pre-training teaches facts and language, not the tasks.
"""

from __future__ import annotations

import random

from moelora.medsynth.common import DURATIONS, pick, sample
from moelora.medsynth.kb import Disease, KnowledgeBase


def _disease_paragraph(kb: KnowledgeBase, d: Disease, rng: random.Random) -> str:
    alias = "、".join(d.aliases)
    parts = [
        pick(
            rng,
            (
                f"{d.name}，又称{alias}，是一种常见的{d.site}疾病。",
                f"{d.name}俗称{alias}，病变主要累及{d.site}。",
                f"{alias}在医学上称为{d.name}，属于{d.department}疾病。",
            ),
        ),
        pick(
            rng,
            (
                f"{d.name}的典型症状包括{'、'.join(d.symptoms)}。",
                f"患者常出现{'、'.join(d.symptoms)}等表现。",
                f"{pick(rng, d.aliases)}的人多有{'和'.join(sample(rng, d.symptoms, 2))}。",
            ),
        ),
        pick(
            rng,
            (
                f"治疗{d.name}常用{'、'.join(d.drugs)}。",
                f"{d.name}的药物治疗首选{d.drugs[0]}。",
                f"得了{pick(rng, d.aliases)}可以用{'或'.join(d.drugs)}。",
            ),
        ),
        pick(
            rng,
            (
                f"诊断{d.name}需要做{'和'.join(d.exams)}。",
                f"{d.exams[0]}有助于明确{d.name}的诊断。",
                f"怀疑{pick(rng, d.aliases)}时应先查{d.exams[0]}。",
            ),
        ),
        pick(
            rng,
            (
                f"{d.name}患者应到{d.department}就诊。",
                f"{pick(rng, d.aliases)}一般挂{d.department}。",
            ),
        ),
    ]
    rng.shuffle(parts)
    return "".join(parts[: rng.randint(2, len(parts))])


def _symptom_paragraph(kb: KnowledgeBase, name: str, rng: random.Random) -> str:
    s = kb.symptoms[name]
    causes = [d.name for d in kb.with_symptom(name)]
    text = f"{s.name}，口语常说{s.colloquial}。"
    if s.site:
        text += f"{s.name}指{s.site}的{s.core}，"
    else:
        text += f"{s.name}是常见的临床表现，"
    if s.descriptors:
        text += f"可为{'、'.join(s.descriptors)}。"
    else:
        text += "程度轻重不一。"
    if causes:
        text += f"{'、'.join(sample(rng, causes, 3))}等疾病都可以引起{s.name}。"
    return text


def _drug_paragraph(kb: KnowledgeBase, drug: str, rng: random.Random) -> str:
    uses = kb.drug_indications[drug]
    return pick(
        rng,
        (
            f"{drug}主要用于治疗{'、'.join(uses)}。",
            f"{drug}适用于{'和'.join(uses[:2])}等疾病，应在医生指导下使用。",
            f"对于{uses[0]}，医生常开{drug}。",
        ),
    )


def _exam_paragraph(kb: KnowledgeBase, exam: str, rng: random.Random) -> str:
    used = [d.name for d in kb.diseases if exam in d.exams]
    return f"{exam}属于{kb.exam_kind(exam)}，常用于{'、'.join(used[:3])}的诊断。"


def _case_paragraph(kb: KnowledgeBase, d: Disease, rng: random.Random) -> str:
    s = kb.symptoms[pick(rng, d.symptoms)]
    desc = pick(rng, s.descriptors) if s.descriptors else ""
    neg = pick(rng, [x for x in kb.symptoms if x not in d.symptoms])
    return (
        f"病例：患者{pick(rng, DURATIONS)}前出现{s.site}{desc}{s.core}，无{neg}。"
        f"查{d.exams[0]}后诊断为{d.name}，予{d.drugs[0]}治疗后好转。"
    )


def _dialogue_paragraph(kb: KnowledgeBase, d: Disease, rng: random.Random) -> str:
    syms = sample(rng, d.symptoms, 2)
    said = "，还".join(kb.symptoms[s].colloquial for s in syms)
    return (
        f"患者说：我{pick(rng, DURATIONS)}{said}。医生说：这是{'、'.join(syms)}，"
        f"可能是{pick(rng, d.aliases)}，也就是{d.name}，可以去{d.department}看看。"
    )


def build_corpus(kb: KnowledgeBase, *, seed: int, num_chars: int) -> str:
    """Every fact at least once, then random paragraphs until ``num_chars`` characters.

    Args:
        kb: the knowledge base.
        seed: seeds the paragraph sampler (string-seeded ``random.Random``).
        num_chars: approximate corpus size in characters (= tokens, char-level).

    Returns:
        The corpus text, one paragraph per line, ending in a newline.
    """
    rng = random.Random(f"medsynth-corpus/{seed}")
    lines: list[str] = []
    for d in kb.diseases:
        lines.append(_disease_paragraph(kb, d, rng))
    for s in kb.symptoms:
        lines.append(_symptom_paragraph(kb, s, rng))
    for g in kb.drugs:
        lines.append(_drug_paragraph(kb, g, rng))
    for e in kb.exams:
        lines.append(_exam_paragraph(kb, e, rng))
    total = sum(len(x) + 1 for x in lines)
    symptoms = list(kb.symptoms)
    while total < num_chars:
        kind = rng.random()
        d = pick(rng, kb.diseases)
        if kind < 0.45:
            line = _disease_paragraph(kb, d, rng)
        elif kind < 0.6:
            line = _case_paragraph(kb, d, rng)
        elif kind < 0.75:
            line = _dialogue_paragraph(kb, d, rng)
        elif kind < 0.87:
            line = _symptom_paragraph(kb, pick(rng, symptoms), rng)
        elif kind < 0.95:
            line = _drug_paragraph(kb, pick(rng, d.drugs), rng)
        else:
            line = _exam_paragraph(kb, pick(rng, d.exams), rng)
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines) + "\n"
