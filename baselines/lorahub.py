"""LoRAHub, docs/methods.md §5.2 (Huang et al.; reference sail-sg/lorahub:lorahub/algorithm.py).

For every target task j, a gradient-free search over composition weights
``w ∈ [−bound, bound]^M`` (init 0) of the M LoRA (Single) adapters (all eight by default;
``lorahub.exclude_target`` drops task j's own):

* ``lorahub.compose: elementwise`` (reference): ``A' = Σ_m w_m A_m``, ``B' = Σ_m w_m B_m``,
  update ``s · B' A'`` (cross terms ``B_m A_n``, §9(e));
  ``product``: ``Σ_m w_m s B_m A_m`` (exact mixture, through concatenation).
* Objective: teacher-forced CE of the composed model on task j's validation examples (§1.2
  masking) ``+ l1 · mean_m |w_m|``. ``lorahub.loss_norm: mean`` is the plain mean CE;
  ``reference`` divides a sum of per-batch mean losses by the number of examples.
* Optimiser: nevergrad ``NGOpt`` on an ``Array`` with those bounds, ``budget`` evaluations,
  python / numpy RNGs and the parametrisation seeded with the run seed (per task, so a
  resumed run gives the same weights).

The optimiser's recommendation is merged into the base weights (fp32, cast once) and
answers task j's test set; then the original weights are restored. Results per task go to
``<run_dir>/lorahub/<task>.json`` so a killed run does not search finished tasks again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from baselines.compose import (
    LoraFactors,
    LowRankDelta,
    by_task,
    elementwise_sum,
    exact_sum,
    find_input_run,
    install_deltas,
    load_single_adapters,
    merged,
    teacher_forced_loss,
)
from moelora.engine.generation import GenerationResult
from moelora.harness.context import PipelineOutput, RunContext
from moelora.utils.io import inside, read_json, write_json

COMPOSES = ("elementwise", "product")


def set_composition(
    wrappers: dict[str, LowRankDelta],
    factors: Sequence[LoraFactors],
    weights: Sequence[float],
    compose: str = "elementwise",
) -> None:
    """Load the composition of ``factors`` with ``weights`` into every wrapped linear."""
    weights = [float(w) for w in weights]
    if len(weights) != len(factors):
        raise ValueError(f"{len(weights)} weights for {len(factors)} adapters")
    if compose == "elementwise":
        scalings = {f.scaling for f in factors}
        if len(scalings) != 1:
            raise ValueError(f"element-wise composition needs one LoRA scaling; got {scalings}")
        s = scalings.pop()
        for module, w in wrappers.items():
            A, B = elementwise_sum(factors, module, weights)
            w.set_delta(A, B, s)
    elif compose == "product":
        for module, w in wrappers.items():
            A, B = exact_sum(factors, module, weights)
            w.set_delta(A, B, 1.0)
    else:
        raise ValueError(f"lorahub.compose={compose!r}; use one of {COMPOSES}")


def lorahub_search(
    objective: Callable[[np.ndarray], float],
    num_modules: int,
    *,
    seed: int,
    budget: int = 40,
    bound: float = 1.5,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Minimise ``objective(w)`` over ``[−bound, bound]^num_modules`` from w = 0 with
    nevergrad NGOpt; returns the recommendation and the evaluation history."""
    import nevergrad as ng

    random.seed(seed)
    np.random.seed(seed % (2**32))
    param = ng.p.Array(init=np.zeros(num_modules), lower=-bound, upper=bound)
    param.random_state = np.random.RandomState(seed % (2**32))
    optimizer = ng.optimizers.NGOpt(parametrization=param, budget=budget)
    history: list[dict[str, Any]] = []

    def recorded(w: np.ndarray) -> float:
        value = float(objective(w))
        history.append({"weights": [float(x) for x in w], "objective": value})
        return value

    recommendation = optimizer.minimize(recorded)
    return np.asarray(recommendation.value, dtype=float), history


def _subset(rows: list[dict[str, Any]], n: Any, seed: int, task: str) -> list[dict[str, Any]]:
    if n in (None, "all") or int(n) >= len(rows):
        return rows
    rng = random.Random(f"{seed}:lorahub:{task}")
    return [rows[i] for i in sorted(rng.sample(range(len(rows)), int(n)))]


