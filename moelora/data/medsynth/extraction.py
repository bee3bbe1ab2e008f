"""Extraction-style generators: CMeIE, CHIP-CDN, CHIP-CDEE (docs/medsynth.md §3).

Targets follow docs/evaluation.md §3.1–3.3 exactly. Room for error: facts stated in the text
whose relation is not requested, negated facts (no relation), candidate lists with
look-alike distractors or without any match, negated and uncertain findings.
"""

from __future__ import annotations

import random
from typing import Any

from moelora.data.medsynth.common import DURATIONS, pick, rec, sample
from moelora.data.medsynth.kb import Disease, KnowledgeBase

# ---------------------------------------------------------------- CMeIE (§3.1)
CMEIE_RELATIONS = (
    "临床表现",
    "药物治疗",
    "实验室检查",
    "影像学检查",
    "辅助检查",
    "同义词",
    "发病部位",
    "就诊科室",
)
CMEIE_PROMPTS = (
    "找出句子中的具有{rels}关系类型的头尾实体对：\n{text}\n答：",
    "同时完成实体识别与关系识别：\n{text}\n三元组关系类型：{rels}\n答：",
    "这个句子里面具有一定医学关系的实体组有哪些？\n{text}\n三元组关系选项：{rels}\n答：",
)


def _cmeie_clauses(
    kb: KnowledgeBase, d: Disease, rng: random.Random
) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Candidate clauses about ``d``: (text, [(relation, head, tail), ...])."""
    out: list[tuple[str, list[tuple[str, str, str]]]] = []
    if d.aliases:
        a = pick(rng, d.aliases)
        out.append((pick(rng, ("又称{a}", "俗称{a}")).format(a=a), [("同义词", d.name, a)]))
    syms = sample(rng, d.symptoms, rng.choice((1, 2)))
    out.append(
        (
            pick(rng, ("主要表现为{s}", "常见症状有{s}", "患者可出现{s}")).format(
                s="、".join(syms)
            ),
            [("临床表现", d.name, s) for s in syms],
        )
    )
    drugs = sample(rng, d.drugs, rng.choice((1, 2)))
    out.append(
        (
            pick(rng, ("治疗可选用{g}", "可用{g}治疗", "常用药物为{g}")).format(g="或".join(drugs)),
            [("药物治疗", d.name, g) for g in drugs],
        )
    )
    e = pick(rng, d.exams)
    out.append(
        (
            pick(rng, ("确诊需行{e}", "可通过{e}辅助诊断")).format(e=e),
            [(kb.exam_kind(e), d.name, e)],
        )
    )
    out.append(
        (pick(rng, ("病变部位在{p}", "好发于{p}")).format(p=d.site), [("发病部位", d.name, d.site)])
    )
    out.append(
        (
            pick(rng, ("应到{k}就诊", "属于{k}常见病")).format(k=d.department),
            [("就诊科室", d.name, d.department)],
        )
    )
    # Negated distractor: a symptom the disease does not have, stated as absent.
    others = [s for s in kb.symptoms if s not in d.symptoms]
    out.append((f"一般不会出现{pick(rng, others)}", []))
    return out


def gen_cmeie(kb: KnowledgeBase, rng: random.Random) -> dict[str, Any]:
    """1–2 sentences of facts about 1–2 diseases → (head, tail) pairs per requested relation."""
    diseases = sample(rng, kb.diseases, rng.choice((1, 1, 2)))
    sentences: list[str] = []
    triples: list[tuple[str, str, str]] = []
    for d in diseases:
        clauses = sample(
            rng, _cmeie_clauses(kb, d, rng), 2 if len(diseases) == 2 else rng.choice((2, 3))
        )
        sentences.append(d.name + "，".join(c for c, _ in clauses) + "。")
        for _, facts in clauses:
            triples += facts
    present = [r for r in CMEIE_RELATIONS if any(t[0] == r for t in triples)]
    absent = [r for r in CMEIE_RELATIONS if r not in present]
    requested = sample(rng, present, rng.choice((1, 2, 2))) + sample(
        rng, absent, rng.choice((0, 1, 1))
    )
    rng.shuffle(requested)
    lines = []
    for r in requested:
        pairs = "".join(f"头实体为{h}，尾实体为{t}。" for rel, h, t in triples if rel == r)
        lines.append(f"具有{r}关系的头尾实体对如下：{pairs}")
    text = f"{diseases[0].name}@{''.join(sentences)}"
    prompt = pick(rng, CMEIE_PROMPTS).format(rels="，".join(requested), text=text)
    return rec("CMeIE", "spo_generation", prompt, "\n".join(lines), requested)


# ---------------------------------------------------------------- CHIP-CDN (§3.2)
CDN_NONE = "没有对应的标准化实体"
CDN_PROMPTS = (
    "诊断归一化：\n{raw}\n选项：{opts}\n说明：从候选的若干个ICD-10诊断标准词中选择出与原诊断描述匹配的词\n答：",
    "{raw}\n归一化后的标准词是？\n实体选项：{opts}\n说明：从候选的若干个ICD-10诊断标准词中选择出与原诊断描述匹配的词\n答：",
    "找出归一后的标准词：\n{raw}\n选项：{opts}\n答：",
)


def _surface(d: Disease, rng: random.Random) -> str:
    if d.aliases and rng.random() < 0.8:
        return pick(rng, d.aliases)
    return d.name


def _distractors(kb: KnowledgeBase, golds: list[Disease], rng: random.Random, k: int) -> list[str]:
    """Look-alikes first (same department or body part), then random diseases."""
    gold_names = [d.name for d in golds]
    close = [
        d.name
        for d in kb.diseases
        if d.name not in gold_names
        and any(d.department == g.department or d.site == g.site for g in golds)
    ]
    far = [d.name for d in kb.diseases if d.name not in gold_names and d.name not in close]
    n_close = min(len(close), rng.choice((k, k, k - 1)))
    return sample(rng, close, n_close) + sample(rng, far, k - n_close)


def gen_cdn(kb: KnowledgeBase, rng: random.Random) -> dict[str, Any]:
    """An alias or compound description → standard name(s) among candidates (or none)."""
    golds = sample(rng, kb.diseases, 2 if rng.random() < 0.2 else 1)
    if len(golds) == 2:
        raw = f"{_surface(golds[0], rng)}{pick(rng, ('合并', '伴', '并'))}{_surface(golds[1], rng)}"
    else:
        d = golds[0]
        form = rng.randrange(4)
        s = pick(rng, d.symptoms)
        raw = (
            _surface(d, rng),
            f"{_surface(d, rng)}{pick(rng, ('待查', '可能', '复查', '（轻度）'))}",
            f"{s}原因待查，{_surface(d, rng)}",
            f"{d.site}{_surface(d, rng)}",
        )[form]
    no_match = rng.random() < 0.15
    options = _distractors(kb, golds, rng, rng.choice((2, 3, 3, 4)))
    if not no_match:
        options += [d.name for d in golds]
    rng.shuffle(options)
    gold_names = [d.name for d in golds]
    chosen = [o for o in options if o in gold_names]
    target = "，".join(chosen) if chosen else CDN_NONE
    prompt = pick(rng, CDN_PROMPTS).format(raw=raw, opts="，".join(options))
    return rec("CHIP-CDN", "normalization", prompt, target, options)


# ---------------------------------------------------------------- CHIP-CDEE (§3.3)
CDEE_HEADER = "上述句子中的临床发现事件如下："
CDEE_FIELDS = ("主体词", "发生状态", "描述词", "解剖部位")  # the attributes of a finding event
CDEE_STATUSES = ("否定", "不确定")
CDEE_PROMPTS = (
    "临床发现事件抽取：\n{text}\n说明：临床发现事件的主体词包含发生状态，描述词和解剖部位这三种属性，其中描述词和解剖部位可能有多个值\n答：",
    "{text}\n问题：句子中的临床发现事件及其属性是什么？\n说明：临床发现事件由主体词，发生状态，描述词和解剖部位组成\n答：",
)


def _event(subject: str, status: str, descs: list[str], sites: list[str]) -> str:
    values = (subject, status, "，".join(descs), "，".join(sites))
    return "；".join(f"{field}：{value}" for field, value in zip(CDEE_FIELDS, values))


def gen_cdee(kb: KnowledgeBase, rng: random.Random) -> dict[str, Any]:
    """A clinical sentence with 2–3 findings (present, negated, uncertain) → events."""
    d = pick(rng, kb.diseases)
    pos = sample(rng, d.symptoms, 2)
    others = [s for s in kb.symptoms if s not in d.symptoms]
    clauses: list[str] = []
    events: list[str] = []
    s1 = kb.symptoms[pos[0]]
    descs = sample(rng, s1.descriptors, rng.choice((0, 1, 1, 2)))
    sites = [s1.site] if s1.site else []
    if len(descs) == 2:
        clauses.append(f"{pick(rng, DURATIONS)}前出现{s1.site}{s1.core}，呈{descs[0]}、{descs[1]}")
    else:
        clauses.append(f"{pick(rng, DURATIONS)}前出现{s1.site}{''.join(descs)}{s1.core}")
    events.append(_event(s1.core, "", descs, sites))
    if len(pos) > 1 and rng.random() < 0.6:
        s2 = kb.symptoms[pos[1]]
        clauses.append(f"伴{s2.name}")
        events.append(_event(s2.core, "", [], [s2.site] if s2.site else []))
    if rng.random() < 0.7:
        s3 = kb.symptoms[pick(rng, others)]
        clauses.append(f"无{s3.name}")
        events.append(_event(s3.core, "否定", [], [s3.site] if s3.site else []))
    tail = rng.randrange(3)
    if tail == 0:
        clauses.append(f"门诊拟“{d.name}待查”收入院")
        events.append(_event(d.name, "不确定", [], []))
    elif tail == 1:
        clauses.append(f"考虑{d.name}可能")
        events.append(_event(d.name, "不确定", [], []))
    else:
        clauses.append(pick(rng, ("为求进一步诊治来我院就诊", "精神食欲尚可", "今来我院门诊就诊")))
    text = pick(rng, ("患者", "患者于", "患儿")) + "，".join(clauses) + "。"
    return rec(
        "CHIP-CDEE",
        "event_extraction",
        pick(rng, CDEE_PROMPTS).format(text=text),
        "\n".join([CDEE_HEADER, *events]),
        None,
    )
