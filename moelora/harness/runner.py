"""One job: check → inputs → identity → (skip | resume | run) → score → results.json.
Called by ``run.py``.

1. The whole config is checked (moelora.harness.schema, moelora.harness.inputs.check_input_paths) before the
   run directory is touched: a bad value, a key nothing reads or a missing typed path stops
   the job with every problem named.
2. The inputs are prepared (the embedded benchmark and base, only where the defaults point)
   and fingerprinted; with the config and the world size they make the job identity
   (moelora.harness.identity).
3. A finished run of the same identity is skipped unless ``overwrite=true``; a folder that
   holds another job's results or checkpoints is never skipped nor overwritten (an error
   names what differs); a killed run resumes from its last checkpoint (``resume=auto``).

The job never branches on the method: the method's YAML names its adapter builder, its
sampler and its pipeline. A failure is recorded as ``status: failed`` with the error and
does not stop a sweep.

Run folder: The run folder: what earlier attempts of a job left there, and starting over.

A folder holds one job (moelora.harness.identity decides whether an earlier ``results.json`` belongs
to it). Its records (``RECORDS``) say what ran; everything else is progress: checkpoints (the
trainer's ``checkpoints/`` and a method's own, such as LoRA (Single)'s per-task ones),
adapters, predictions.
"""

from __future__ import annotations

import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf

from moelora.data.encoding import apply_task_prompt, check_tasks_present, load_split
from moelora.engine import distributed, progress
from moelora.engine.memory import MemoryPlanError, gpu_memory_plan
from moelora.harness import lr_protocol
from moelora.harness.context import PipelineOutput, RunContext
from moelora.harness.identity import (
    DamagedRunError,
    IdentityMismatchError,
    check_previous,
    job_identity,
)
from moelora.harness.inputs import check_input_paths, describe_inputs, prepare_inputs
from moelora.harness.interrupt import interrupted_record, raise_on_sigterm
from moelora.harness.loggers import NoneLogger
from moelora.harness.recipe import check_schedule, resolve_auto_switches
from moelora.harness.results import (
    provenance,
    read_results,
    redact,
    score_table,
    write_results,
)
from moelora.harness.schema import ConfigError, check_config
from moelora.method.tasks import TaskMap
from moelora.utils.io import LOCK_NAME, JobBusyError, remove_stray_temp_files, write_jsonl
from moelora.utils.manifest import MANIFEST_NAME, remove_manifest, write_manifest
from moelora.utils.names import current_name
from moelora.utils.redaction import redact_override, redact_text, secret_values
from moelora.utils.seed import seed_everything

REPO_ROOT = Path(__file__).resolve().parents[2]


def resolve_pipeline(name: str):
    return get_method(current_name(name) if "." in name else f"moelora.harness.context.{name}")


def load_splits(cfg: DictConfig, task_map: TaskMap) -> dict[str, list[dict[str, Any]]]:
    d = cfg.data
    root = Path(d.root)
    splits = {}
    for split, fname in d.files.items():
        splits[split] = load_split(
            root / fname, task_map, drop_unlisted_tasks=d.drop_unlisted_tasks
        )
    check_tasks_present(splits, {s: root / f for s, f in d.files.items()}, task_map)
    limit = cfg.trainer.eval.limit_per_task
    if limit:
        seen: dict[str, int] = {}
        kept = []
        for r in splits["test"]:
            if seen.get(r["task_dataset"], 0) < limit:
                kept.append(r)
                seen[r["task_dataset"]] = seen.get(r["task_dataset"], 0) + 1
        splits["test"] = kept
    return splits


def _make_logger(cfg: DictConfig, run_dir: Path, config: dict[str, Any]) -> Any:
    return instantiate(
        cfg.logger,
        _recursive_=False,
        _convert_="all",
        run_dir=run_dir,
        group=cfg.experiment_name,
        name=f"{cfg.method.name}-s{cfg.seed}",
        job_type=cfg.method.name,
        run_config=config,
    )


def _score(
    gold: list[dict[str, Any]],
    predictions: list[dict[str, Any]],
    tasks: list[str],
    modes: list[str],
) -> dict[str, Any]:
    from moelora.evaluation import score_records

    out: dict[str, Any] = {}
    for mode in modes:
        report = score_records(gold, predictions, mode=mode, tasks=tasks)
        out[mode] = report
    return out


