"""Batch samplers: which training examples form each optimiser step.

A sampler is an infinite, seeded stream of *step batches* (lists of example indices, one
list per optimiser step, ``effective_batch`` long or shorter). The trainer splits each step
batch over devices and gradient-accumulation micro-batches, so a sampler's guarantees (for
example "one task per batch") hold for the whole optimiser step on any number of devices.
Samplers are pluggable: a method's YAML names one under ``sampler:`` (``_target_`` +
options) and the trainer instantiates it with ``task_ids``, ``batch_size`` and ``seed``.
Resuming at step ``k`` replays the stream and skips ``k`` batches, which is cheap.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence


class StepSampler:
    """Base class. Subclasses implement :meth:`__iter__`.

    Args:
        task_ids: the task id of every training example (position = example index).
        batch_size: the effective batch of one optimiser step.
        seed: the run seed; the stream is a pure function of it.
    """

    def __init__(self, task_ids: Sequence[int], *, batch_size: int, seed: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; it must be at least 1")
        if not task_ids:
            raise ValueError("the training set is empty")
        self.task_ids = list(task_ids)
        self.batch_size = batch_size
        self.seed = seed

    def __iter__(self) -> Iterator[list[int]]:
        raise NotImplementedError

    def by_task(self) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for i, t in enumerate(self.task_ids):
            groups.setdefault(t, []).append(i)
        return dict(sorted(groups.items()))


class RandomMixSampler(StepSampler):
    """Uniformly random mix of all tasks (docs/methods.md §1.3): each epoch is a fresh
    permutation of the concatenated training sets, cut into consecutive batches; an epoch's
    remainder starts the next batch. Tasks appear in proportion to their size."""

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed)
        n = len(self.task_ids)
        pending: list[int] = []
        while True:
            order = list(range(n))
            rng.shuffle(order)
            pending.extend(order)
            while len(pending) >= self.batch_size:
                yield pending[: self.batch_size]
                pending = pending[self.batch_size :]
