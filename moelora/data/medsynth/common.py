"""Shared helpers for the MedSynth-8 generators: sample records, choices, limits.

Every random choice goes through a ``random.Random`` seeded with a string (Python seeds
``Random(str)`` through SHA-512, independent of ``PYTHONHASHSEED``), and every sequence
that is sampled from is a tuple or list in a fixed order, so the output is byte-identical
across machines and runs.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

# Length budgets in characters (the tokenizer is character-level, so characters = tokens).
MAX_INPUT_CHARS = 200
MAX_DIALOGUE_INPUT_CHARS = {"IMCS-V2-MRG": 300, "CHIP-MDCFNPC": 250}
MAX_TARGET_CHARS = 120
MAX_TARGET_CHARS_BY_TASK = {"IMCS-V2-MRG": 126}

# Characters the v0.1 parser rewrites (docs/evaluation.md §3): never put them in a target.
FORBIDDEN_TARGET_CHARS = (":", ",", ";")

DURATIONS = ("两天", "三天", "五天", "一周", "半个月", "一个月")
CN_NUMBERS = ("一", "两", "三", "四", "五", "六", "七", "八")


def rec(
    task: str, task_type: str, input_text: str, target: str, choices: Sequence[str] | None
) -> dict[str, Any]:
    """One PromptCBLUE record without its ``sample_id`` (added when the split is built)."""
    return {
        "input": input_text,
        "target": target,
        "answer_choices": list(choices) if choices is not None else None,
        "task_type": task_type,
        "task_dataset": task,
    }


def pick(rng: random.Random, items: Sequence[T]) -> T:
    return items[rng.randrange(len(items))]


def sample(rng: random.Random, items: Sequence[T], k: int) -> list[T]:
    """``k`` distinct items in random order (``k`` is clipped to ``len(items)``)."""
    return rng.sample(list(items), min(k, len(items)))


def within_limits(task: str, record: dict[str, Any]) -> bool:
    """Whether a generated record fits the length budgets and target character rules."""
    max_in = MAX_DIALOGUE_INPUT_CHARS.get(task, MAX_INPUT_CHARS)
    max_out = MAX_TARGET_CHARS_BY_TASK.get(task, MAX_TARGET_CHARS)
    target = record["target"]
    if len(record["input"]) > max_in or len(target) > max_out:
        return False
    return not any(c in target for c in FORBIDDEN_TARGET_CHARS)


def generate_valid(
    fn: Callable[[Any, random.Random], dict[str, Any]], kb: Any, rng: random.Random, task: str
) -> dict[str, Any]:
    """Draw from ``fn`` until a record fits the budgets (rejection sampling, bounded)."""
    for _ in range(200):
        record = fn(kb, rng)
        if within_limits(task, record):
            return record
    raise RuntimeError(
        f"{task}: 200 draws in a row exceeded the length budget; shorten its templates"
    )
