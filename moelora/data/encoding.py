"""PromptCBLUE records → token tensors with task ids (docs/methods.md §1.1–1.2).

A record is one PromptCBLUE JSON line (``input``, ``target``, ``answer_choices``,
``task_type``, ``task_dataset``, ``sample_id``). Its task id comes from the ordered task
list of the run (:class:`moelora.method.tasks.TaskMap`). Training sequences are
``prompt + answer + eos`` with the loss on ``answer + eos`` only (Eq. 2); generation
inputs are the same prompts, left-padded.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from moelora.method.tasks import TASK_TYPES, TaskMap
from moelora.utils.io import DataFormatError, read_jsonl_lines

REQUIRED_FIELDS = ("input", "target", "task_dataset", "sample_id")
IGNORE_INDEX = -100

# Task-prompt prefixes for LoRA (Full+TP), docs/methods.md §4.3 (``tp.mode: name``).
TASK_NAMES_ZH = {
    "CMeIE": "医学实体关系抽取",
    "CHIP-CDN": "临床术语标准化",
    "CHIP-CDEE": "临床发现事件抽取",
    "CHIP-MDCFNPC": "临床发现阴阳性判断",
    "CHIP-CTC": "临床试验筛选标准分类",
    "KUAKE-QIC": "医疗搜索检索词意图分类",
    "IMCS-V2-MRG": "医疗对话诊疗报告生成",
    "MedDG": "医疗对话生成",
}
# Table 1's English descriptions (``tp.mode: name_desc``).
TASK_DESC_EN = {
    "CMeIE": "entity and relation extraction",
    "CHIP-CDN": "clinical term normalization",
    "CHIP-CDEE": "clinical finding event extraction",
    "CHIP-MDCFNPC": "clinical finding positive/negative judgement",
    "CHIP-CTC": "clinical trial criterion classification",
    "KUAKE-QIC": "medical search query intent classification",
    "IMCS-V2-MRG": "medical report generation from a dialogue",
    "MedDG": "medical dialogue generation",
}


def check_sample_id(value: Any, where: str) -> None:
    """A ``sample_id`` must be a non-empty string or an integer: predictions are matched to
    gold answers by it, and ``NaN`` (which JSON readers accept) equals nothing, not even
    itself."""
    if isinstance(value, str) and value.strip():
        return
    if isinstance(value, int) and not isinstance(value, bool):
        return
    got = json.dumps(value) if not isinstance(value, float) else repr(value)
    raise DataFormatError(
        f"{where}: sample_id {got} is not a non-empty string or an integer; give the line a "
        "unique string id (predictions are matched to gold answers by it)"
    )


def check_tasks_present(
    splits: dict[str, list[dict[str, Any]]], files: dict[str, Any], task_map: TaskMap
) -> None:
    """Every task of ``task_map`` has lines in every split (training, selection and scoring
    each need every task), checked before any training step.

    Raises:
        DataFormatError: naming the split file, the missing tasks and the fix.
    """
    for split, records in splits.items():
        present = {r["task_dataset"] for r in records}
        missing = [t for t in task_map.tasks if t not in present]
        if missing:
            raise DataFormatError(
                f"{files.get(split, split)}: the {split} split has no line of task(s) {missing}, "
                f"which data.tasks lists; add their lines to the file or remove them from "
                "data.tasks"
            )


def load_split(
    path: str | os.PathLike,
    task_map: TaskMap,
    *,
    drop_unlisted_tasks: bool = False,
    require_target: bool = True,
) -> list[dict[str, Any]]:
    """Read and validate one split.

    Args:
        path: a PromptCBLUE JSON Lines file.
        task_map: the run's ordered tasks; a record of another task is an error unless
            ``drop_unlisted_tasks`` (then it is skipped).
        require_target: gold splits need a non-empty ``target`` on at least one line.

    Raises:
        DataFormatError: naming the file and line, what is wrong and how to fix it: a line that
            is not UTF-8 or not JSON, a missing field, an unknown task, a ``task_type`` that
            does not fit its task (``moelora.method.tasks.TASK_TYPES``), duplicate ``sample_id`` values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: split file not found; check data.root (and run `make data` for MedSynth-8)"
        )
    records: list[dict[str, Any]] = []
    lines: dict[str, list[int]] = {}
    for lineno, rec in read_jsonl_lines(path):
        missing = [f for f in REQUIRED_FIELDS if f not in rec]
        if missing:
            raise DataFormatError(
                f"{path}:{lineno}: sample is missing field(s) {missing}; every line needs "
                f"{list(REQUIRED_FIELDS)} (PromptCBLUE format)"
            )
        bad = [f for f in ("input", "target", "task_dataset") if not isinstance(rec[f], str)]
        if bad:
            raise DataFormatError(f"{path}:{lineno}: field(s) {bad} must be strings")
        check_sample_id(rec["sample_id"], f"{path}:{lineno}")
        choices = rec.get("answer_choices")
        if choices is not None and (
            not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)
        ):
            raise DataFormatError(
                f"{path}:{lineno}: answer_choices must be a list of strings or null, got "
                f"{json.dumps(choices, ensure_ascii=False)[:80]}"
            )
        task = rec["task_dataset"]
        if task not in task_map:
            if drop_unlisted_tasks:
                continue
            raise DataFormatError(
                f"{path}:{lineno}: unknown task_dataset {task!r}; this run's tasks are "
                f"{task_map.tasks}. Fix the line, add the task to data.tasks, or set "
                "data.drop_unlisted_tasks=true"
            )
        expected = TASK_TYPES.get(task)
        if rec.get("task_type") and expected and rec["task_type"] != expected:
            raise DataFormatError(
                f"{path}:{lineno}: task_type {rec['task_type']!r} does not fit task_dataset "
                f"{task!r} (its task_type is {expected!r}); the line is mislabelled: fix its "
                "task_dataset or its task_type"
            )
        rec.setdefault("answer_choices", None)
        rec.setdefault("task_type", "")
        lines.setdefault(str(rec["sample_id"]), []).append(lineno)
        records.append(rec)
    if not records:
        raise DataFormatError(
            f"{path}: the split is empty (no sample of tasks {task_map.tasks}); "
            "check data.root and data.tasks"
        )
    duplicates = {sid: at for sid, at in lines.items() if len(at) > 1}
    if duplicates:
        shown = "; ".join(
            f"{sid!r} on lines {', '.join(map(str, at))}"
            for sid, at in list(duplicates.items())[:5]
        )
        more = f" (and {len(duplicates) - 5} more)" if len(duplicates) > 5 else ""
        raise DataFormatError(
            f"{path}: {len(duplicates)} duplicate sample_id value(s): {shown}{more}; every "
            "sample_id must be unique within a split (predictions are matched by it): remove "
            "the repeated lines or give them their own ids"
        )
    if require_target and not any(r["target"] for r in records):
        raise DataFormatError(
            f"{path}: every target is empty, so this split has no gold answers to train on or "
            "score against; use a split with gold targets (for the toy data, dev as test)"
        )
    return records


