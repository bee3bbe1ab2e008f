"""Floor scores: what a model that learned nothing about a task scores on it.

Three trivial predictors are scored per task with the same scorer as the methods, on the
same test split:

* ``empty``: an empty answer (the v0.1 parser gives some tasks a non-zero score for it: an
  IMCS-V2-MRG report's section headers are part of gold, so the Rouge-L of an empty report
  is not 0);
* ``majority``: the task's most frequent training target (ties: the one seen first), for
  every test sample of the task;
* ``copy_input``: the input (the prompt) itself, copied as the answer.

The floor of a task is the best of the three (ties: the first in ``PREDICTORS`` order); a
method learns a task only where it scores clearly above that floor. ``avg`` is the unweighted
mean of the task floors, as for methods. The runner records the floors of every job in
``results.json`` (``floors``), scored in the job's primary scorer mode.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

PREDICTORS: tuple[str, ...] = ("empty", "majority", "copy_input")
LABELS = {"empty": "empty", "majority": "majority", "copy_input": "copy input"}


def majority_targets(train: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Task → its most frequent training target (ties: the one seen first)."""
    counts: dict[str, Counter[str]] = {}
    for record in train:
        counts.setdefault(record["task_dataset"], Counter())[record["target"]] += 1
    return {task: c.most_common(1)[0][0] for task, c in counts.items()}


def floor_scores(
    train: Sequence[Mapping[str, Any]],
    test: Sequence[Mapping[str, Any]],
    *,
    tasks: Sequence[str],
    mode: str = "official",
) -> dict[str, Any]:
    """Score the trivial predictors on ``test`` and take the best per task.

    Args:
        train: training records (the majority target of each task); a task without training
            records gets the empty answer as its majority.
        test: gold test records (PromptCBLUE format), as evaluated.
        tasks: the ordered task list of the run.
        mode: scorer mode (``official`` or ``moelora_compat``).

    Returns:
        ``{"mode": mode, "empty": {task: score, ..., "avg": …}, "majority": {…},
        "copy_input": {…}, "floor": {task: best, ..., "avg": mean of the task floors},
        "floor_by": {task: predictor}}``. A score is None where the scorer leaves it
        undefined; a task whose three scores are all undefined has floor None.
    """
    from moelora.evaluation import score_records

    majority = majority_targets(train)
    answers: dict[str, Callable[[Mapping[str, Any]], str]] = {
        "empty": lambda r: "",
        "majority": lambda r: majority.get(r["task_dataset"], ""),
        "copy_input": lambda r: str(r["input"]),
    }
    out: dict[str, Any] = {"mode": mode}
    for name in PREDICTORS:
        predictions = [{**r, "target": answers[name](r)} for r in test]
        out[name] = score_records(test, predictions, mode=mode, tasks=list(tasks)).scores
    floor: dict[str, float | None] = {}
    floor_by: dict[str, str | None] = {}
    for task in tasks:
        defined = [p for p in PREDICTORS if out[p].get(task) is not None]
        best = max(defined, key=lambda p: out[p][task]) if defined else None
        floor[task] = out[best][task] if best else None
        floor_by[task] = best
    values = [v for v in floor.values() if v is not None]
    floor["avg"] = sum(values) / len(values) if values else None
    out["floor"], out["floor_by"] = floor, floor_by
    return out
