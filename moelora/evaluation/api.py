"""Score PromptCBLUE predictions: ``score_records`` (JSON Lines records) and ``score_structured``
(structured files), in ``official`` or ``moelora_compat`` mode (docs/evaluation.md §2, §5, §6.1).

Records are matched to gold by ``sample_id`` and scored in gold order. Every input problem
raises :class:`ScoringError` (nothing is skipped or guessed): a missing, extra or duplicate
sample, an unknown task or mode, a prediction whose task differs from its gold, a non-string
``target``, or answer_choices that its task's parser needs but the line lacks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from moelora.evaluation import compat, official
from moelora.evaluation.errors import ScoringError
from moelora.evaluation.parsers import parse_answer
from moelora.evaluation.registry import (
    ALL_TASKS,
    COMPAT_TASK_METRIC,
    MODES,
    TASK_KIND,
    TASK_METRIC,
    canonical_order,
)
from moelora.evaluation.result import TaskResult
from moelora.utils.io import DataFormatError, read_jsonl_lines


@dataclass
class ScoreReport:
    """Scores on the 0–1 scale.

    Attributes:
        mode: ``official`` or ``moelora_compat``.
        scores: task → main metric (``TASK_METRIC``; compat: ``COMPAT_TASK_METRIC``), plus
            ``avg`` (unweighted mean over the tasks present). None where undefined.
        detail: task → {precision, recall, <main metric>} or {rouge_1, rouge_2, rouge_l, ...}.
        undefined: task (or ``avg``) → why it is undefined (only where a score is None).
        n_samples: task → number of scored samples.
    """

    mode: str
    scores: dict[str, float | None]
    detail: dict[str, dict[str, float | None]]
    undefined: dict[str, str] = field(default_factory=dict)
    n_samples: dict[str, int] = field(default_factory=dict)

    def to_dict(self, detail: bool = False) -> dict[str, Any]:
        """``{"mode": ..., task: score, ..., "avg": ...}`` (+ ``undefined`` when any, and
        ``detail`` / ``n_samples`` when ``detail``)."""
        out: dict[str, Any] = {"mode": self.mode, **self.scores}
        if self.undefined:
            out["undefined"] = dict(self.undefined)
        if detail:
            out["detail"] = {t: dict(d) for t, d in self.detail.items()}
            out["n_samples"] = dict(self.n_samples)
        return out


class _Source:
    """Names records in messages: ``file:line`` when known, else ``<name> record <k>``."""

    def __init__(self, name: str, lines: Sequence[int] | None = None) -> None:
        self.name, self.lines = name, lines

    def at(self, i: int) -> str:
        if self.lines is not None:
            return f"{self.name}:{self.lines[i]}"
        return f"{self.name} record {i + 1}"


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ScoringError(f"unknown mode {mode!r}; use one of {list(MODES)}")


def _check_task_name(task: Any, where: str) -> str:
    if task not in ALL_TASKS:
        hint = " (v0.1 data spells it 'CMeIE')" if task == "CMeIE-V2" else ""
        raise ScoringError(
            f"{where}: unknown task {task!r}{hint}; known PromptCBLUE v0.1 tasks: {list(ALL_TASKS)}"
        )
    return task


def _select_tasks(present: Sequence[str], tasks: Sequence[str] | None) -> list[str]:
    if tasks is None:
        return canonical_order(list(present))
    if isinstance(tasks, str):
        tasks = [tasks]
    selected = list(dict.fromkeys(tasks))
    if not selected:
        raise ScoringError("tasks is empty; name at least one task or pass None for all")
    for t in selected:
        _check_task_name(t, "tasks")
    absent = [t for t in selected if t not in present]
    if absent:
        raise ScoringError(f"task(s) {absent} have no gold samples; the gold has {list(present)}")
    return selected


def _index(records: Sequence[Any], src: _Source, side: str) -> dict[Any, int]:
    """sample_id → position; validates the fields every record needs."""
    index: dict[Any, int] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise ScoringError(f"{src.at(i)}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in ("sample_id", "task_dataset", "target") if k not in rec]
        if missing:
            raise ScoringError(
                f"{src.at(i)}: {side} sample is missing field(s) {missing}; each "
                "line needs sample_id, task_dataset, target (and answer_choices)"
            )
        sid = rec["sample_id"]
        if not isinstance(sid, str | int):
            raise ScoringError(f"{src.at(i)}: sample_id must be a string, got {sid!r}")
        if sid in index:
            raise ScoringError(
                f"{src.at(i)}: duplicate sample_id {sid!r} (first at "
                f"{src.at(index[sid])}); each sample must appear once"
            )
        _check_task_name(rec["task_dataset"], src.at(i))
        if not isinstance(rec["target"], str):
            raise ScoringError(
                f"{src.at(i)}: target of sample_id {sid!r} must be a string, got "
                f'{type(rec["target"]).__name__}; write the generated text ("" '
                "if the model produced nothing)"
            )
        index[sid] = i
    return index


def _parse(rec: Mapping[str, Any], where: str) -> Any:
    if "answer_choices" not in rec:
        raise ScoringError(
            f"{where}: no answer_choices field (sample_id {rec['sample_id']!r}); "
            "copy each sample's answer_choices (null if none) onto its line"
        )
    try:
        return parse_answer(rec["task_dataset"], rec["target"], rec["answer_choices"])
    except ScoringError as e:
        raise ScoringError(f"{where}: {e}") from None


def _score_aligned(mode: str, aligned: dict[str, tuple[list, list, list]]) -> ScoreReport:
    """aligned: task → (sample ids, gold answers, predicted answers), tasks in output order."""
    scorer = official.score_task if mode == "official" else compat.score_task
    scores: dict[str, float | None] = {}
    detail: dict[str, dict[str, float | None]] = {}
    undefined: dict[str, str] = {}
    n_samples: dict[str, int] = {}
    for task, (ids, gold, pred) in aligned.items():
        res: TaskResult = scorer(task, gold, pred, ids)
        scores[task], detail[task], n_samples[task] = res.score, res.detail, len(ids)
        if res.score is None:
            undefined[task] = res.reason or "undefined"
    bad = [t for t in scores if scores[t] is None]
    if bad:
        scores["avg"] = None
        undefined["avg"] = (
            f"undefined: {', '.join(bad)} {'is' if len(bad) == 1 else 'are'} undefined"
        )
    else:
        vals = [scores[t] for t in aligned]
        scores["avg"] = sum(vals) / len(vals)
    return ScoreReport(
        mode=mode, scores=scores, detail=detail, undefined=undefined, n_samples=n_samples
    )


def score_records(
    gold: list[dict],
    pred: list[dict],
    *,
    mode: str = "official",
    tasks: Sequence[str] | None = None,
) -> ScoreReport:
    """Parse and score predictions against gold, both PromptCBLUE records.

    Args:
        gold: gold records (``target`` = gold answer text). Parsed with the same v0.1 parser.
        pred: prediction records (``target`` = generated text), each with its own
            ``answer_choices``; matched to gold by ``sample_id``, in any order.
        mode: ``official`` (PromptCBLUE scorer, default) or ``moelora_compat`` (authors' scorer).
        tasks: tasks to score, in output order (default: every task in the gold, Table 2
            order first). Predictions are required for every gold sample of these tasks.

    Returns:
        A :class:`ScoreReport`.

    Raises:
        ScoringError: on any input problem (see the module docstring).
    """
    return _score_records(gold, pred, mode, tasks, _Source("gold"), _Source("pred"))


def score_files(
    gold_path: str | os.PathLike,
    pred_path: str | os.PathLike,
    *,
    mode: str = "official",
    tasks: Sequence[str] | None = None,
) -> ScoreReport:
    """``score_records`` on two PromptCBLUE JSON Lines files; messages name ``file:line``.

    Raises:
        ScoringError: on any input problem, a malformed line or a missing file included.
    """
    sides = []
    for path in (gold_path, pred_path):
        try:
            numbered = read_jsonl_lines(path)  # blank lines skipped, line numbers kept
        except (DataFormatError, FileNotFoundError) as e:  # a non-UTF-8 line is named too
            raise ScoringError(str(e)) from None
        sides.append(([r for _, r in numbered], _Source(str(path), [n for n, _ in numbered])))
    (gold, gsrc), (pred, psrc) = sides
    return _score_records(gold, pred, mode, tasks, gsrc, psrc)


def _score_records(
    gold: list[dict],
    pred: list[dict],
    mode: str,
    tasks: Sequence[str] | None,
    gsrc: _Source,
    psrc: _Source,
) -> ScoreReport:
    _check_mode(mode)
    if not isinstance(gold, list | tuple) or not isinstance(pred, list | tuple):
        raise ScoringError("gold and pred must be lists of records (dicts)")
    if not gold:
        raise ScoringError(f"{gsrc.name}: no gold samples")
    gidx = _index(gold, gsrc, "gold")
    pidx = _index(pred, psrc, "prediction")
    present = list(dict.fromkeys(r["task_dataset"] for r in gold))
    selected = _select_tasks(present, tasks)
    for sid, i in pidx.items():
        if sid not in gidx:
            raise ScoringError(
                f"{psrc.at(i)}: extra sample_id {sid!r} is not in the gold; "
                "predict exactly the gold samples"
            )
        gt, pt = gold[gidx[sid]]["task_dataset"], pred[i]["task_dataset"]
        if gt != pt:
            raise ScoringError(
                f"{psrc.at(i)}: sample_id {sid!r} has task_dataset {pt!r} but "
                f"{gt!r} in the gold ({gsrc.at(gidx[sid])})"
            )
    wanted = set(selected)
    missing = [
        r["sample_id"] for r in gold if r["task_dataset"] in wanted and r["sample_id"] not in pidx
    ]
    if missing:
        raise ScoringError(
            f"{psrc.name}: {len(missing)} gold sample(s) have no prediction, e.g. "
            f"{missing[:5]}; predict every gold sample of the scored tasks"
        )
    aligned: dict[str, tuple[list, list, list]] = {t: ([], [], []) for t in selected}
    for gi, g in enumerate(gold):
        task = g["task_dataset"]
        if task not in wanted:
            continue
        pi = pidx[g["sample_id"]]
        ids, gans, pans = aligned[task]
        ids.append(g["sample_id"])
        gans.append(_parse(g, gsrc.at(gi)))
        pans.append(_parse(pred[pi], psrc.at(pi)))
    return _score_aligned(mode, aligned)


def _check_answer(task: str, answer: Any, where: str) -> None:
    kind = TASK_KIND[task]
    ok = {
        "ie": isinstance(answer, list) and all(isinstance(a, dict) for a in answer),
        "cls": isinstance(answer, str),
        "meddg": isinstance(answer, str),
        "mrg": isinstance(answer, dict) and all(isinstance(v, str) for v in answer.values()),
    }[kind]
    if not ok:
        want = {
            "ie": "a list of objects",
            "cls": "a string",
            "meddg": "a string",
            "mrg": "an object of section strings",
        }[kind]
        raise ScoringError(f"{where}: answer must be {want}, got {answer!r:.80}")


def score_structured(
    gold: Mapping[str, list[dict]],
    pred: Mapping[str, list[dict]],
    *,
    mode: str = "official",
    tasks: Sequence[str] | None = None,
) -> ScoreReport:
    """Score structured files (``{task: [{"sample_id", "answer"}, ...]}``), position by
    position with equal ``sample_id``s, as the official ``evaluate.py`` does."""
    _check_mode(mode)
    for name, d in (("gold", gold), ("pred", pred)):
        if not isinstance(d, Mapping):
            raise ScoringError(f"{name}: a structured file is one JSON object {{task: [...]}}")
        for t in d:
            _check_task_name(t, name)
    present = [t for t in gold if gold[t]]
    selected = _select_tasks(present, tasks)
    aligned: dict[str, tuple[list, list, list]] = {}
    for task in selected:
        if task not in pred:
            raise ScoringError(f"pred: task {task} is missing; it has {list(pred)}")
        g_list, p_list = gold[task], pred[task]
        if len(g_list) != len(p_list):
            raise ScoringError(f"pred: {task} has {len(p_list)} samples, the gold {len(g_list)}")
        ids, gans, pans = [], [], []
        for k, (g, p) in enumerate(zip(g_list, p_list)):
            for name, s in (("gold", g), ("pred", p)):
                if not isinstance(s, Mapping) or "sample_id" not in s or "answer" not in s:
                    raise ScoringError(f"{name}: {task}[{k}] needs sample_id and answer")
            if g["sample_id"] != p["sample_id"]:
                raise ScoringError(
                    f"pred: {task}[{k}] is sample_id {p['sample_id']!r}, the gold "
                    f"{g['sample_id']!r}; list samples in gold order"
                )
            _check_answer(task, g["answer"], f"gold: {task}[{k}]")
            _check_answer(task, p["answer"], f"pred: {task}[{k}]")
            ids.append(g["sample_id"])
            gans.append(g["answer"])
            pans.append(p["answer"])
        aligned[task] = (ids, gans, pans)
    return _score_aligned(mode, aligned)


def main_metric(task: str, mode: str = "official") -> str:
    """The main metric name of ``task`` in ``mode``."""
    _check_mode(mode)
    return (TASK_METRIC if mode == "official" else COMPAT_TASK_METRIC)[task]
