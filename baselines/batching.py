"""Task-batch samplers of the Table 3 ablations "w BT" and "w RBT" (docs/methods.md §7).

Both yield *optimiser-step* batches (``bt.granularity: step``): the shared trainer splits a
step batch over devices and accumulation micro-batches, so every micro-batch of one step
comes from the same task on any number of devices.

* :class:`BTSampler` — each epoch, shuffle every task's training set, cut it into
  consecutive chunks of the batch size (the last, smaller chunk of each task is kept unless
  ``drop_last``), shuffle the list of all chunks and go through it. Every example appears
  once per epoch; tasks appear in proportion to their size.
* :class:`RBTSampler` — at every step draw one task (uniformly, or in proportion to its
  size with ``task_probs: proportional``), then take the next batch-size examples of that
  task's own shuffled stream (reshuffled when exhausted).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from moelora.data.samplers import StepSampler

GRANULARITIES = ("step",)
TASK_PROBS = ("uniform", "proportional")


def _check_granularity(granularity: str) -> None:
    if granularity == "micro":
        raise ValueError(
            "granularity=micro (one task per micro-batch, tasks mixed within a step) is not "
            "supported: the sampler does not see how the trainer splits a step batch; use "
            "granularity=step"
        )
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity={granularity!r}; use one of {GRANULARITIES}")


class BTSampler(StepSampler):
    """Batches of one task, every example once per epoch (§7 "w BT").

    Args:
        task_ids: task id of every training example.
        batch_size: effective (optimiser-step) batch.
        seed: the run seed.
        drop_last: drop each task's last chunk when it is smaller than ``batch_size``.
        granularity: ``step`` (the only one supported).
    """

    def __init__(
        self,
        task_ids: Sequence[int],
        *,
        batch_size: int,
        seed: int,
        drop_last: bool = False,
        granularity: str = "step",
    ) -> None:
        super().__init__(task_ids, batch_size=batch_size, seed=seed)
        _check_granularity(granularity)
        self.drop_last = drop_last
        if drop_last and all(len(ix) < batch_size for ix in self.by_task().values()):
            raise ValueError(
                f"bt.drop_last=true with batch_size={batch_size} drops every batch: "
                "no task has that many examples; set drop_last=false"
            )

    def epoch(self, rng: random.Random) -> list[list[int]]:
        """One epoch's chunks, in training order."""
        chunks: list[list[int]] = []
        for indices in self.by_task().values():
            order = list(indices)
            rng.shuffle(order)
            for i in range(0, len(order), self.batch_size):
                chunk = order[i : i + self.batch_size]
                if len(chunk) == self.batch_size or not self.drop_last:
                    chunks.append(chunk)
        rng.shuffle(chunks)
        return chunks

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed)
        while True:
            yield from self.epoch(rng)


class RBTSampler(StepSampler):
    """A random task per step, then that task's next batch (§7 "w RBT").

    Args:
        task_ids: task id of every training example.
        batch_size: effective (optimiser-step) batch.
        seed: the run seed.
        task_probs: ``uniform`` (each task 1/T) or ``proportional`` (∝ training-set size).
    """

    def __init__(
        self, task_ids: Sequence[int], *, batch_size: int, seed: int, task_probs: str = "uniform"
    ) -> None:
        super().__init__(task_ids, batch_size=batch_size, seed=seed)
        if task_probs not in TASK_PROBS:
            raise ValueError(f"rbt.task_probs={task_probs!r}; use one of {TASK_PROBS}")
        self.task_probs = task_probs

    def probabilities(self) -> dict[int, float]:
        """The probability of drawing each task at a step."""
        sizes = {t: len(ix) for t, ix in self.by_task().items()}
        if self.task_probs == "uniform":
            return {t: 1 / len(sizes) for t in sizes}
        total = sum(sizes.values())
        return {t: n / total for t, n in sizes.items()}

    def __iter__(self) -> Iterator[list[int]]:
        rng = random.Random(self.seed)
        groups = self.by_task()
        tasks = list(groups)
        probs = self.probabilities()
        weights = [probs[t] for t in tasks]
        streams: dict[int, list[int]] = {t: [] for t in tasks}
        while True:
            task = rng.choices(tasks, weights=weights)[0]
            stream = streams[task]
            batch: list[int] = []
            while len(batch) < self.batch_size:
                if not stream:
                    stream.extend(groups[task])
                    rng.shuffle(stream)
                take = min(self.batch_size - len(batch), len(stream))
                batch.extend(stream[:take])
                del stream[:take]
            yield batch