def _introspect(model: Any, task_map: TaskMap, cfg: DictConfig) -> dict[str, Any]:
    from moelora.harness.results import describe_model

    return describe_model(model, task_map=task_map, method_cfg=cfg.method)


def _reuse(
    cfg: DictConfig,
    run_dir: Path,
    resolved: dict[str, Any],
    identity: dict[str, Any],
    accelerator: Any,
    extra: dict[str, Any],
) -> tuple[bool, str | None]:
    """Reuse finished work from ``paths.output_dir`` (moelora/harness/reuse.py). The main process links
    files; every process waits for it, then takes the same decision.

    Returns (adopted, trained_by): ``adopted`` when an identical job's results were taken over;
    else ``trained_by`` names the run whose final checkpoint was linked in (only inference
    differs), or is None."""
    if not cfg.get("reuse", True) or cfg.overwrite:
        return False, None
    from moelora.harness.reuse import adopt, find_reuse, seed_checkpoint

    source, ckpt = find_reuse(
        identity, run_dir, Path(cfg.paths.output_dir), accelerator.device.type
    )
    if source is not None:
        if accelerator.is_main_process:
            adopt(
                source,
                run_dir,
                {
                    "experiment": cfg.experiment_name,
                    "run_dir": str(run_dir),
                    "overrides": _overrides(),
                    "config": resolved,
                    **extra,
                },
            )
        accelerator.wait_for_everyone()
        accelerator.print(
            f"[reuse] {run_dir} is the same job as {source}; its results were "
            f"adopted (reuse=false trains it again)"
        )
        return True, None
    ckpt = ckpt if cfg.resume == "auto" else None
    linked = ckpt is not None and accelerator.is_main_process and seed_checkpoint(ckpt, run_dir)
    accelerator.wait_for_everyone()
    if ckpt is None or (accelerator.is_main_process and not linked):
        return False, None
    accelerator.print(
        f"[reuse] {run_dir}: only inference differs from {ckpt.parents[1]}; its "
        f"final checkpoint is linked and this job only evaluates "
        f"(reuse=false trains it again)"
    )
    return False, str(ckpt.parents[1])


def run(cfg: DictConfig, run_dir: Path) -> int:
    """Run one job in ``run_dir``; returns 0 on success or skip, 1 on failure, and 1 without
    touching the folder when another process is running the same job (``moelora.utils.io.job_lock``).

    Under a multi-process launch (moelora/engine/distributed.py) rank 0 takes the lock for every rank
    and is the only one that writes; a launch that does not start the processes it asked for
    raises ``moelora.engine.distributed.LaunchError`` before anything is written."""
    run_dir = Path(run_dir)
    choices = _choices()
    try:  # 1. the whole config, before anything changes
        lr_note = lr_protocol.apply(cfg)  # this method's lr under lr_protocol=dev
        check_config(cfg, choices or None)
        check_input_paths(cfg)
        check_schedule(cfg)  # a large model never trains at the CPU schedule's lr
    except (ConfigError, FileNotFoundError) as e:
        return _refuse(cfg, run_dir, "config", e)
    if lr_note and distributed.is_main_rank():
        print(f"[lr] {lr_note}")
    try:
        with raise_on_sigterm(), distributed.job(cfg, run_dir) as accelerator:
            return _run(cfg, run_dir, accelerator, choices)
    except JobBusyError as e:
        if distributed.is_main_rank():
            print(f"[busy] {e}", file=sys.stderr)
        return 1


def _refuse(cfg: DictConfig, run_dir: Path, tag: str, error: Exception) -> int:
    """Report a job that cannot start; record it as failed only where nothing of value is
    (no results.json yet, or a failed one): a finished or killed run's record is kept."""
    message = redact_text(str(error), secret_values(_raw_overrides()))
    print(f"[{tag}] {message}", file=sys.stderr)
    previous = read_results(run_dir)
    if distributed.is_main_rank() and (previous is None or previous.get("status") == "failed"):
        write_results(
            run_dir,
            {
                "experiment": cfg.get("experiment_name"),
                "method": _select(cfg, "method.name"),
                "seed": _select(cfg, "seed"),
                "overrides": _overrides(),
                "run_dir": str(run_dir),
                "status": "failed",
                "error": f"{type(error).__name__}: {message}",
            },
        )
    return 1


def _select(cfg: DictConfig, key: str) -> Any:
    try:
        return OmegaConf.select(cfg, key)
    except Exception:  # noqa: BLE001 - an unresolvable value is what the error is about
        return None


