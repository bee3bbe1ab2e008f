"""Generated (or gold) answer text → structured answer, one parser per task.

docs/evaluation.md §3, §9.

This reproduces the official PromptCBLUE **v0.1** parser (``src/for_eval/post_generate_process.py``,
copied verbatim into MOELoRA-peft ``results/``), quirks included; the same code parses gold and
predictions. ``parser="v0.2"`` gives the later HEAD parser's differences (§6.2): no ASCII →
full-width pre-normalisation, the MDCFNPC fallback label ``不标注``, and CMeIE spelled ``CMeIE-V2``.

Two behaviours of the upstream code that §3 does not spell out are reproduced too:

* CHIP-CDEE: after a chunk matches ``K：`` its text (with every ``K：`` deleted and stripped) is
  what the later keys are tested against, so ``主体词：描述词：x`` sets 主体词 = ``描述词：x`` *and*
  描述词 = ``[x]`` (keys are tried in the order 主体词, 发生状态, 描述词, 解剖部位).
* CMeIE: every ``尾实体为`` is deleted from the tail too, as every ``头实体为`` is from the head.
"""

from __future__ import annotations

from typing import Any

from moelora.evaluation.errors import ScoringError
from moelora.evaluation.registry import ALL_TASKS

PARSERS: tuple[str, ...] = ("v0.1", "v0.2")

CDEE_KEYS: tuple[str, ...] = ("主体词", "发生状态", "描述词", "解剖部位")
CDEE_LIST_KEYS: tuple[str, ...] = ("描述词", "解剖部位")
MRG_SECTIONS: tuple[str, ...] = ("主诉", "现病史", "辅助检查", "既往史", "诊断", "建议")
MDCFNPC_FALLBACK = {"v0.1": "无实际意义的不标注或者和病人当前的状态独立不标注", "v0.2": "不标注"}
SR_FALLBACK = "无法根据上下文确定病人是否患有该症状"
CDN_NONE = "没有对应的标准化实体"  # not a candidate, so it parses to [] (§3.2)

# Upstream asserts a list of answer_choices for these; CDN, MDCFNPC and SR only test membership
# in it, which fails (TypeError upstream, ScoringError here) once there is an item to test.
_ASSERTS_CHOICES = ("CMeIE", "CMeEE-V2", "IMCS-V2-NER")


def _check_choices(task: str, choices: Any) -> list[str]:
    if not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
        raise ScoringError(
            f"{task}: answer_choices must be a list of strings (got "
            f"{type(choices).__name__}); keep each sample's original "
            "answer_choices on its prediction line"
        )
    return choices


def prenormalise(text: str) -> str:
    """v0.1: the first 100 ASCII ``:`` ``,`` ``;`` each become ``：`` ``，`` ``；`` (independently)."""
    return text.replace(":", "：", 100).replace(",", "，", 100).replace(";", "；", 100)


def _split_items(text: str) -> list[str]:
    """Split on ``，``, strip, drop empties."""
    return [w.strip() for w in text.split("，") if w.strip()]


def parse_entities(text: str, choices: list[str]) -> list[dict[str, str]]:
    """CMeEE-V2 / IMCS-V2-NER: for each type T (in choices order), every line starting with ``T实体``."""
    items = []
    for choice in choices:
        for line in text.split("\n"):
            if line.startswith(f"{choice}实体"):
                for mention in _split_items(line.replace(f"{choice}实体：", "")):
                    items.append({"entity": mention, "type": choice})
    return items


def parse_cmeie(text: str) -> list[dict[str, str]]:
    """CMeIE (§3.1): predicate = line up to ``关系的头尾实体对`` minus 2 chars; pairs split on ``。``."""
    triples = []
    for line in text.split("\n"):
        predicate = line.split("关系的头尾实体对")[0][2:].strip()
        line = line.replace(f"具有{predicate}关系的头尾实体对如下：", "")
        for piece in line.split("。"):
            parts = piece.split("，尾实体为")
            if len(parts) < 2:
                continue
            head, tail = parts[:2]
            triples.append(
                {
                    "predicate": predicate,
                    "subject": head.replace("头实体为", "").strip(),
                    "object": tail.replace("尾实体为", "").strip(),
                }
            )
    return triples


def parse_cdn(text: str, choices: list[str] | None) -> list[dict[str, str]]:
    """CHIP-CDN (§3.2): last line only, ``，``-split, kept if a candidate, deduplicated.

    Upstream dedupes through a ``set`` (order depends on the hash seed); first-occurrence order
    is used here, which the set-based metric cannot tell apart.
    """
    items = _split_items(text.split("\n")[-1])
    if items:  # upstream tests membership only when there is an item
        choices = _check_choices("CHIP-CDN", choices)
        items = [w for w in items if w in choices]
    return [{"entity": w, "type": "normalization"} for w in dict.fromkeys(items)]