def task_prompt_prefix(task: str, mode: str | None, demo: dict[str, Any] | None = None) -> str:
    """The LoRA (Full+TP) prefix for ``task`` (docs/methods.md §4.3)."""
    if not mode:
        return ""
    if mode == "name":
        return f"【任务：{TASK_NAMES_ZH.get(task, task)}】\n"
    if mode == "name_desc":
        desc = TASK_DESC_EN.get(task, task)
        return f"【任务：{TASK_NAMES_ZH.get(task, task)}（{desc}）】\n"
    if mode == "one_shot":
        if demo is None:
            raise ValueError(f"task_prompt=one_shot needs a training demonstration for {task}")
        return f"{demo['input']}{demo['target']}\n\n"
    raise ValueError(f"unknown task_prompt mode {mode!r}; use name, name_desc or one_shot")


def apply_task_prompt(
    splits: dict[str, list[dict[str, Any]]], mode: str | None, *, seed: int
) -> dict[str, list[dict[str, Any]]]:
    """Prefix every input of every split with its task prompt (a copy; gold untouched)."""
    if not mode:
        return splits
    demos: dict[str, dict[str, Any]] = {}
    if mode == "one_shot":
        rng = random.Random(seed)
        by_task: dict[str, list[dict[str, Any]]] = {}
        for r in splits["train"]:
            by_task.setdefault(r["task_dataset"], []).append(r)
        demos = {t: rng.choice(rs) for t, rs in sorted(by_task.items())}
    out = {}
    for name, records in splits.items():
        out[name] = [
            {
                **r,
                "input": task_prompt_prefix(r["task_dataset"], mode, demos.get(r["task_dataset"]))
                + r["input"],
            }
            for r in records
        ]
    return out


