"""PromptCBLUE scoring (docs/evaluation.md): answer text → structured answer → per-task scores.

Two modes: ``official`` (PromptCBLUE v0.1 parser + official metrics, quirks included; the
default) and ``moelora_compat`` (the MOELoRA authors' scorer, §6.1). Command line:
``python -m moelora.evaluation --gold GOLD.jsonl --pred PRED.jsonl`` (see docs/evaluation.md).
"""

from __future__ import annotations

from moelora.evaluation.api import (
    ScoreReport,
    main_metric,
    score_files,
    score_records,
    score_structured,
)
from moelora.evaluation.errors import ScoringError
from moelora.evaluation.parsers import parse_answer
from moelora.evaluation.registry import (
    ALL_TASKS,
    COMPAT_TASK_METRIC,
    MODES,
    PAPER_TASKS,
    TASK_METRIC,
)

__all__ = [
    "ALL_TASKS",
    "COMPAT_TASK_METRIC",
    "MODES",
    "PAPER_TASKS",
    "TASK_METRIC",
    "ScoreReport",
    "ScoringError",
    "main_metric",
    "parse_answer",
    "score_files",
    "score_records",
    "score_structured",
]