def parse_cdee(text: str) -> list[dict[str, Any]]:
    """CHIP-CDEE (§3.3): drop the first line; every other line (even empty) is one event."""
    events = []
    for line in text.split("\n")[1:]:
        event: dict[str, Any] = {}
        for chunk in line.split("；"):
            for (
                key
            ) in CDEE_KEYS:  # `chunk` is rewritten on a match and tested again (see module doc)
                if chunk.startswith(f"{key}："):
                    chunk = chunk.replace(f"{key}：", "").strip()
                    event[key] = _split_items(chunk) if key in CDEE_LIST_KEYS else chunk
        for key in CDEE_KEYS:
            event.setdefault(key, [] if key in CDEE_LIST_KEYS else "")
        events.append(event)
    return events


def parse_findings(
    text: str, choices: list[str] | None, fallback: str, task: str = "CHIP-MDCFNPC"
) -> list[dict[str, str]]:
    """CHIP-MDCFNPC / IMCS-V2-SR (§3.4): drop the first line; ``entity：label`` lines (exactly one
    ``：``); the label is not stripped and falls back when it is not one of the choices."""
    items = []
    for line in text.split("\n")[1:]:
        parts = line.split("：")
        if len(parts) != 2:
            continue
        entity, label = parts
        known = label in _check_choices(task, choices)
        items.append({"entity": entity.strip(), "attr": label if known else fallback})
    return items


def parse_mrg(text: str) -> dict[str, str]:
    """IMCS-V2-MRG (§3.7): strip, drop the first line; ``K：`` lines (unstripped check), last wins."""
    lines = text.strip().split("\n")[1:]
    report: dict[str, str] = {}
    for section in MRG_SECTIONS:
        key = f"{section}："
        for line in lines:
            if line.startswith(key):
                report[section] = line.strip().split(key)[-1].strip()
    return report


def parse_label(task: str, text: str) -> str:
    """Classification tasks (§3.5, §9): the stripped text; CHIP-STS maps 相同/不同 to 是的/不是."""
    answer = text.strip()
    if task == "CHIP-STS":
        answer = {"相同": "是的", "不同": "不是"}.get(answer, answer)
    return answer


def parse_answer(
    task: str, text: str, answer_choices: list[str] | None, *, parser: str = "v0.1"
) -> Any:
    """Parse one answer text (gold ``target`` or generated text) into its structured answer.

    Args:
        task: the ``task_dataset`` name (v0.1 spelling; ``CMeIE-V2`` only with ``parser="v0.2"``).
        text: the raw answer text.
        answer_choices: the ``answer_choices`` of the line being parsed (list or None).
        parser: ``"v0.1"`` (default, the official scorer of the v0.1 data) or ``"v0.2"``.

    Returns:
        A list of dicts (extraction tasks), a label string (classification), a dict of
        report sections (IMCS-V2-MRG) or a string (MedDG).

    Raises:
        ScoringError: unknown task or parser, non-string text, or answer_choices that is not a
            list of strings where the parser needs it (as upstream fails there).
    """
    if parser not in PARSERS:
        raise ScoringError(f"unknown parser {parser!r}; use one of {list(PARSERS)}")
    if parser == "v0.2":
        if task == "CMeIE":
            raise ScoringError(
                "the v0.2 parser spells this task 'CMeIE-V2'; use parser='v0.1' for v0.1 data"
            )
        task = "CMeIE" if task == "CMeIE-V2" else task
    if task not in ALL_TASKS:
        raise ScoringError(
            f"unknown task {task!r}; known PromptCBLUE v0.1 tasks: {list(ALL_TASKS)}"
        )
    if not isinstance(text, str):
        raise ScoringError(f"{task}: the answer text must be a string, got {type(text).__name__}")
    if task in _ASSERTS_CHOICES:
        _check_choices(task, answer_choices)
    if parser == "v0.1":
        text = prenormalise(text)
    if task in ("CMeEE-V2", "IMCS-V2-NER"):
        return parse_entities(text, answer_choices)
    if task == "CMeIE":
        return parse_cmeie(text)
    if task == "CHIP-CDN":
        return parse_cdn(text, answer_choices)
    if task == "CHIP-CDEE":
        return parse_cdee(text)
    if task == "CHIP-MDCFNPC":
        return parse_findings(text, answer_choices, MDCFNPC_FALLBACK[parser])
    if task == "IMCS-V2-SR":
        return parse_findings(text, answer_choices, SR_FALLBACK, task)
    if task == "IMCS-V2-MRG":
        return parse_mrg(text)
    if task == "MedDG":
        return text.strip()
    return parse_label(task, text)