@dataclass
class Encoder:
    """Tokenises records for training and generation (docs/methods.md §1.2).

    Args:
        tokenizer: a HF tokenizer with ``eos_token_id``; ``pad_token_id`` falls back to eos.
        task_map: maps ``task_dataset`` to task ids.
        max_source_length: prompt budget in tokens.
        max_target_length: answer budget in tokens, EOS included.
        truncation_side: ``right`` keeps the head of long prompts (authors), ``left`` the tail.
        add_special_tokens: whether the prompt gets the tokenizer's special tokens (ChatGLM's
            ``[gMASK]`` + BOS); plain causal LMs use ``False``.
    """

    tokenizer: Any
    task_map: TaskMap
    max_source_length: int
    max_target_length: int
    truncation_side: str = "right"
    add_special_tokens: bool = False

    def __post_init__(self) -> None:
        if self.truncation_side not in ("right", "left"):
            raise ValueError(f"truncation_side={self.truncation_side!r}; use 'right' or 'left'")
        if self.tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos_token; set one in the model directory")
        if self.max_target_length < 2:
            raise ValueError("data.max_target_length must be at least 2 (one token plus EOS)")

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return self.tokenizer.eos_token_id if pad is None else pad

    def prompt_ids(self, text: str) -> list[int]:
        """The prompt's ids within ``max_source_length``. Truncation cuts the text, never the
        special tokens the tokenizer adds (ChatGLM's prompt must end in ``[gMASK]`` + ``<sop>``)."""
        tok = self.tokenizer
        ids = tok(text, add_special_tokens=self.add_special_tokens)["input_ids"]
        if len(ids) <= self.max_source_length:
            return ids
        if not self.add_special_tokens:
            return (
                ids[: self.max_source_length]
                if self.truncation_side == "right"
                else ids[-self.max_source_length :]
            )
        side, tok.truncation_side = tok.truncation_side, self.truncation_side
        try:
            return tok(
                text, add_special_tokens=True, truncation=True, max_length=self.max_source_length
            )["input_ids"]
        finally:
            tok.truncation_side = side

    def train_example(self, rec: dict[str, Any]) -> dict[str, Any]:
        prompt = self.prompt_ids(rec["input"])
        answer = self.tokenizer(rec["target"], add_special_tokens=False)["input_ids"]
        answer = answer[: self.max_target_length - 1] + [self.tokenizer.eos_token_id]
        return {
            "input_ids": prompt + answer,
            "labels": [IGNORE_INDEX] * len(prompt) + answer,
            "task_id": self.task_map.id(rec["task_dataset"]),
        }

    def collate_train(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Right-pad to the longest sequence (dynamic padding, no packing)."""
        width = max(len(e["input_ids"]) for e in examples)
        ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            ids[i, :n] = torch.tensor(e["input_ids"])
            labels[i, :n] = torch.tensor(e["labels"])
            mask[i, :n] = 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "labels": labels,
            "task_ids": torch.tensor([e["task_id"] for e in examples], dtype=torch.long),
        }

    def collate_generate(self, records: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Left-pad prompts for batched generation."""
        prompts = [self.prompt_ids(r["input"]) for r in records]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p) :] = 1
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "task_ids": torch.tensor(
                [self.task_map.id(r["task_dataset"]) for r in records], dtype=torch.long
            ),
        }

    def token_stats(
        self,
        records: Sequence[dict[str, Any]],
        *,
        split: str,
        source: str | os.PathLike | None = None,
    ) -> dict[str, Any]:
        """What the tokenizer makes of a split, per task, in one pass over prompts and answers.

        Per task: ``prompt_unk_share`` / ``answer_unk_share`` (the share of tokens that are the
        tokenizer's unknown token), ``prompt_truncated_share`` / ``answer_truncated_share``
        (the share of samples longer than ``max_source_length`` / ``max_target_length - 1``,
        which are cut), token counts and ``samples``. Overall: the prompt lengths' maximum and
        95th percentile, and the number of truncated prompts.

        Raises:
            DataFormatError: a prompt that encodes to zero tokens, or a non-empty answer that
                does, naming the sample_id and the file (``source``); training or generation on
                nothing would run silently otherwise.
        """
        where = str(source) if source is not None else f"the {split} split"
        unk = self.tokenizer.unk_token_id
        per_task: dict[str, dict[str, float]] = {}
        lengths = []
        for rec, p, a in self._encode_chunks(records):
            for text, ids, what in ((rec["input"], p, "prompt"), (rec["target"], a, "answer")):
                if not ids and (what == "prompt" or text):
                    raise DataFormatError(
                        f"{where}: sample_id {rec['sample_id']!r} ({rec['task_dataset']}): its "
                        f"{what} ({len(text)} characters) encodes to zero tokens; the tokenizer "
                        "does not fit this data. Check model.path (its tokenizer files) and the "
                        f"{what} text"
                    )
            lengths.append(len(p))
            t = per_task.setdefault(
                rec["task_dataset"],
                dict.fromkeys(
                    (
                        "samples",
                        "prompt_tokens",
                        "answer_tokens",
                        "prompt_unk",
                        "answer_unk",
                        "prompt_truncated",
                        "answer_truncated",
                    ),
                    0,
                ),
            )
            t["samples"] += 1
            t["prompt_tokens"] += len(p)
            t["answer_tokens"] += len(a)
            t["prompt_unk"] += sum(i == unk for i in p) if unk is not None else 0
            t["answer_unk"] += sum(i == unk for i in a) if unk is not None else 0
            t["prompt_truncated"] += len(p) > self.max_source_length
            t["answer_truncated"] += len(a) > self.max_target_length - 1
        tasks = {
            task: {
                "samples": t["samples"],
                "prompt_tokens": t["prompt_tokens"],
                "answer_tokens": t["answer_tokens"],
                "prompt_unk_share": _share(t["prompt_unk"], t["prompt_tokens"]),
                "answer_unk_share": _share(t["answer_unk"], t["answer_tokens"]),
                "prompt_truncated_share": _share(t["prompt_truncated"], t["samples"]),
                "answer_truncated_share": _share(t["answer_truncated"], t["samples"]),
            }
            for task, t in per_task.items()
        }
        lengths.sort()
        return {
            "n": len(lengths),
            "truncated": sum(n > self.max_source_length for n in lengths),
            "longest": lengths[-1],
            "p95": lengths[min(len(lengths) - 1, int(0.95 * len(lengths)))],
            "tasks": tasks,
        }

    def _encode_chunks(self, records: Sequence[dict[str, Any]], size: int = 512):
        """(record, prompt ids, answer ids), tokenised a batch at a time."""
        for i in range(0, len(records), size):
            chunk = records[i : i + size]
            prompts = self.tokenizer(
                [r["input"] for r in chunk], add_special_tokens=self.add_special_tokens
            )["input_ids"]
            answers = self.tokenizer([r["target"] for r in chunk], add_special_tokens=False)[
                "input_ids"
            ]
            yield from zip(chunk, prompts, answers, strict=True)

    def check_prompt_budget(
        self,
        records: Sequence[dict[str, Any]],
        *,
        split: str,
        max_truncated_fraction: float,
        stats: dict[str, Any] | None = None,
        source: str | os.PathLike | None = None,
    ) -> dict[str, Any]:
        """Fail early when ``max_source_length`` cuts too many prompts (before any training).

        ``stats``: this split's :meth:`token_stats`, when already computed; returns them."""
        stats = (
            stats if stats is not None else self.token_stats(records, split=split, source=source)
        )
        truncated, n = stats["truncated"], stats["n"]
        if truncated / n > max_truncated_fraction:
            raise ValueError(
                f"data.max_source_length={self.max_source_length} truncates {truncated} of "
                f"{n} {split} prompts (longest {stats['longest']} tokens, 95th percentile "
                f"{stats['p95']}); the prompt template does not fit. Raise data.max_source_length "
                f"to at least {stats['p95']}, or raise data.max_truncated_fraction"
            )
        return stats