def _choices() -> dict[str, str]:
    """Hydra's config group choices of this job (model=tiny, trainer=smoke, ...), if known."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return {
            str(k): str(v)
            for k, v in HydraConfig.get().runtime.choices.items()
            if v is not None and not str(k).startswith("hydra")
        }
    except ValueError:
        return {}


def _run(cfg: DictConfig, run_dir: Path, accelerator: Any, choices: dict[str, str]) -> int:
    main = accelerator.is_main_process
    if cfg.threads:
        import torch

        torch.set_num_threads(int(cfg.threads))
    try:  # 2. inputs and identity
        problem = None
        if main:  # rank 0 builds; every rank fingerprints
            try:
                prepare_inputs(cfg)
            except Exception as e:  # noqa: BLE001 - reported below, on every rank
                problem = e
        accelerator.wait_for_everyone()
        if problem is not None:
            raise problem
        inputs = describe_inputs(cfg, world_size=accelerator.num_processes)
        for note in resolve_auto_switches(cfg):  # before the identity: what the job computes
            accelerator.print(f"[model] {note}")
    except Exception as e:  # noqa: BLE001 - a build or a fingerprint failed: reported, not raised
        return _refuse(cfg, run_dir, "inputs", e)
    resolved = redact(OmegaConf.to_container(cfg, resolve=True))
    identity = job_identity(resolved, inputs)
    previous = read_results(run_dir)
    if previous is None and (run_dir / "results.json").is_file() and not cfg.overwrite:
        if main:  # a damaged record is neither recomputed over nor trusted
            print(
                f"[damaged] {run_dir / 'results.json'} is not valid JSON (cut short or "
                "overwritten), so what ran there is unknown; overwrite=true recomputes the job "
                "(the damaged file is kept as results.<time>.previous.json)",
                file=sys.stderr,
            )
        return 1
    accelerator.wait_for_everyone()  # every rank has read the folder before rank 0 changes it
    if cfg.overwrite:  # 3. skip | start over | resume
        state = "new"
        if previous is not None and main:
            start_over(run_dir, keep_results=True)
    else:
        try:
            state = check_previous(
                previous,
                run_dir,
                config=resolved,
                inputs=inputs,
                identity=identity,
                resume=cfg.resume == "auto",
            )
        except IdentityMismatchError as e:
            if main:
                tag = "damaged" if isinstance(e, DamagedRunError) else "mismatch"
                print(f"[{tag}] {e}", file=sys.stderr)
            return 1
    if state in ("done", "legacy-done"):
        note = (
            ""
            if state == "done"
            else "; it was recorded before input fingerprints, so its "
            "model and data are not verified"
        )
        if not (run_dir / MANIFEST_NAME).is_file():
            note += "; it has no manifest.json (written before manifests), so its files are not"
            note += " verified"
        accelerator.print(
            f"[skip] {run_dir} already has a successful results.json{note} "
            "(overwrite=true reruns it)"
        )
        return 0
    earlier = 0.0 if cfg.overwrite else previous_attempts_seconds(previous, run_dir)
    if main:
        remove_stray_temp_files(run_dir)
        remove_manifest(run_dir)  # the folder changes now; a new manifest comes last
        if cfg.resume == "never":
            start_over(run_dir, keep_results=False)
    accelerator.wait_for_everyone()  # no rank reads a checkpoint rank 0 is removing
    if cfg.resume == "never":
        earlier = 0.0

    seed_everything(cfg.seed, deterministic=cfg.deterministic)
    if main:
        OmegaConf.save(OmegaConf.create(resolved), run_dir / "config.yaml")
    recorded = {
        "identity": identity,
        "inputs": inputs,
        **distributed.describe(accelerator, cfg.trainer),
        "choices": choices,
    }
    try:  # GPU jobs: the memory plan, before the model loads
        if plan := gpu_memory_plan(cfg, accelerator):
            recorded["memory_plan"] = plan
    except MemoryPlanError as e:
        return _refuse(cfg, run_dir, "memory", e)
    adopted, trained_by = _reuse(cfg, run_dir, resolved, identity, accelerator, recorded)
    if adopted:
        return 0
    base = {
        "experiment": cfg.experiment_name,
        "method": cfg.method.name,
        "seed": cfg.seed,
        "overrides": _overrides(),
        "benchmark": cfg.data.benchmark,
        "tasks": list(cfg.data.tasks),
        "decoding": cfg.decoding,
        "run_dir": str(run_dir),
        "hparams": {
            k: v
            for k, v in (resolved["method"].get("adapter") or {}).items()
            if not k.startswith("_")
        },
        "provenance": provenance(REPO_ROOT, str(accelerator.device)),
        "config": resolved,
        **recorded,
    }
    if trained_by:
        base["trained_by"] = trained_by
    started = time.time()
    progress.reached(None)
    if main:
        write_results(
            run_dir,
            {
                **base,
                "status": "running",
                "started_at": started,
                "timing": {"previous_attempts_seconds": earlier},
            },
        )
    t0 = time.perf_counter()
    exit_code = 1
    logger = None
    try:
        logger = _make_logger(cfg, run_dir, resolved) if main else NoneLogger()
        task_map = TaskMap(cfg.data.tasks, scheme=cfg.data.task_ids)
        gold = load_splits(cfg, task_map)
        splits = apply_task_prompt(gold, cfg.method.get("task_prompt"), seed=cfg.seed)
        ctx = RunContext(
            cfg=cfg,
            run_dir=run_dir,
            task_map=task_map,
            splits=splits,
            accelerator=accelerator,
            logger=logger,
        )
        out: PipelineOutput = resolve_pipeline(cfg.method.pipeline)(ctx)
        results = _finish(
            cfg, ctx, out, gold["test"], gold.get("train", []), base, time.perf_counter() - t0
        )
        results["timing"]["previous_attempts_seconds"] = earlier
        results["manifest"] = MANIFEST_NAME
        if main:
            write_results(run_dir, results)
            write_manifest(run_dir)  # last: the run is done only while its files match it
            print("\n" + "\n".join(score_table(results)))
            print(f"results: {run_dir / 'results.json'}")
        logger.summary({f"test/{k}/score": v for k, v in results["scores"].items()})
        exit_code = 0
    except KeyboardInterrupt as e:  # SIGINT, or SIGTERM (moelora.harness.interrupt): say so
        if main:
            record = interrupted_record(e)
            print(f"[interrupted] {run_dir}: {record['error']}", file=sys.stderr)
            write_results(
                run_dir,
                {
                    **base,
                    **record,
                    "started_at": started,
                    "timing": {
                        "total_seconds": time.perf_counter() - t0,
                        "previous_attempts_seconds": earlier,
                    },
                },
            )
        raise
    except Exception as e:  # noqa: BLE001 - recorded, then the sweep goes on
        secrets = secret_values(_raw_overrides())
        tb = redact_text(traceback.format_exc(), secrets)
        print(tb, file=sys.stderr)
        if main:
            write_results(
                run_dir,
                {
                    **base,
                    "status": "failed",
                    "error": redact_text(f"{type(e).__name__}: {e}", secrets),
                    **_diverged(e),
                    "traceback": tb,
                    "timing": {
                        "total_seconds": time.perf_counter() - t0,
                        "previous_attempts_seconds": earlier,
                    },
                },
            )
    finally:
        if logger is not None:
            logger.finish(exit_code)
    return exit_code


def _diverged(error: Exception) -> dict[str, Any]:
    """``{"diverged": {"step", "last_finite_loss"}}`` for a non-finite loss (moelora.engine.finite)."""
    from moelora.engine.finite import NonFiniteError

    if not isinstance(error, NonFiniteError) or error.step is None:
        return {}
    return {"diverged": {"step": error.step, "last_finite_loss": error.last_finite_loss}}


def _finish(
    cfg: DictConfig,
    ctx: RunContext,
    out: PipelineOutput,
    gold: list[dict[str, Any]],
    train: list[dict[str, Any]],
    base: dict[str, Any],
    seconds: float,
) -> dict[str, Any]:
    """Score the predictions on ``gold`` (the test split as evaluated) in every scorer mode,
    the floors of this split (``train`` gives the majority targets) in the primary mode, and
    assemble ``results.json``."""
    texts = {p["sample_id"]: p["target"] for p in out.predictions}
    predictions = [{**g, "target": texts.get(g["sample_id"], "")} for g in gold]
    missing = [g["sample_id"] for g in gold if g["sample_id"] not in texts]
    if missing:
        raise RuntimeError(
            f"the pipeline produced no prediction for {len(missing)} test samples, "
            f"e.g. {missing[:3]}"
        )
    if ctx.accelerator.is_main_process:
        write_jsonl(ctx.run_dir / "predictions.jsonl", predictions)
    reports = _score(gold, predictions, list(ctx.task_map.tasks), list(cfg.scorer.modes))
    primary = reports[cfg.scorer.modes[0]]
    metrics = {f"test/{task}/{k}": v for task, d in primary.detail.items() for k, v in d.items()}
    results = {
        **base,
        "status": "success",
        "scorer_mode": primary.mode,
        "scores": primary.scores,
        "metrics": metrics,
    }
    for mode, report in reports.items():
        if mode != primary.mode:
            results[f"scores_{mode}"] = report.scores
            if report.undefined:
                results[f"undefined_{mode}"] = report.undefined
    from moelora.evaluation.floors import floor_scores

    t_floor = time.perf_counter()
    results["floors"] = floor_scores(train, gold, tasks=list(ctx.task_map.tasks), mode=primary.mode)
    results["floors"]["seconds"] = time.perf_counter() - t_floor
    if ctx.token_stats:
        results["token_stats"] = ctx.token_stats
    if out.model is not None:
        results.update(_introspect(out.model, ctx.task_map, cfg))
    timing: dict[str, Any] = {
        "total_seconds": seconds,
        "infer_requested": cfg.method.get("infer"),
        "infer_mode": ctx.infer_mode,
    }
    if out.train is not None:
        timing.update(train_seconds=out.train.seconds, train_step_seconds=out.train.step_seconds)
        results["train"] = {
            "steps": out.train.steps,
            "losses": out.train.losses,
            "resumed_from": out.train.resumed_from,
            "peak_memory_bytes": out.train.peak_memory_bytes,
            "throughput": out.train.throughput,
        }
    if out.generation is not None:
        timing.update(
            eval_seconds=out.generation.seconds,
            latency_per_example=out.generation.latency_per_example,
            merge_seconds=out.generation.merge_seconds,
        )
    results["timing"] = timing
    results.update(out.extra)
    return results


def _raw_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return [str(o) for o in HydraConfig.get().overrides.task]
    except ValueError:
        return []


def _overrides() -> list[str]:
    """This job's command-line overrides (secrets masked), without method, seed, experiment."""
    skip = {"method", "seed", "experiment"}
    return [
        redact_override(o) for o in _raw_overrides() if o.split("=", 1)[0].lstrip("+~") not in skip
    ]


