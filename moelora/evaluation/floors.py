"""Floor scores: what a model that learned nothing about a task scores on it.

Three trivial predictors are scored per task with the same scorer as the methods:

* ``empty``: an empty answer (the v0.1 parser gives some generation tasks a non-zero score
  for it: IMCS-V2-MRG's section headers are part of gold, so Rouge-L of an empty report
  is not 0);
* ``majority``: the task's most frequent training target, for every test sample;
* ``copy_input``: the prompt itself, copied as the answer.

The floor of a task is the best of the three; a method is only learning a task where it
scores clearly above that floor. ``avg`` is the unweighted mean over tasks, as for methods.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

PREDICTORS = ("empty", "majority", "copy_input")


def _majority_targets(train: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Task → its most frequent training target (ties: the first one seen)."""
    counts: dict[str, Counter[str]] = {}
    for r in train:
        counts.setdefault(r["task_dataset"], Counter())[r["target"]] += 1
    return {task: c.most_common(1)[0][0] for task, c in counts.items()}


def floor_scores(train: Sequence[dict[str, Any]], test: Sequence[dict[str, Any]], *,
                 tasks: Sequence[str], mode: str = "official") -> dict[str, dict[str, float | None]]:
    """Score the trivial predictors on ``test`` and take the best per task.

    Args:
        train: training records (for the majority target of each task).
        test: gold test records (PromptCBLUE format).
        tasks: the ordered task list of the run.
        mode: scorer mode (``official`` or ``moelora_compat``).

    Returns:
        ``{"empty": {task: score, ..., "avg": …}, "majority": {…}, "copy_input": {…},
        "floor": {…}, "floor_by": {task: predictor}}``; ``floor_by`` names the predictor
        that gives each task's floor.
    """
    from moelora.evaluation import score_records

    majority = _majority_targets(train)
    answers = {
        "empty": lambda r: "",
        "majority": lambda r: majority.get(r["task_dataset"], ""),
        "copy_input": lambda r: r["input"],
    }
    out: dict[str, dict[str, Any]] = {}
    for name in PREDICTORS:
        predictions = [{**r, "target": answers[name](r)} for r in test]
        out[name] = score_records(test, predictions, mode=mode, tasks=list(tasks)).scores
    floor: dict[str, float | None] = {}
    floor_by: dict[str, str] = {}
    for task in tasks:
        best = max(PREDICTORS, key=lambda p: -1.0 if out[p].get(task) is None else out[p][task])
        floor[task], floor_by[task] = out[best].get(task), best
    values = [v for v in floor.values() if v is not None]
    floor["avg"] = sum(values) / len(values) if values else None
    out["floor"] = floor
    out["floor_by"] = floor_by
    return out
