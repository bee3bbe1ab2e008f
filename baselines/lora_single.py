"""LoRA (Single), docs/methods.md §4.2: one LoRA (Full)-style adapter per task, trained on that
task only, with snapshot selection on validation.

* Step budget (``single.max_steps``): ``epoch_matched`` gives task t
  ``ceil(trainer.max_steps × |D_t| / |D|)`` steps (the same number of passes over its data as
  the multi-task run; all eight together cost one LoRA (Full) run), or an integer.
* Every task starts from the same adapter initialisation (same seed → same ``A``), which
  LoRAHub's element-wise composition relies on (§5.2).
* Snapshots at every ``1/single.snapshots`` of training (default 10 %) are saved from the
  trainer's ``on_step`` hook, so a killed run resumes without losing them. After a task
  finishes, every snapshot is scored on the task's validation subset (``single.select_by``:
  ``metric`` = the test metric on generated answers; ``loss`` = teacher-forced CE, a cheap
  proxy). ``single.select: shared_best_avg`` picks ONE fraction for all tasks with the best
  average validation score; ``per_task_best`` picks per task.
* The chosen adapters are kept as ``<run_dir>/adapters/<task>/`` (inputs of
  Task-Arithmetic and LoRAHub); each test example is answered by its own task's adapter.

Layout under ``<run_dir>/single/<task>/``: ``checkpoints/`` (resumable training),
``snapshots/step-XXXXXX/`` (adapters), ``val.json`` (written last: the task is done).

:func:`load_run` rebuilds a finished run (moelora/inference/load.py) as one peft model holding the eight
adapters, named by their tasks: a task group selects its adapter (``set_adapter``); a batch
mixing tasks passes ``adapter_names`` (one per row) to ``generate``, which peft splits by
adapter inside every layer.
"""

from __future__ import annotations

import copy
import math
import shutil
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from baselines.compose import by_task, higher_is_better, val_subset, validation_scores
from moelora.engine.adapters import load_adapter, trainable_state_dict
from moelora.engine.generation import GenerationResult
from moelora.engine.train import TrainResult
from moelora.harness.context import PipelineOutput, RunContext
from moelora.utils.io import inside, read_json, write_json
from moelora.utils.seed import seed_everything


def epoch_matched_steps(total_steps: int, task_sizes: Mapping[str, int]) -> dict[str, int]:
    """``ceil(total_steps × |D_t| / |D|)`` per task (§4.2, ``single.max_steps: epoch_matched``)."""
    n = sum(task_sizes.values())
    if n == 0:
        raise ValueError("the training split is empty")
    return {t: max(1, math.ceil(total_steps * size / n)) for t, size in task_sizes.items()}


def task_step_budgets(
    setting: Any, total_steps: int, task_sizes: Mapping[str, int]
) -> dict[str, int]:
    """Resolve ``single.max_steps`` (``epoch_matched`` or an integer) for every task."""
    if setting == "epoch_matched":
        return epoch_matched_steps(total_steps, task_sizes)
    try:
        steps = int(setting)
    except (TypeError, ValueError):
        raise ValueError(
            f"single.max_steps={setting!r}; use 'epoch_matched' or an integer"
        ) from None
    if steps < 1:
        raise ValueError(f"single.max_steps={steps}; it must be at least 1")
    return {t: steps for t in task_sizes}


def snapshot_steps(max_steps: int, num_snapshots: int = 10) -> dict[float, int]:
    """Fraction of training → optimiser step of its snapshot (``round(f × max_steps)``, at
    least 1). With fewer steps than snapshots, several fractions share a step."""
    if num_snapshots < 1:
        raise ValueError(f"single.snapshots={num_snapshots}; it must be at least 1")
    out = {}
    for k in range(1, num_snapshots + 1):
        frac = round(k / num_snapshots, 6)
        out[frac] = min(max_steps, max(1, round(frac * max_steps)))
    return out


def select_fractions(
    scores: Mapping[float, Mapping[str, float]], *, mode: str, higher_better: bool = True
) -> dict[str, float]:
    """Pick the snapshot fraction of every task from validation scores.

    Args:
        scores: ``{fraction: {task: validation score}}`` (every task at every fraction).
        mode: ``shared_best_avg`` (one fraction for all tasks: best mean over tasks) or
            ``per_task_best``.
        higher_better: False for losses.

    Ties go to the later fraction (more training).
    """
    fractions = sorted(scores)
    if not fractions:
        raise ValueError("no snapshot scores to select from")
    tasks = list(scores[fractions[0]])
    sign = 1.0 if higher_better else -1.0

    def best(key) -> float:
        return max(fractions, key=lambda f: (sign * key(f), f))

    if mode == "shared_best_avg":
        chosen = best(lambda f: sum(scores[f][t] for t in tasks) / len(tasks))
        return {t: chosen for t in tasks}
    if mode == "per_task_best":
        return {t: best(lambda f, t=t: scores[f][t]) for t in tasks}
    raise ValueError(f"single.select={mode!r}; use 'shared_best_avg' or 'per_task_best'")


