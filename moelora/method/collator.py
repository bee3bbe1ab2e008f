"""A data collator that carries each example's task id into the batch (docs/library.md).

``MoeLoraDataCollator(tokenizer, tasks=config.tasks)`` pads ``input_ids``, ``attention_mask`` and
``labels`` with transformers' ``DataCollatorForSeq2Seq`` (labels padded with -100) and adds
``task_ids``, a ``(batch,)`` long tensor, from each example's ``task`` (a task name) or
``task_ids`` (an id) field. ``MoeLoraModel.forward`` takes ``task_ids`` as an argument, so the HF
``Trainer`` and TRL's ``SFTTrainer`` hand it through as they hand ``labels``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from moelora.method.tasks import TaskMap


class MoeLoraDataCollator:
    """Pad a list of tokenized examples and add their ``task_ids``.

    Args:
        tokenizer: the model's tokenizer (its pad token pads ``input_ids``; one without a pad
            token pads with its EOS token).
        tasks: the ordered task list of the ``MoeLoraConfig`` (names → ids).
        task_id_scheme: the config's ``task_id_scheme``.
        task_key: the field holding a task name (``task_ids`` holds an id instead).
        **kwargs: passed to ``transformers.DataCollatorForSeq2Seq`` (``pad_to_multiple_of``,
            ``padding``, ``max_length``).
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        tasks: Sequence[str],
        task_id_scheme: str = "dense",
        task_key: str = "task",
        **kwargs: Any,
    ) -> None:
        from transformers import DataCollatorForSeq2Seq

        if getattr(tokenizer, "pad_token_id", None) is None:
            if getattr(tokenizer, "eos_token", None) is None:
                raise ValueError("the tokenizer has neither a pad nor an EOS token; set pad_token")
            tokenizer.pad_token = tokenizer.eos_token
        self.task_map = TaskMap(list(tasks), scheme=task_id_scheme)
        self.task_key = task_key
        self.pad = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, **kwargs)

    def _task_id(self, index: int, example: dict[str, Any]) -> int:
        if "task_ids" in example:
            return int(example["task_ids"])
        if self.task_key in example:
            return self.task_map.id(example[self.task_key])
        raise KeyError(
            f"example {index} has neither {self.task_key!r} (a task name) nor 'task_ids' (an id); "
            f"add one of them to every example (its fields: {sorted(example)})"
        )

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        task_ids = [self._task_id(i, e) for i, e in enumerate(examples)]
        drop = {self.task_key, "task_ids"}
        keep = ("input_ids", "attention_mask", "labels")
        batch = self.pad([{k: v for k, v in e.items() if k in keep} for e in examples])
        batch = {k: v for k, v in batch.items() if k not in drop}
        batch["task_ids"] = torch.tensor(task_ids, dtype=torch.long)
        return batch
