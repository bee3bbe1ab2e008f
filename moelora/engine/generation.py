"""Batched generation for evaluation (docs/methods.md §1.4).

Left-padded batches, KV cache, sampling with T = 0.95 and top-p = 0.7 seeded by the run
seed (the authors' settings), or greedy decoding. ``group_by_task`` runs one task at a
time, merging that task's weights into the base first when the model supports it (Eq. 8,
``infer: merged_per_task``): then generation is plain base-model compute.

Under a multi-process launch, :func:`generate_sharded` gives each process its share of the
records (every ``world``-th of them in prompt-length order, so the shares cost alike); rank 0
gets them all back in input order, and the job scores and writes once. Greedy predictions are
those of one process; sampled ones depend on the share each sample falls in (every process
seeds its generator with the run seed).

Models whose task weights are not selected by task ids alone (several named adapters, as a
rebuilt LoRA (Single) run, see moelora/inference/load.py) pass two hooks: ``task_scope(task_id)``, a
context that selects one task's weights for a task group, and ``batch_kwargs(task_ids)``,
extra ``generate()`` arguments for a batch that mixes tasks (peft's ``adapter_names``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from moelora.data.encoding import Encoder
from moelora.method.gate import task_context


@dataclass
class DecodingSettings:
    mode: str = "sample"  # sample | greedy
    temperature: float = 0.95
    top_p: float = 0.7
    top_k: int = 50  # the transformers default the authors ran with
    max_new_tokens: int = 196
    batch_size: int = 16
    min_new_tokens: int | None = None  # = max_new_tokens: a fixed answer length (benchmarks)

    def generate_kwargs(self) -> dict[str, Any]:
        length = {"max_new_tokens": self.max_new_tokens}
        if self.min_new_tokens is not None:
            length["min_new_tokens"] = self.min_new_tokens
        if self.mode == "greedy":
            return {"do_sample": False, **length}
        if self.mode != "sample":
            raise ValueError(f"decoding={self.mode!r}; use 'sample' or 'greedy'")
        return {
            "do_sample": True,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            **length,
        }


@dataclass
class GenerationResult:
    predictions: list[dict[str, Any]]
    seconds: float
    latency_per_example: float
    merge_seconds: float = 0.0


def _batches(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for i in range(0, len(items), size):
        yield list(items[i : i + size])


@contextmanager
def _merged(model: nn.Module, task_id: int) -> Iterator[None]:
    """Merge ``task_id``'s weights into the base for the duration (Eq. 8)."""
    from moelora.method.merge import merged_for_task

    with merged_for_task(model, task_id):
        yield


def generate_predictions(
    model: nn.Module,
    encoder: Encoder,
    records: Sequence[dict[str, Any]],
    *,
    decoding: DecodingSettings,
    seed: int,
    group_by_task: bool = False,
    merge: bool = False,
    device: torch.device | str = "cpu",
    progress: bool = True,
    task_scope: Callable[[int], AbstractContextManager[Any]] | None = None,
    batch_kwargs: Callable[[torch.Tensor], dict[str, Any]] | None = None,
) -> GenerationResult:
    """Generate an answer for every record; returns the records with ``target`` replaced.

    Records are batched in order of prompt length (less padding) and returned in input
    order. With ``merge`` (implies ``group_by_task``), each task group runs merged.

    Args:
        task_scope: entered around each task group (``group_by_task``), before any merge:
            selects that task's weights when the model holds one adapter per task.
        batch_kwargs: ``task_ids (batch,) -> extra generate() kwargs`` for every batch.
    """
    tok = encoder.tokenizer
    gen_kwargs = decoding.generate_kwargs()
    # KV cache on, even when training turned it off for gradient checkpointing
    gen_kwargs.update(pad_token_id=encoder.pad_id, eos_token_id=tok.eos_token_id, use_cache=True)
    lengths = [len(encoder.prompt_ids(r["input"])) for r in records]
    order = sorted(range(len(records)), key=lambda i: (lengths[i], i))
    groups: list[tuple[int | None, list[int]]]
    if group_by_task or merge:
        by_task: dict[int, list[int]] = {}
        for i in order:
            by_task.setdefault(encoder.task_map.id(records[i]["task_dataset"]), []).append(i)
        groups = sorted(by_task.items())
    else:
        groups = [(None, order)]

    texts: dict[int, str] = {}
    torch.manual_seed(seed)
    model.eval()
    total_batches = sum(-(-len(g) // decoding.batch_size) for _, g in groups)
    bar = tqdm(total=total_batches, desc="generate", disable=not progress)
    merge_seconds = 0.0
    t0 = time.perf_counter()
    for task_id, indices in groups:
        t_merge = time.perf_counter()
        scope = task_scope(task_id) if task_scope and task_id is not None else nullcontext()
        ctx = _merged(model, task_id) if merge and task_id is not None else nullcontext()
        with scope, ctx:
            merge_seconds += time.perf_counter() - t_merge
            for idx in _batches(indices, decoding.batch_size):
                batch = encoder.collate_generate([records[i] for i in idx])
                task_ids = batch.pop("task_ids").to(device)
                batch = {k: v.to(device) for k, v in batch.items()}
                extra = batch_kwargs(task_ids) if batch_kwargs else {}
                with torch.no_grad(), task_context(model, task_ids):
                    out = model.generate(**batch, **gen_kwargs, **extra)
                new_tokens = out[:, batch["input_ids"].shape[1] :]
                for i, seq in zip(idx, new_tokens.tolist()):
                    texts[i] = tok.decode(seq, skip_special_tokens=True).strip()
                bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0 - merge_seconds
    predictions = [{**r, "target": texts[i]} for i, r in enumerate(records)]
    return GenerationResult(predictions, seconds, seconds / max(1, len(records)), merge_seconds)


def shard_indices(records: Sequence[dict[str, Any]], rank: int, world: int) -> list[int]:
    """This process's records: every ``world``-th from ``rank``, in prompt-length order."""
    order = sorted(range(len(records)), key=lambda i: (len(records[i]["input"]), i))
    return order[rank::world]


def generate_sharded(
    model: nn.Module,
    encoder: Encoder,
    records: Sequence[dict[str, Any]],
    *,
    accelerator: Any,
    **kwargs: Any,
) -> GenerationResult:
    """:func:`generate_predictions` over the processes of ``accelerator``: each generates its
    share (:func:`shard_indices`); every process returns all predictions, in input order
    (rank 0 is the one that scores and writes). ``seconds``: the slowest process's."""
    world = accelerator.num_processes
    if world == 1:
        return generate_predictions(model, encoder, records, **kwargs)
    from accelerate.utils import gather_object

    mine = shard_indices(records, accelerator.process_index, world)
    part = generate_predictions(model, encoder, [records[i] for i in mine], **kwargs)
    texts = dict(gather_object([(i, p["target"]) for i, p in zip(mine, part.predictions)]))
    times = gather_object([(part.seconds, part.merge_seconds)])
    seconds = max(t for t, _ in times)
    predictions = [{**r, "target": texts[i]} for i, r in enumerate(records)]
    return GenerationResult(
        predictions,
        seconds,
        seconds * world / max(1, len(records)),
        max(m for _, m in times),
    )