TOKEN_WARN_SHARE = 0.01  # warn when more than 1 % of a task's tokens are unknown or cut


def _share(count: int, total: int) -> float:
    return round(count / total, 6) if total else 0.0


def token_warnings(
    stats: dict[str, Any],
    split: str,
    *,
    max_source_length: int,
    max_target_length: int,
    threshold: float = TOKEN_WARN_SHARE,
) -> list[str]:
    """One line per problem of a split, listing each task whose share is above ``threshold``
    (default 1 %): unknown tokens in prompts or answers, prompts or answers that are cut."""
    problems = {
        "prompt_unk_share": "prompt tokens that are the unknown token (the tokenizer does not "
        "cover this text; check model.path)",
        "answer_unk_share": "answer tokens that are the unknown token (the tokenizer does not "
        "cover this text; check model.path)",
        "prompt_truncated_share": f"prompts longer than data.max_source_length={max_source_length}"
        " tokens, which are cut",
        "answer_truncated_share": f"answers longer than data.max_target_length={max_target_length}"
        " tokens (EOS included), which are cut",
    }
    out = []
    for key, what in problems.items():
        tasks = [
            f"{task} {100 * t[key]:.1f}%"
            for task, t in stats["tasks"].items()
            if t[key] > threshold
        ]
        if tasks:
            out.append(f"{split}: share of {what}: {', '.join(tasks)}")
    return out
