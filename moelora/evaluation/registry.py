"""The 16 PromptCBLUE v0.1 tasks: kind, main metric and empty-prediction fallback label.

Sources: docs/evaluation.md §3 (the 8 paper tasks), §4.2 (fallback labels) and §9 (the other 8).
"""

from __future__ import annotations

# Table 2's column order (the MOELoRA-peft notebook's task list).
PAPER_TASKS: tuple[str, ...] = (
    "CMeIE",
    "CHIP-CDN",
    "CHIP-CDEE",
    "CHIP-MDCFNPC",
    "CHIP-CTC",
    "KUAKE-QIC",
    "IMCS-V2-MRG",
    "MedDG",
)
OTHER_TASKS: tuple[str, ...] = (
    "CMeEE-V2",
    "IMCS-V2-NER",
    "IMCS-V2-SR",
    "CHIP-STS",
    "KUAKE-IR",
    "KUAKE-QQR",
    "KUAKE-QTR",
    "IMCS-V2-DAC",
)
ALL_TASKS: tuple[str, ...] = PAPER_TASKS + OTHER_TASKS

MODES: tuple[str, ...] = ("official", "moelora_compat")

# "ie": list of dicts, micro-F1 · "cls": one label string · "meddg": free text · "mrg": dict of sections
TASK_KIND: dict[str, str] = {
    "CMeIE": "ie",
    "CHIP-CDN": "ie",
    "CHIP-CDEE": "ie",
    "CHIP-MDCFNPC": "ie",
    "CMeEE-V2": "ie",
    "IMCS-V2-NER": "ie",
    "IMCS-V2-SR": "ie",
    "CHIP-CTC": "cls",
    "KUAKE-QIC": "cls",
    "IMCS-V2-DAC": "cls",
    "CHIP-STS": "cls",
    "KUAKE-IR": "cls",
    "KUAKE-QQR": "cls",
    "KUAKE-QTR": "cls",
    "IMCS-V2-MRG": "mrg",
    "MedDG": "meddg",
}

# Main metric per task, official mode (evaluate.py). The README's "Micro" for STS/IR/QQR/QTR
# is the classification_report *weighted* average in the code (§4.2, §9).
TASK_METRIC: dict[str, str] = {
    "CMeIE": "micro_f1",
    "CHIP-CDN": "micro_f1",
    "CHIP-CDEE": "micro_f1",
    "CHIP-MDCFNPC": "micro_f1",
    "CMeEE-V2": "micro_f1",
    "IMCS-V2-NER": "micro_f1",
    "IMCS-V2-SR": "micro_f1",
    "CHIP-CTC": "macro_f1",
    "KUAKE-QIC": "macro_f1",
    "IMCS-V2-DAC": "macro_f1",
    "CHIP-STS": "weighted_f1",
    "KUAKE-IR": "weighted_f1",
    "KUAKE-QQR": "weighted_f1",
    "KUAKE-QTR": "weighted_f1",
    "IMCS-V2-MRG": "rouge_l",
    "MedDG": "rouge_l",
}

# Main metric per task in the authors' scorer (MOELoRA-peft results/evaluation.py, §6.1): its
# "micro" branch lists CHIP-CTC first, so CTC (and STS/IR/QQR/QTR) is micro-F1 = accuracy.
COMPAT_TASK_METRIC: dict[str, str] = {
    **TASK_METRIC,
    "CHIP-CTC": "micro_f1",
    "CHIP-STS": "micro_f1",
    "KUAKE-IR": "micro_f1",
    "KUAKE-QQR": "micro_f1",
    "KUAKE-QTR": "micro_f1",
}

# Official: an empty classification prediction becomes the first entry of the task's label
# list in evaluate.py (HEAD names for QQR/QTR).
EMPTY_FALLBACK: dict[str, str] = {
    "CHIP-CTC": "非上述类型",
    "KUAKE-QIC": "非上述类型",
    "IMCS-V2-DAC": "非上述类型",
    "CHIP-STS": "是的",
    "KUAKE-IR": "相关",
    "KUAKE-QQR": "完全一致",
    "KUAKE-QTR": "完全不匹配或者没有参考价值",
}


def canonical_order(tasks: list[str]) -> list[str]:
    """Known tasks in ``ALL_TASKS`` order (paper tasks first, Table 2 order)."""
    return [t for t in ALL_TASKS if t in set(tasks)]