def pipeline(ctx: RunContext) -> PipelineOutput:
    """Search, merge and answer every task's test set with its own composition (§5.2)."""
    opts = ctx.cfg.method.lorahub
    tasks = list(ctx.task_map.tasks)
    seed = int(ctx.cfg.seed)
    compose = str(opts.compose)
    if compose not in COMPOSES:
        raise ValueError(f"lorahub.compose={compose!r}; use one of {COMPOSES}")
    single_dir = find_input_run(ctx)
    adapters = load_single_adapters(single_dir, tasks)
    model, tokenizer = ctx.load_base()
    encoder = ctx.encoder(tokenizer)
    wrappers = install_deltas(model, sorted(adapters[tasks[0]].A))
    dev, test = by_task(ctx.splits["dev"]), by_task(ctx.splits["test"])
    batch_size = int(opts.batch_size or ctx.cfg.trainer.eval.batch_size)
    settings = {
        "compose": compose,
        "budget": int(opts.budget),
        "l1": float(opts.l1),
        "bounds": float(opts.bounds),
        "loss_norm": str(opts.loss_norm),
        "n_examples": opts.n_examples,
        "exclude_target": bool(opts.exclude_target),
        "batch_size": batch_size,
        "seed": seed,
        "input_run": str(single_dir),
    }

    out_dir = ctx.run_dir / "lorahub"
    per_task: dict[str, dict[str, Any]] = {}
    predictions: list[dict[str, Any]] = []
    gen_seconds = merge_seconds = 0.0
    for task in tasks:
        candidates = [t for t in tasks if not (settings["exclude_target"] and t == task)]
        factors = [adapters[t] for t in candidates]
        path = inside(out_dir, f"{task}.json")
        saved = read_json(path) if path.is_file() else None
        if saved and saved.get("settings") == settings:
            weights = np.asarray(saved["weights"], dtype=float)
            per_task[task] = saved
        else:
            if not dev.get(task):
                raise ValueError(f"the dev split has no example of task {task}; LoRAHub needs it")
            examples = [
                encoder.train_example(r) for r in _subset(dev[task], opts.n_examples, seed, task)
            ]

            def objective(w: np.ndarray, factors=factors, examples=examples) -> float:
                set_composition(wrappers, factors, w, compose)
                with merged(wrappers):
                    loss = teacher_forced_loss(
                        model,
                        encoder,
                        examples,
                        batch_size=batch_size,
                        device=ctx.accelerator.device,
                        norm=settings["loss_norm"],
                    )
                return loss + settings["l1"] * float(np.mean(np.abs(w)))

            t0 = time.perf_counter()
            weights, history = lorahub_search(
                objective,
                len(factors),
                seed=seed,
                budget=settings["budget"],
                bound=settings["bounds"],
            )
            per_task[task] = {
                "task": task,
                "settings": settings,
                "candidates": candidates,
                "weights": [float(x) for x in weights],
                "objective": float(objective(weights)),
                "best_seen": min(h["objective"] for h in history),
                "val_examples": len(examples),
                "search_seconds": time.perf_counter() - t0,
                "history": history,
            }
            if ctx.accelerator.is_main_process:
                write_json(path, per_task[task])
        if not test.get(task):
            continue
        set_composition(wrappers, factors, weights, compose)
        t_merge = time.perf_counter()
        with merged(wrappers):
            merge_seconds += time.perf_counter() - t_merge
            gen = ctx.generate(model, encoder, test[task], merge=False)
        predictions.extend(gen.predictions)
        gen_seconds += gen.seconds
    extra = {
        "lorahub": {
            **{k: v for k, v in settings.items()},
            "weights": {
                t: dict(zip(per_task[t]["candidates"], per_task[t]["weights"])) for t in tasks
            },
            "objective": {t: per_task[t]["objective"] for t in tasks},
            "search_seconds": sum(per_task[t].get("search_seconds", 0.0) for t in tasks),
            "loss_note": "objective = teacher-forced validation CE + l1 · mean|w|",
        }
    }
    generation = GenerationResult(
        predictions, gen_seconds, gen_seconds / max(1, len(predictions)), merge_seconds
    )
    return PipelineOutput(predictions=predictions, generation=generation, extra=extra)