def _snapshot_dir(task_dir: Path, step: int) -> Path:
    return task_dir / "snapshots" / f"step-{step:06d}"


def _train_task(
    ctx: RunContext,
    model,
    encoder,
    task: str,
    records: list[dict[str, Any]],
    steps: int,
    fractions: dict[float, int],
    init_state: dict[str, torch.Tensor],
    task_dir: Path,
) -> TrainResult:
    """Train ``task``'s adapter from the shared initialisation, saving snapshots."""
    wanted = set(fractions.values())
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, value in init_state.items():
            params[name].copy_(value)
    seed_everything(int(ctx.cfg.seed), deterministic=bool(ctx.cfg.deterministic))

    def on_step(step: int, unwrapped) -> None:
        if step in wanted and ctx.accelerator.is_main_process:
            ctx.save_adapter(unwrapped, _snapshot_dir(task_dir, step), tasks=[task])

    return ctx.train(
        model,
        encoder,
        records,
        ckpt_dir=task_dir / "checkpoints",
        max_steps=steps,
        tasks=[task],
        log_prefix=f"{task}/",
        on_step=on_step,
    )


def _keep_snapshot(task_dir: Path, step: int, dest: Path) -> None:
    """Copy the chosen snapshot to ``dest`` (``adapters/<task>``), marking its step."""
    marker = dest / "selected.json"
    source = _snapshot_dir(task_dir, step)
    if not source.is_dir():
        if marker.is_file() and read_json(marker).get("step") == step:
            return  # kept by an earlier, interrupted run whose snapshots are gone
        raise FileNotFoundError(
            f"{source}: snapshot of step {step} is missing; delete {task_dir} and rerun "
            "lora_single to retrain this task"
        )
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest)
    write_json(marker, {"step": step})


def pipeline(ctx: RunContext) -> PipelineOutput:
    """Train, select and evaluate the eight single-task adapters (§4.2)."""
    opts = ctx.cfg.method.single
    tasks = list(ctx.task_map.tasks)
    train_groups = by_task(ctx.splits["train"])
    missing = [t for t in tasks if t not in train_groups]
    if missing:
        raise ValueError(f"the training split has no example of tasks {missing}")
    sizes = {t: len(train_groups[t]) for t in tasks}
    budgets = task_step_budgets(opts.max_steps, int(ctx.cfg.trainer.max_steps), sizes)
    select_by = str(opts.select_by)
    val = val_subset(ctx.splits["dev"], tasks, opts.val_per_task, int(ctx.cfg.seed))

    seed_everything(int(ctx.cfg.seed), deterministic=bool(ctx.cfg.deterministic))
    model, tokenizer = ctx.load_base()
    model = ctx.build_adapter(model, tasks=tasks)
    encoder = ctx.encoder(tokenizer)
    init_state = {k: v.clone() for k, v in trainable_state_dict(model).items()}

    root = ctx.run_dir / "single"
    main = ctx.accelerator.is_main_process  # only rank 0 writes; the others read after it
    info: dict[str, dict[str, Any]] = {}
    for task in tasks:
        task_dir = inside(root, task)  # a task name never leaves the run folder
        fractions = snapshot_steps(budgets[task], int(opts.snapshots))
        done = read_json(task_dir / "val.json") if (task_dir / "val.json").is_file() else None
        if (
            done
            and done.get("steps") == budgets[task]
            and done.get("select_by") == select_by
            and done.get("val_examples") == len(val[task])
        ):
            print(f"[lora_single] {task}: finished earlier, not retrained")
            info[task] = done
            continue
        if done and main:  # finished under other settings: start this task over
            shutil.rmtree(task_dir)
        ctx.accelerator.wait_for_everyone()
        result = _train_task(
            ctx,
            model,
            encoder,
            task,
            train_groups[task],
            budgets[task],
            fractions,
            init_state,
            task_dir,
        )
        t0 = time.perf_counter()
        per_step: dict[int, float] = {}
        for step in sorted(set(fractions.values())):
            load_adapter(model, _snapshot_dir(task_dir, step), expected_tasks=[task])
            per_step[step] = validation_scores(ctx, model, encoder, {task: val[task]}, select_by)[
                task
            ]
        info[task] = {
            "task": task,
            "steps": budgets[task],
            "train_examples": sizes[task],
            "select_by": select_by,
            "val_examples": len(val[task]),
            "fractions": {str(f): {"step": s, "score": per_step[s]} for f, s in fractions.items()},
            "train_seconds": result.seconds,
            "step_seconds": result.step_seconds,
            "val_seconds": time.perf_counter() - t0,
            "losses": result.losses,
            "resumed_from": result.resumed_from,
        }
        if main:
            write_json(task_dir / "val.json", info[task])

    scores = {
        float(f): {t: info[t]["fractions"][f]["score"] for t in tasks}
        for f in info[tasks[0]]["fractions"]
    }
    chosen = select_fractions(
        scores, mode=str(opts.select), higher_better=higher_is_better(select_by)
    )
    adapters_dir = ctx.run_dir / "adapters"
    for task in tasks:
        step = info[task]["fractions"][str(chosen[task])]["step"]
        if main:
            _keep_snapshot(inside(root, task), step, inside(adapters_dir, task))
    ctx.accelerator.wait_for_everyone()  # every rank loads the kept adapters below

    # Test: every task's examples are answered by its own adapter.
    predictions: list[dict[str, Any]] = []
    gen_seconds = 0.0
    test_groups = by_task(ctx.splits["test"])
    for task in tasks:
        if not test_groups.get(task):
            continue
        load_adapter(model, inside(adapters_dir, task), expected_tasks=[task])
        gen = ctx.generate(model, encoder, test_groups[task])
        predictions.extend(gen.predictions)
        gen_seconds += gen.seconds
    n_test = max(1, len(predictions))
    train_seconds = sum(info[t]["train_seconds"] for t in tasks)
    total_steps = sum(budgets.values())
    train = TrainResult(
        steps=total_steps,
        losses=[],
        seconds=train_seconds,
        step_seconds=train_seconds / max(1, total_steps),
    )
    extra = {
        "single": {
            "max_steps": budgets,
            "select": str(opts.select),
            "select_by": select_by,
            "select_by_note": "teacher-forced validation CE (proxy)"
            if select_by == "loss"
            else "validation metric on generated answers (same metrics as test)",
            "val_per_task": opts.val_per_task,
            "chosen_fraction": chosen,
            "chosen_step": {t: info[t]["fractions"][str(chosen[t])]["step"] for t in tasks},
            "val_scores": {str(f): s for f, s in scores.items()},
            "val_seconds": sum(info[t]["val_seconds"] for t in tasks),
            "losses": {t: info[t]["losses"] for t in tasks},
            "adapters_dir": str(adapters_dir),
        }
    }
    if main:
        write_json(adapters_dir / "selection.json", extra["single"])
    if not opts.keep_snapshots and main:
        for task in tasks:
            shutil.rmtree(inside(root, task, "snapshots"), ignore_errors=True)
            shutil.rmtree(inside(root, task, "checkpoints"), ignore_errors=True)
    return PipelineOutput(
        predictions=predictions,
        model=model,
        train=train,
        generation=GenerationResult(predictions, gen_seconds, gen_seconds / n_test),
        extra=extra,
    )


