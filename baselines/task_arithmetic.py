"""Task-Arithmetic adapted to LoRA, docs/methods.md §5.1 (Ilharco et al.).

Task vector of task t at adapted linear l: ``τ_t^l = s · B_t^l A_t^l`` (LoRA (Single)
adapters). One multi-task model ``W^l = W0^l + λ · Σ_t τ_t^l`` for all layers, one scalar λ
chosen on validation from ``ta.grid`` (0.00..1.00 step 0.05 by default) by the average
validation score over the tasks (``ta.select_by: metric``; ``loss`` = teacher-forced CE,
a cheap proxy, reported as such) on a seeded subset of ``ta.val_per_task`` examples per task.

``ta.combine: exact`` (default) sums products, never factors: the update is held as one
rank-Σr concatenated adapter ``A = [A_1;…;A_8]``, ``B = [s B_1, …, s B_8]`` with scale λ,
and for every λ (validation) and for the test it is folded into the base weights (fp32 sum,
cast once; originals restored exactly afterwards): one merged model answers every task.
``ta.combine: legacy_linear`` reproduces legacy PEFT ``add_weighted_adapter``:
``A' = Σ_t λ s A_t``, ``B' = Σ_t λ B_t``, scaling 1 — element-wise factor averaging with
cross terms ``B_s A_t`` (§9(e), §10 row 19). It exists only as a labelled option.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from baselines.compose import (
    LoraFactors,
    LowRankDelta,
    exact_sum,
    find_input_run,
    higher_is_better,
    install_deltas,
    load_single_adapters,
    merged,
    val_subset,
    validation_scores,
)
from moelora.harness.context import PipelineOutput, RunContext

COMBINES = ("exact", "legacy_linear")


def set_task_arithmetic(
    wrappers: dict[str, LowRankDelta],
    factors: Sequence[LoraFactors],
    lam: float,
    combine: str = "exact",
) -> None:
    """Make every wrapped linear carry ``λ · Σ_t τ_t`` (``exact``) or the legacy
    element-wise composition (``legacy_linear``)."""
    if combine not in COMBINES:
        raise ValueError(f"ta.combine={combine!r}; use one of {COMBINES}")
    for module, w in wrappers.items():
        if combine == "exact":
            A, B = exact_sum(factors, module)
            w.set_delta(A, B, lam)
        else:  # A' = Σ λ s A_t, B' = Σ λ B_t, scaling 1  →  λ² · (Σ B_t)(Σ s A_t)
            A = sum(f.scaling * f.A[module] for f in factors)
            B = sum(f.B[module] for f in factors)
            w.set_delta(A, B, lam * lam)


def _grid(values: Any) -> list[float]:
    grid = [round(float(v), 10) for v in values]
    if not grid:
        raise ValueError("ta.grid is empty; give at least one λ")
    return grid


def select_lambda(avg_scores: dict[float, float], *, higher_better: bool) -> float:
    """The λ with the best average validation score; ties go to the smaller λ."""
    sign = 1.0 if higher_better else -1.0
    return max(sorted(avg_scores), key=lambda lam: (sign * avg_scores[lam], -lam))


def pipeline(ctx: RunContext) -> PipelineOutput:
    """Compose the LoRA (Single) adapters, pick λ on validation, answer all tasks (§5.1)."""
    opts = ctx.cfg.method.ta
    tasks = list(ctx.task_map.tasks)
    combine = str(opts.combine)
    if combine not in COMBINES:
        raise ValueError(f"ta.combine={combine!r}; use one of {COMBINES}")
    select_by = str(opts.select_by)
    single_dir = find_input_run(ctx)
    adapters = load_single_adapters(single_dir, tasks)
    factors = [adapters[t] for t in tasks]

    model, tokenizer = ctx.load_base()
    encoder = ctx.encoder(tokenizer)
    wrappers = install_deltas(model, sorted(factors[0].A))
    val = val_subset(ctx.splits["dev"], tasks, opts.val_per_task, int(ctx.cfg.seed))

    t0 = time.perf_counter()
    per_lambda: dict[float, dict[str, float]] = {}
    for lam in _grid(opts.grid):
        set_task_arithmetic(wrappers, factors, lam, combine)
        with merged(wrappers):  # plain base-model compute: the fastest way to decode
            per_lambda[lam] = validation_scores(ctx, model, encoder, val, select_by)
    avg = {lam: sum(s.values()) / len(s) for lam, s in per_lambda.items()}
    best = select_lambda(avg, higher_better=higher_is_better(select_by))
    val_seconds = time.perf_counter() - t0

    set_task_arithmetic(wrappers, factors, best, combine)
    t_merge = time.perf_counter()
    with merged(wrappers):
        merge_seconds = time.perf_counter() - t_merge
        generation = ctx.generate(model, encoder, ctx.splits["test"], merge=False)
    generation.merge_seconds = merge_seconds
    extra = {
        "ta": {
            "lambda": best,
            "combine": combine,
            "combine_note": "exact sum of products λ·Σ s B_t A_t"
            if combine == "exact"
            else "LEGACY element-wise factor averaging (A'=Σλ s A_t, B'=Σλ B_t): not task arithmetic",
            "select_by": select_by,
            "select_by_note": "teacher-forced validation CE (proxy)"
            if select_by == "loss"
            else "validation metric on generated answers (same metrics as test)",
            "val_per_task": {t: len(v) for t, v in val.items()},
            "val_avg": {str(k): v for k, v in avg.items()},
            "val_scores": {str(k): v for k, v in per_lambda.items()},
            "val_seconds": val_seconds,
            "input_run": str(single_dir),
            "test_model": "merged into the base weights (fp32 sum, cast once)",
        }
    }
    return PipelineOutput(predictions=generation.predictions, generation=generation, extra=extra)
