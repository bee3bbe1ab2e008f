"""The shared training loop (docs/methods.md §1.3). One plain loop for every method.

AdamW (β = 0.9/0.999, ε = 1e-8), linear decay to 0 after an optional warm-up, gradient
clipping at a global norm, gradient accumulation and mixed precision through
``accelerate``. Effective batch = devices × per-device batch × accumulation steps.
The loss is the token-level cross-entropy on the answer tokens (Eq. 2), averaged over all the
answer tokens of the optimiser step: each micro-batch's mean is weighted by its share of the
step's tokens, so a step computes the same gradient however its effective batch is split
over devices and accumulation (2 processes × 8 = 1 × 16; one micro-batch on one device is
the plain mean, unchanged). Which examples
form a step is the sampler's business (moelora.data.samplers); how task ids reach the model is
moelora.method.gate's; how the adapters' dropout masks are drawn is moelora.method.dropout's
(``dropout_masks``). Checkpoints (adapter + optimizer + scheduler + RNG) every
``save_every`` steps let a killed run resume with the same final weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from moelora.data.encoding import IGNORE_INDEX, Encoder
from moelora.data.samplers import StepSampler
from moelora.engine import progress
from moelora.engine.checkpoint import (
    load_checkpoint,
    save_checkpoint,
    verified_checkpoint,
)
from moelora.engine.compile import compile_for_training, mark_dynamic_lengths
from moelora.engine.finite import check_step
from moelora.engine.throughput import Throughput
from moelora.method.dropout import check_masks, mask_sampling, use_in
from moelora.method.gate import task_context


@dataclass
class TrainSettings:
    max_steps: int
    per_device_batch_size: int
    grad_accum: int = 1
    lr: float = 2e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    warmup_steps: int = 0
    save_every: int = 0
    log_every: int = 10
    keep_checkpoints: int = 2
    progress: bool = True
    length_groups: int = 1
    loss_weighting: str = "token"
    dropout_masks: str = (
        "torch"  # moelora.method.dropout.MASKS; conf/trainer/default.yaml says bits16
    )
    compile: str = "off"  # moelora.engine.compile: off | on (torch.compile of forward + backward)
    compile_backend: str = "inductor"
    compile_cache_dir: str | None = None  # inductor's on-disk caches, shared by a grid's jobs


LOSS_WEIGHTINGS = ("token", "example")


@dataclass
class TrainResult:
    steps: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    step_seconds: float | None = None  # None: no step ran here (resumed at the end)
    peak_memory_bytes: int | None = None
    resumed_from: int | None = None
    throughput: dict[str, Any] | None = None  # moelora.engine.throughput.Throughput.summary


def supervised_tokens(example: dict[str, Any]) -> int:
    """Answer tokens the causal-LM loss counts (after the shift: position t predicts t + 1)."""
    return sum(1 for label in example["labels"][1:] if label != IGNORE_INDEX)


def example_mean_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Eq. (2) per example, then the mean over the examples: every example weighs the same,
    whatever its answer length (``trainer.loss_weighting=example``).

    ``logits`` may carry extra leading positions (a prompt-learning prefix); the last
    ``labels.size(1)`` are aligned with ``labels``. Position t predicts token t + 1."""
    logits = logits[:, -labels.size(1) :].float()
    target = labels[:, 1:]
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)),
        target.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view_as(target)
    counts = (target != IGNORE_INDEX).sum(dim=1).clamp(min=1)
    return (per_token.sum(dim=1) / counts).mean()


def _micro_batches(
    indices: Sequence[int],
    rank: int,
    world: int,
    accum: int,
    lengths: Sequence[int] | None = None,
    length_groups: int = 1,
) -> list[list[int]]:
    """This device's share of a step's examples, split into micro-batches.

    Without ``lengths`` (or with ``length_groups=1``) the share is cut into ``accum`` pieces in
    sampler order. With them, the share is sorted by sequence length and cut into
    ``max(accum, length_groups)`` pieces, so short and long sequences are padded separately: the
    step's gradient is the same (the loss is a token mean over the whole step, see
    :func:`train`), at a fraction of the padded tokens when task lengths differ."""
    local = list(indices[rank::world])
    pieces = accum
    if lengths is not None and length_groups > 1:
        local.sort(key=lambda j: (lengths[j], j))
        pieces = max(accum, length_groups)
    size = math.ceil(len(local) / pieces)
    return [local[i : i + size] for i in range(0, len(local), size)] if local else []