def load_run(
    run_dir: Path,
    *,
    config: Any,
    device: torch.device,
    dtype: str | None = None,
    trust_remote_code: bool | None = None,
) -> Any:
    """A finished LoRA (Single) run as one peft model with its task adapters (moelora/inference/load.py).

    Each ``<run_dir>/adapters/<task>/`` is checked against the base (fingerprint, keys, shapes)
    by :func:`moelora.engine.adapters.load_adapter`, then added as the peft adapter named ``<task>``.

    Returns:
        a :class:`moelora.inference.load.LoadedRun` whose ``task_scope`` selects a task's adapter and whose
        ``batch_kwargs`` give ``adapter_names`` (one per row) for batches mixing tasks.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    from moelora.inference.load import LoadedRun, RunLoadError, build_from_adapter
    from moelora.method.tasks import TaskMap

    task_map = TaskMap(list(config.data.tasks), scheme=config.data.task_ids)
    dirs = {t: inside(Path(run_dir) / "adapters", t) for t in task_map.tasks}
    if missing := [t for t, d in dirs.items() if not d.is_dir()]:
        raise RunLoadError(
            f"{run_dir}: no adapters/ folder for tasks {missing}; rerun the "
            "lora_single job (it resumes and trains only what is missing)"
        )
    first = task_map.tasks[0]
    model, base_dir, meta = build_from_adapter(
        dirs[first], config=config, dtype=dtype, trust_remote_code=trust_remote_code, device=device
    )
    states = {}
    for task, path in dirs.items():  # each checked against the base by load_adapter
        load_adapter(model, path, expected_tasks=[task])
        states[task] = {
            k: v.detach().clone()
            for k, v in get_peft_model_state_dict(model, adapter_name="default").items()
        }
    lora_config = model.peft_config["default"]
    for task, state in states.items():
        model.add_adapter(task, copy.deepcopy(lora_config))
        result = set_peft_model_state_dict(model, state, adapter_name=task)
        if result.unexpected_keys:
            raise RunLoadError(f"{dirs[task]}: keys {result.unexpected_keys[:3]} do not fit")
    model.delete_adapter("default")
    model.set_adapter(first)
    model.to(device).eval()

    @contextmanager
    def task_scope(task_id: int) -> Iterator[None]:
        model.set_adapter(task_map.name(task_id))
        try:
            yield
        finally:
            model.set_adapter(first)

    def batch_kwargs(task_ids: torch.Tensor) -> dict[str, Any]:
        return {"adapter_names": [task_map.name(i) for i in task_ids.tolist()]}

    return LoadedRun(
        run_dir=Path(run_dir),
        model=model,
        base_dir=base_dir,
        meta={**meta, "method": str(config.method.name), "tasks": task_map.tasks},
        config=config,
        task_map=task_map,
        device=device,
        task_scope=task_scope,
        batch_kwargs=batch_kwargs,
        trust_remote_code=meta["trust_remote_code"],
    )
