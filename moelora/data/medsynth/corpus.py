"""Unlabelled "textbook" pre-training text from the knowledge base (docs/medsynth.md §4).

Definitions, symptom, drug and examination descriptions, case-note sentences and short
dialogue snippets, one paragraph per line. It states the knowledge-base facts in many
phrasings but never contains a task prompt or a task target format (no answer headers,
no option lists), so pre-training teaches facts and language, not the tasks. Questions and
answers about the facts (``问：…答：…``, :func:`_faq_paragraph`) teach the answer cue that
ends every task prompt as language: a cue is followed by an answer to what was asked.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

from moelora.data.medsynth import glossary
from moelora.data.medsynth.common import DURATIONS, pick, sample
from moelora.data.medsynth.concepts import CTC_CONCEPTS, QIC_CONCEPTS
from moelora.data.medsynth.kb import Disease, KnowledgeBase
from moelora.data.medsynth.tokenizer import ANSWER_CUE


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


def _faq_paragraph(kb: KnowledgeBase, d: Disease, rng: random.Random) -> str:
    """A question about one knowledge-base fact, then ``答：`` and its answer, on one line.

    Every task prompt ends in ``答：``; without these lines the token ``答`` never occurs in
    pre-training text (the task-adaptive inputs lose their cue, ``tokenizer.pretraining_texts``),
    so the position from which every answer is predicted would hold an untrained embedding.
    The questions are the textbook's (symptoms, drugs, examinations, departments, aliases,
    indications), never a task's instruction, options or target format.
    """
    alias = pick(rng, d.aliases)
    drug = pick(rng, d.drugs)
    symptom = pick(rng, d.symptoms)
    qa = pick(
        rng,
        (
            (f"{alias}有哪些症状？", "、".join(d.symptoms)),
            (f"{d.name}常用什么药治疗？", "、".join(d.drugs)),
            (f"怀疑{alias}要做什么检查？", "、".join(d.exams)),
            (f"{alias}应该挂哪个科？", d.department),
            (f"{alias}在医学上叫什么？", d.name),
            (f"{drug}可以治疗哪些疾病？", "、".join(kb.drug_indications[drug])),
            (f"{kb.symptoms[symptom].colloquial}在医学上怎么说？", symptom),
        ),
    )
    head = pick(rng, ("问：", "患者问：", "读者提问：", ""))
    return f"{head}{qa[0]}{ANSWER_CUE}{qa[1]}。"


# ------------------------------------------------------------ restatements (copying)
# Paragraphs that mention entities and then name them again (a summary, a reordered list,
# a pick from an enumeration), often with entities drawn at random across the knowledge
# base, so the only way to predict the restatement is to copy from earlier in the line.
_SUMMARY_HEADS = (
    "本段提到的{k}",
    "其中提到的{k}",
    "文中出现的{k}",
    "以上涉及的{k}",
    "归纳其中的{k}",
)


def _summary(rng: random.Random, kind: str, items: list[str]) -> str:
    head = pick(rng, _SUMMARY_HEADS).format(k=kind)
    sep = pick(rng, ("：", "有", "为", "是"))
    return f"{head}{sep}{'、'.join(items)}。"


def _mention_paragraph(kb: KnowledgeBase, d: Disease, rng: random.Random) -> str:
    """A case note with findings, drugs and examinations, then one to three summaries."""
    if rng.random() < 0.5:  # facts of one disease
        syms = sample(rng, d.symptoms, rng.randint(1, 3))
        drugs = sample(rng, d.drugs, rng.randint(1, 2))
        exams = sample(rng, d.exams, 1)
        dis = [d.name]
        neg = pick(rng, [x for x in kb.symptoms if x not in syms])
        text = (
            f"患者{pick(rng, DURATIONS)}前出现{'、'.join(syms)}，无{neg}，"
            f"查{exams[0]}，考虑{'或'.join(dis)}，予{'、'.join(drugs)}治疗。"
        )
    else:  # unrelated entities in a log that states no fact: the summary can only be copied
        syms = sample(rng, list(kb.symptoms), rng.randint(1, 3))
        drugs = sample(rng, kb.drugs, rng.randint(1, 2))
        exams = sample(rng, kb.exams, 1)
        dis = [x.name for x in sample(rng, kb.diseases, rng.randint(1, 2))]
        text = (
            f"今日门诊登记：有人诉{'、'.join(syms)}，有{'、'.join(dis)}的复诊病人，"
            f"检验科做了{exams[0]}，药房发出{'、'.join(drugs)}。"
        )
    parts = [("症状", syms), ("药物", drugs), ("疾病", dis), ("检查", exams)]
    rng.shuffle(parts)
    for kind, items in parts[: rng.randint(1, 3)]:
        order = list(items)
        if rng.random() < 0.3:
            rng.shuffle(order)
        text += _summary(rng, kind, order)
    return text


def _reorder_paragraph(kb: KnowledgeBase, rng: random.Random) -> str:
    """A list of entities, then the same list again, reordered or filtered."""
    pool = pick(
        rng, (list(kb.symptoms), list(kb.drugs), list(kb.exams), [d.name for d in kb.diseases])
    )
    items = sample(rng, pool, rng.randint(2, 5))
    text = f"记录中依次写有{'、'.join(items)}。"
    mode = rng.random()
    if mode < 0.4:
        again = list(items)
        rng.shuffle(again)
        text += f"换一个顺序是{'、'.join(again)}。"
    elif mode < 0.7:
        text += f"倒过来是{'、'.join(reversed(items))}。"
    else:
        kept = [x for x in items if rng.random() < 0.6] or items[:1]
        text += f"后来复核保留了{'、'.join(kept)}。"
    return text


def _selection_paragraph(kb: KnowledgeBase, d: Disease, rng: random.Random) -> str:
    """An enumeration of diseases or drugs, then the one that fits a clue, copied out."""
    others = [x.name for x in sample(rng, kb.diseases, 4) if x.name != d.name][:3]
    names = others + [d.name]
    rng.shuffle(names)
    enum = "、".join(names)
    if rng.random() < 0.5:
        clue = pick(rng, d.aliases)
        return pick(
            rng,
            (
                f"在{enum}这几种病中，俗称{clue}的是{d.name}。",
                f"{enum}里，平时说的{clue}指的是{d.name}。",
            ),
        )
    drug = pick(rng, d.drugs)
    syms = [x for x in d.symptoms if rng.random() < 0.6] or [d.symptoms[0]]
    return pick(
        rng,
        (
            f"在{enum}中，常用{drug}治疗的是{d.name}。",
            f"{enum}这几种病里，表现为{'、'.join(syms)}的是{d.name}，"
            f"其中提到的症状是{'、'.join(syms)}。",
        ),
    )


def _finding_paragraph(kb: KnowledgeBase, d: Disease, rng: random.Random) -> str:
    """A finding with site and descriptors, then the same attributes named one by one."""
    s = kb.symptoms[pick(rng, d.symptoms)]
    descs = sample(rng, s.descriptors, rng.randint(1, 2)) if s.descriptors else []
    other = pick(rng, [x for x in d.symptoms if x != s.name] or [s.name])
    how = f"，呈{'、'.join(descs)}" if descs else ""
    text = f"患者{pick(rng, DURATIONS)}前出现{s.site}{s.core}{how}，伴{other}。"
    notes = [f"所见为{s.core}"]
    if s.site:
        notes.append(f"部位在{s.site}")
    if descs:
        notes.append(f"表现为{'、'.join(descs)}")
    notes.append(f"另有{other}")
    return text + "，".join(notes) + "。"


def _polarity_paragraph(kb: KnowledgeBase, d: Disease, rng: random.Random) -> str:
    """A dialogue snippet with present and denied findings, then a one-line recap."""
    has = sample(rng, d.symptoms, rng.randint(1, 2))
    no = pick(rng, [x for x in kb.symptoms if x not in d.symptoms])
    return (
        f"患者说：我有{'、'.join(has)}。医生问：有没有{no}？患者说：没有{no}。"
        f"小结：有{'、'.join(has)}，无{no}。"
    )


# ------------------------------------------------------------ copying and lookup in context
# Lines whose second half can only be predicted from their first half: entity lists drawn at
# random across the knowledge base and restated (exactly, reversed or filtered), and
# associations made up for the line (a bed number, a person, an item) that are then looked
# up. None of them uses a task's wording; they teach the base to copy from its context.
_SURNAMES = ("张", "王", "李", "赵", "刘", "陈", "杨", "黄", "周", "吴", "徐", "孙", "马", "朱")
_ECHO_FRAMES = (
    ("清单：{a}。照抄一遍：{b}。", "same"),
    ("甲说：{a}。乙复述：{b}。", "same"),
    ("原文：{a}。抄录：{b}。", "same"),
    ("备忘录写着{a}，再写一次是{b}。", "same"),
    ("顺序记为{a}，倒序记为{b}。", "reverse"),
    ("登记了{a}，去掉重复后仍是{b}。", "same"),
    ("列出{a}，其中第一项是{b}。", "first"),
    ("列出{a}，其中最后一项是{b}。", "last"),
)


def _entity_pool(kb: KnowledgeBase, rng: random.Random) -> list[str]:
    return pick(
        rng,
        (
            list(kb.symptoms),
            list(kb.drugs),
            list(kb.exams),
            [d.name for d in kb.diseases],
            [a for d in kb.diseases for a in d.aliases],
            list(kb.departments),
        ),
    )


def _echo_paragraph(kb: KnowledgeBase, rng: random.Random) -> str:
    """A random list of entities, then the same list again (or its reverse, first, last)."""
    items = sample(rng, _entity_pool(kb, rng), rng.randint(2, 5))
    frame, mode = pick(rng, _ECHO_FRAMES)
    again = {"same": items, "reverse": items[::-1], "first": items[:1], "last": items[-1:]}[mode]
    return frame.format(a="、".join(items), b="、".join(again))


def _lookup_paragraph(kb: KnowledgeBase, rng: random.Random) -> str:
    """Associations invented for this line (bed → person → entity), then one is recalled."""
    pool = _entity_pool(kb, rng)
    n = rng.randint(2, 4)
    beds = sample(rng, [str(i) for i in range(1, 40)], n)
    people = [pick(rng, _SURNAMES) + pick(rng, ("某", "先生", "女士", "阿姨")) for _ in range(n)]
    things = sample(rng, pool, n)
    facts = "，".join(f"{b}床{p}登记的是{t}" for b, p, t in zip(beds, people, things))
    k = rng.randrange(n)
    ask = pick(
        rng,
        (
            f"{beds[k]}床登记的是什么？是{things[k]}。",
            f"查询{beds[k]}床，结果为{things[k]}。",
            f"登记{things[k]}的是{beds[k]}床{people[k]}。",
        ),
    )
    return f"值班记录：{facts}。{ask}"


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
    for label in CTC_CONCEPTS:
        lines += glossary.criterion_lines(label, rng)
    for label in QIC_CONCEPTS:
        lines += glossary.intent_lines(label, rng)
    lines += glossary.other_category_lines(rng)
    for make in (glossary.record_lines, glossary.extraction_lines, glossary.doctor_lines):
        lines += make(kb, pick(rng, kb.diseases), rng)
    total = sum(len(x) + 1 for x in lines)
    symptoms = list(kb.symptoms)
    kinds: tuple[tuple[float, Callable[[Disease], str]], ...] = (
        (0.17, lambda d: _disease_paragraph(kb, d, rng)),
        (0.05, lambda d: _case_paragraph(kb, d, rng)),
        (0.05, lambda d: _dialogue_paragraph(kb, d, rng)),
        (0.05, lambda d: _symptom_paragraph(kb, pick(rng, symptoms), rng)),
        (0.03, lambda d: _drug_paragraph(kb, pick(rng, d.drugs), rng)),
        (0.02, lambda d: _exam_paragraph(kb, pick(rng, d.exams), rng)),
        (0.09, lambda d: _mention_paragraph(kb, d, rng)),
        (0.05, lambda d: _reorder_paragraph(kb, rng)),
        (0.05, lambda d: _selection_paragraph(kb, d, rng)),
        (0.05, lambda d: _finding_paragraph(kb, d, rng)),
        (0.04, lambda d: _polarity_paragraph(kb, d, rng)),
        (0.20, lambda d: _echo_paragraph(kb, rng)),
        (0.15, lambda d: _lookup_paragraph(kb, rng)),
        (0.04, lambda d: _faq_paragraph(kb, d, rng)),
        (0.04, lambda d: pick(rng, glossary.criterion_lines(pick(rng, tuple(CTC_CONCEPTS)), rng))),
        (0.02, lambda d: pick(rng, glossary.intent_lines(pick(rng, tuple(QIC_CONCEPTS)), rng))),
        (0.01, lambda d: pick(rng, glossary.other_category_lines(rng))),
        (0.02, lambda d: pick(rng, glossary.record_lines(kb, d, rng))),
        (0.02, lambda d: pick(rng, glossary.extraction_lines(kb, d, rng))),
        (0.02, lambda d: pick(rng, glossary.doctor_lines(kb, d, rng))),
    )
    bounds = list(itertools.accumulate(w for w, _ in kinds))
    while total < num_chars:
        kind = rng.random() * bounds[-1]
        d = pick(rng, kb.diseases)
        make = kinds[next(i for i, b in enumerate(bounds) if kind < b)][1]
        line = make(d)
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines) + "\n"