def train(
    model: nn.Module,
    encoder: Encoder,
    records: Sequence[dict[str, Any]],
    *,
    settings: TrainSettings,
    sampler: StepSampler,
    accelerator: Any,
    ckpt_dir: Path | None,
    adapter_meta: dict[str, Any],
    log: Callable[[dict[str, float], int], None] | None = None,
    on_step: Callable[[int, nn.Module], None] | None = None,
) -> TrainResult:
    """Train the parameters of ``model`` that require grad; returns the loss curve.

    Args:
        model: the adapted model (frozen base + trainable adapter).
        encoder: turns records into token tensors with task ids.
        records: the training split.
        sampler: yields the example indices of every optimiser step.
        accelerator: an ``accelerate.Accelerator`` (device, mixed precision, DDP).
        ckpt_dir: where checkpoints go and where a killed run resumes from (None: never).
        adapter_meta: saved with every checkpoint's adapter.
        log: receives ``{"train/loss": …, "train/lr": …}`` every ``log_every`` steps.
        on_step: called as ``on_step(step, model)`` after every optimiser step (e.g. to
            snapshot the adapter for checkpoint selection); ``model`` is unwrapped.
    """
    if settings.loss_weighting not in LOSS_WEIGHTINGS:
        raise ValueError(
            f"trainer.loss_weighting={settings.loss_weighting!r}: use one of "
            f"{', '.join(LOSS_WEIGHTINGS)}"
        )
    check_masks(settings.dropout_masks)
    use_in(model)  # peft's nn.Dropout draws through moelora.method.dropout too
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            "the model has no trainable parameters; did the method's build() freeze all?"
        )
    optimizer = torch.optim.AdamW(
        params, lr=settings.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=settings.weight_decay
    )
    scheduler = get_linear_schedule_with_warmup(
        optimizer, settings.warmup_steps, settings.max_steps
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    model = compile_for_training(  # trainer.compile; `unwrapped` stays the plain module
        model,
        settings.compile,
        backend=settings.compile_backend,
        cache_dir=settings.compile_cache_dir,
    )
    examples = [encoder.train_example(r) for r in records]
    tokens = [supervised_tokens(e) for e in examples]
    lengths = [len(e["input_ids"]) for e in examples]

    result = TrainResult(steps=settings.max_steps)
    start = 0
    ckpt, skipped = verified_checkpoint(ckpt_dir) if ckpt_dir is not None else (None, [])
    for why in skipped:  # a damaged checkpoint is never resumed from
        accelerator.print(f"[resume] skipped a checkpoint: {why}")
    if ckpt is None and skipped:
        accelerator.print("[resume] no checkpoint verifies; training starts from step 0")
    if ckpt is not None:
        state = load_checkpoint(
            ckpt,
            model=unwrapped,
            optimizer=optimizer,
            scheduler=scheduler,
            expected_tasks=adapter_meta.get("tasks"),
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
        )
        start = state["step"]
        result.losses = [tuple(x) for x in state["extra"].get("losses", [])]
        result.resumed_from = start
        accelerator.print(f"resumed from {ckpt} (step {start})")

    stream = iter(sampler)
    for _ in range(start):  # replay the data order up to the resume point
        next(stream)

    by_example = settings.loss_weighting == "example"
    last_finite = result.losses[-1] if result.losses else None
    model.train()
    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    meter = Throughput(unwrapped, accelerator)
    bar = tqdm(
        range(start, settings.max_steps),
        initial=start,
        total=settings.max_steps,
        desc="train",
        disable=not (settings.progress and accelerator.is_main_process),
    )
    for step in bar:
        indices = next(stream)
        step_tokens = max(1, sum(tokens[j] for j in indices))  # the whole step, every device
        micro = _micro_batches(
            indices,
            accelerator.process_index,
            accelerator.num_processes,
            settings.grad_accum,
            lengths,
            settings.length_groups,
        )
        step_loss = torch.zeros((), device=accelerator.device)
        for i, idx in enumerate(micro):
            batch = encoder.collate_train([examples[j] for j in idx])
            meter.add(sum(lengths[j] for j in idx))
            batch = mark_dynamic_lengths({k: v.to(accelerator.device) for k, v in batch.items()})
            task_ids = batch.pop("task_ids")
            sync = i == len(micro) - 1
            # DDP averages the devices' gradients, hence × num_processes
            share = (
                len(idx) / len(indices) if by_example else sum(tokens[j] for j in idx) / step_tokens
            )
            weight = accelerator.num_processes * share
            with (
                accelerator.no_sync(model) if not sync else _null(),
                task_context(unwrapped, task_ids),
                mask_sampling(settings.dropout_masks),
            ):
                with accelerator.autocast():
                    if by_example:
                        labels = batch.pop("labels")
                        loss = example_mean_loss(model(**batch).logits, labels) * weight
                    else:
                        loss = model(**batch).loss * weight
                accelerator.sync_gradients = sync  # DeepSpeed's engine steps at the last one only
                # accelerate (DeepSpeed's engine: its config's) divides by its accumulation steps;
                # the weights already sum to one over the step. Inside the context:
                # checkpointing recomputes here.
                accelerator.backward(loss * accelerator.gradient_accumulation_steps)
            step_loss += loss.detach()
        norm = (
            accelerator.clip_grad_norm_(params, settings.max_grad_norm)
            if settings.max_grad_norm
            else None
        )
        meter.grad_norm = norm
        # a NaN/Inf loss or gradient norm stops the job before the update (moelora.engine.finite)
        last_finite = (step + 1, check_step(step + 1, step_loss, norm, last_finite))
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)

        done = step + 1
        progress.reached(done)
        if on_step is not None:
            on_step(done, unwrapped)
        if done % settings.log_every == 0 or done == settings.max_steps:
            value = accelerator.reduce(step_loss, reduction="mean").item()
            result.losses.append((done, value))
            bar.set_postfix(loss=f"{value:.4f}")
            speed = meter.metrics()  # every process: it sums the tokens over them
            if log is not None:
                log({"train/loss": value, "train/lr": scheduler.get_last_lr()[0], **speed}, done)
        if (
            ckpt_dir is not None
            and settings.save_every
            and (done % settings.save_every == 0 or done == settings.max_steps)
        ):
            rank_rng = gather_rng(accelerator)  # every process takes part
        else:
            rank_rng = None
        if rank_rng is not None and accelerator.is_main_process:
            save_checkpoint(
                ckpt_dir,
                step=done,
                model=unwrapped,
                optimizer=optimizer,
                scheduler=scheduler,
                adapter_meta=adapter_meta,
                extra={"losses": result.losses},
                keep_last=settings.keep_checkpoints,
                rank_rng=rank_rng or None,
            )
    accelerator.wait_for_everyone()
    result.seconds = time.perf_counter() - t0
    ran = settings.max_steps - start
    result.step_seconds = result.seconds / ran if ran else None
    result.throughput = meter.summary()
    if accelerator.device.type == "cuda":
        result.peak_memory_bytes = int(torch.cuda.max_memory_allocated())
    model.eval()
    return result


def gather_rng(accelerator: Any) -> list[tuple[dict[str, torch.Tensor], dict]]:
    """Every process's RNG state in rank order (multi-process jobs; [] for one process)."""
    if accelerator.num_processes == 1:
        return []
    from accelerate.utils import gather_object

    from moelora.utils.seed import process_rng_state

    tensors, meta = process_rng_state()
    tensors = {k: v.cpu() for k, v in tensors.items()}
    return gather_object([(tensors, meta)])


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
