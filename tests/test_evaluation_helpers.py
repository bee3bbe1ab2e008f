"""Record builders shared by the tests/test_evaluation_*.py files (plus checks of the builders)."""

from __future__ import annotations

from typing import Any

from moelora.evaluation import ScoreReport, score_records


def rec(task: str, target: str, sid: str, choices: list[str] | None = None) -> dict[str, Any]:
    """One PromptCBLUE line."""
    return {
        "input": "…",
        "target": target,
        "answer_choices": choices,
        "task_type": "x",
        "task_dataset": task,
        "sample_id": sid,
    }


def score_task(
    task: str,
    gold: list[str],
    pred: list[str],
    choices: list[str] | None = None,
    *,
    mode: str = "official",
) -> ScoreReport:
    """Score one task from parallel lists of gold and predicted texts."""
    g = [rec(task, t, f"s{i}", choices) for i, t in enumerate(gold)]
    p = [rec(task, t, f"s{i}", choices) for i, t in enumerate(pred)]
    return score_records(g, p, mode=mode)


def rouge_f(p: float, r: float) -> float:
    """The packages' F with its 1e-8 term (0 when the LCS is 0)."""
    return 2 * p * r / (p + r + 1e-8)


def test_rouge_f_matches_rouge_chinese():
    from rouge_chinese import Rouge

    got = Rouge().get_scores("小 儿 便 秘", "便 秘")[0]["rouge-l"]["f"]
    assert got == rouge_f(0.5, 1.0)


def test_score_task_builds_aligned_records():
    report = score_task("KUAKE-QIC", ["就医建议"], ["就医建议"])
    assert report.scores == {"KUAKE-QIC": 1.0, "avg": 1.0}