# ---- run folder ----------------------------------------
# Files that record a run rather than its progress (ignored when dating the last saved progress).
RECORDS = {"results.json", "config.yaml", "run.log", "wandb_id.txt", "metrics.csv", LOCK_NAME}


def previous_attempts_seconds(previous: dict[str, Any] | None, run_dir: Path) -> float:
    """Wall time of earlier attempts whose progress this attempt continues from.

    A failed attempt recorded its time; a killed one (``status: running``) counts from its start
    to its last saved progress (the newest checkpoint or adapter file), since work after that is
    redone. Earlier attempts of those attempts are carried along."""
    if not previous:
        return 0.0
    timing = previous.get("timing") or {}
    carried = float(timing.get("previous_attempts_seconds") or 0.0)
    if previous.get("status") == "failed":
        return carried + float(timing.get("total_seconds") or 0.0)
    started = previous.get("started_at")
    saved = [
        p.stat().st_mtime
        for p in run_dir.rglob("*")
        if p.is_file()
        and p.name not in RECORDS
        and not {".hydra", "wandb"} & set(p.relative_to(run_dir).parts)
    ]
    if previous.get("status") not in ("running", "interrupted") or started is None or not saved:
        return carried
    return carried + max(0.0, max(saved) - float(started))


def start_over(run_dir: Path, *, keep_results: bool) -> None:
    """Remove every checkpoint folder (the method's own ones included); with ``keep_results``
    the old results.json is kept as ``results.<time>.previous.json``."""
    if keep_results and (run_dir / "results.json").is_file():
        stamp = time.strftime("%Y%m%d-%H%M%S")
        shutil.move(str(run_dir / "results.json"), str(run_dir / f"results.{stamp}.previous.json"))
    for pointer in list(run_dir.rglob("last.json")):
        if pointer.parent.name == "checkpoints" and pointer.parent.is_dir():
            shutil.rmtree(pointer.parent, ignore_errors=True)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
