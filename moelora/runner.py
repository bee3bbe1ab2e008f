"""One job: compose → (skip | resume | run) → score → results.json. Called by ``run.py``.

The job never branches on the method: the method's YAML names its adapter builder, its
sampler and its pipeline. A failure is recorded as ``status: failed`` with the error and
does not stop a sweep. A finished job (``status: success``) is skipped unless
``overwrite=true``; a killed one resumes from its last checkpoint (``resume=auto``).
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

from moelora import distributed
from moelora.context import PipelineOutput, RunContext
from moelora.data import apply_task_prompt, load_split
from moelora.io import LOCK_NAME, JobBusyError, write_jsonl
from moelora.loggers import NoneLogger
from moelora.results import provenance, read_results, redact, write_results
from moelora.seed import seed_everything
from moelora.tasks import TaskMap

REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_pipeline(name: str):
    return get_method(name if "." in name else f"moelora.pipelines.{name}")


def prepare_inputs(cfg: DictConfig) -> None:
    """Build the embedded benchmark and base model on first use (both cached); real data and
    models have ``prepare: null`` and must already exist."""
    d = cfg.data
    if d.get("prepare") is not None and not all((Path(d.root) / f).is_file() for f in d.files.values()):
        instantiate(d.prepare)
    m = cfg.model
    if m.get("prepare") is not None and not (Path(m.path) / "config.json").is_file():
        instantiate(m.prepare)


def load_splits(cfg: DictConfig, task_map: TaskMap) -> dict[str, list[dict[str, Any]]]:
    d = cfg.data
    root = Path(d.root)
    splits = {}
    for split, fname in d.files.items():
        splits[split] = load_split(root / fname, task_map, drop_unlisted_tasks=d.drop_unlisted_tasks)
    ids = [r["sample_id"] for r in splits["test"]]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{root / d.files.test}: duplicate sample_id values; they must be unique")
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
    return instantiate(cfg.logger, _recursive_=False, _convert_="all", run_dir=run_dir,
                       group=cfg.experiment_name, name=f"{cfg.method.name}-s{cfg.seed}",
                       job_type=cfg.method.name, run_config=config)


def _score(gold: list[dict[str, Any]], predictions: list[dict[str, Any]], tasks: list[str],
           modes: list[str]) -> dict[str, Any]:
    from moelora.evaluation import score_records

    out: dict[str, Any] = {}
    for mode in modes:
        report = score_records(gold, predictions, mode=mode, tasks=tasks)
        out[mode] = report
    return out


def _introspect(model: Any, task_map: TaskMap, cfg: DictConfig) -> dict[str, Any]:
    from moelora.summary import describe_model

    return describe_model(model, task_map=task_map, method_cfg=cfg.method)


def _print_table(scores: dict[str, Any], title: str) -> None:
    width = max(len(k) for k in scores)
    print(f"\n{title}")
    for k, v in scores.items():
        print(f"  {k:<{width}}  {'n/a' if v is None else f'{v:.4f}'}")


def _reuse(cfg: DictConfig, run_dir: Path, resolved: dict[str, Any],
           accelerator: Any) -> tuple[bool, str | None]:
    """Reuse finished work from ``paths.output_dir`` (moelora/reuse.py). The main process links
    files; every process waits for it, then takes the same decision.

    Returns (adopted, trained_by): ``adopted`` when an identical job's results were taken over;
    else ``trained_by`` names the run whose final checkpoint was linked in (only inference
    differs), or is None."""
    if not cfg.get("reuse", True) or cfg.overwrite:
        return False, None
    from moelora.reuse import adopt, find_reuse, seed_checkpoint

    source, ckpt = find_reuse(resolved, run_dir, Path(cfg.paths.output_dir), accelerator.device.type)
    if source is not None:
        if accelerator.is_main_process:
            adopt(source, run_dir, {"experiment": cfg.experiment_name, "run_dir": str(run_dir),
                                    "overrides": _overrides(), "config": resolved})
        accelerator.wait_for_everyone()
        accelerator.print(f"[reuse] {run_dir} is the same job as {source}; its results were "
                          f"adopted (reuse=false trains it again)")
        return True, None
    ckpt = ckpt if cfg.resume == "auto" else None
    linked = ckpt is not None and accelerator.is_main_process and seed_checkpoint(ckpt, run_dir)
    accelerator.wait_for_everyone()
    if ckpt is None or (accelerator.is_main_process and not linked):
        return False, None
    accelerator.print(f"[reuse] {run_dir}: only inference differs from {ckpt.parents[1]}; its "
                      f"final checkpoint is linked and this job only evaluates "
                      f"(reuse=false trains it again)")
    return False, str(ckpt.parents[1])


# Files that record a run rather than its progress (ignored when dating the last saved progress).
_RECORDS = {"results.json", "config.yaml", "run.log", "wandb_id.txt", "metrics.csv", LOCK_NAME}


def _previous_attempts_seconds(previous: dict[str, Any] | None, run_dir: Path) -> float:
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
    saved = [p.stat().st_mtime for p in run_dir.rglob("*") if p.is_file()
             and p.name not in _RECORDS and not {".hydra", "wandb"} & set(p.relative_to(run_dir).parts)]
    if previous.get("status") != "running" or started is None or not saved:
        return carried
    return carried + max(0.0, max(saved) - float(started))


def run(cfg: DictConfig, run_dir: Path) -> int:
    """Run one job in ``run_dir``; returns 0 on success or skip, 1 on failure, and 1 without
    touching the folder when another process is running the same job (``moelora.io.job_lock``).

    Under a multi-process launch (moelora/distributed.py) rank 0 takes the lock for every rank
    and is the only one that writes; a launch that does not start the processes it asked for
    raises ``moelora.distributed.LaunchError`` before anything is written."""
    run_dir = Path(run_dir)
    try:
        with distributed.job(cfg, run_dir) as accelerator:
            return _run(cfg, run_dir, accelerator)
    except JobBusyError as e:
        if distributed.is_main_rank():
            print(f"[busy] {e}", file=sys.stderr)
        return 1


def _run(cfg: DictConfig, run_dir: Path, accelerator: Any) -> int:
    main = accelerator.is_main_process
    previous = read_results(run_dir)
    earlier = 0.0 if cfg.overwrite else _previous_attempts_seconds(previous, run_dir)
    accelerator.wait_for_everyone()  # every rank has read the folder before rank 0 changes it
    if previous and previous.get("status") == "success" and not cfg.overwrite:
        accelerator.print(f"[skip] {run_dir} already has a successful results.json "
                          "(overwrite=true reruns it)")
        return 0
    if cfg.overwrite and previous is not None and main:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        shutil.move(str(run_dir / "results.json"), str(run_dir / f"results.{stamp}.previous.json"))
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    if cfg.resume == "never":
        earlier = 0.0
        if main:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    elif cfg.resume != "auto":
        raise ValueError(f"resume={cfg.resume!r}; use 'auto' or 'never'")
    accelerator.wait_for_everyone()  # no rank reads a checkpoint that rank 0 is removing

    if cfg.threads:
        import torch

        torch.set_num_threads(int(cfg.threads))
    seed_everything(cfg.seed, deterministic=cfg.deterministic)
    resolved = redact(OmegaConf.to_container(cfg, resolve=True))
    if main:
        OmegaConf.save(OmegaConf.create(resolved), run_dir / "config.yaml")
    adopted, trained_by = _reuse(cfg, run_dir, resolved, accelerator)
    if adopted:
        return 0
    base = {
        "experiment": cfg.experiment_name, "method": cfg.method.name, "seed": cfg.seed,
        "overrides": _overrides(), "benchmark": cfg.data.benchmark, "tasks": list(cfg.data.tasks),
        "decoding": cfg.decoding, "run_dir": str(run_dir),
        "hparams": {k: v for k, v in (resolved["method"].get("adapter") or {}).items()
                    if not k.startswith("_")},
        "provenance": provenance(REPO_ROOT, str(accelerator.device)), "config": resolved,
        **distributed.describe(accelerator, cfg.trainer),
    }
    if trained_by:
        base["trained_by"] = trained_by
    if main:
        write_results(run_dir, {**base, "status": "running", "started_at": time.time(),
                                "timing": {"previous_attempts_seconds": earlier}})
    t0 = time.perf_counter()
    exit_code = 1
    logger = None
    try:
        logger = _make_logger(cfg, run_dir, resolved) if main else NoneLogger()
        task_map = TaskMap(cfg.data.tasks, scheme=cfg.data.task_ids)
        if main:
            prepare_inputs(cfg)
        accelerator.wait_for_everyone()
        gold = load_splits(cfg, task_map)
        splits = apply_task_prompt(gold, cfg.method.get("task_prompt"), seed=cfg.seed)
        ctx = RunContext(cfg=cfg, run_dir=run_dir, task_map=task_map, splits=splits,
                         accelerator=accelerator, logger=logger)
        out: PipelineOutput = resolve_pipeline(cfg.method.pipeline)(ctx)
        results = _finish(cfg, ctx, out, gold["test"], base, time.perf_counter() - t0)
        results["timing"]["previous_attempts_seconds"] = earlier
        if main:
            write_results(run_dir, results)
            _print_table(results["scores"], f"{cfg.method.name} seed={cfg.seed} "
                         f"[{cfg.data.benchmark}, scorer={cfg.scorer.modes[0]}]")
            print(f"results: {run_dir / 'results.json'}")
        logger.summary({f"test/{k}/score": v for k, v in results["scores"].items()})
        exit_code = 0
    except Exception as e:  # noqa: BLE001 - recorded, then the sweep goes on
        tb = traceback.format_exc()
        print(tb, file=sys.stderr)
        if main:
            write_results(run_dir, {**base, "status": "failed", "error": f"{type(e).__name__}: {e}",
                                    "traceback": tb,
                                    "timing": {"total_seconds": time.perf_counter() - t0,
                                               "previous_attempts_seconds": earlier}})
    finally:
        if logger is not None:
            logger.finish(exit_code)
    return exit_code


def _finish(cfg: DictConfig, ctx: RunContext, out: PipelineOutput, gold: list[dict[str, Any]],
            base: dict[str, Any], seconds: float) -> dict[str, Any]:
    texts = {p["sample_id"]: p["target"] for p in out.predictions}
    predictions = [{**g, "target": texts.get(g["sample_id"], "")} for g in gold]
    missing = [g["sample_id"] for g in gold if g["sample_id"] not in texts]
    if missing:
        raise RuntimeError(f"the pipeline produced no prediction for {len(missing)} test samples, "
                           f"e.g. {missing[:3]}")
    if ctx.accelerator.is_main_process:
        write_jsonl(ctx.run_dir / "predictions.jsonl", predictions)
    reports = _score(gold, predictions, list(ctx.task_map.tasks), list(cfg.scorer.modes))
    primary = reports[cfg.scorer.modes[0]]
    metrics = {f"test/{task}/{k}": v for task, d in primary.detail.items() for k, v in d.items()}
    results = {**base, "status": "success", "scorer_mode": primary.mode,
               "scores": primary.scores, "metrics": metrics}
    for mode, report in reports.items():
        if mode != primary.mode:
            results[f"scores_{mode}"] = report.scores
            if report.undefined:
                results[f"undefined_{mode}"] = report.undefined
    if out.model is not None:
        results.update(_introspect(out.model, ctx.task_map, cfg))
    timing: dict[str, Any] = {"total_seconds": seconds, "infer_requested": cfg.method.get("infer"),
                              "infer_mode": ctx.infer_mode}
    if out.train is not None:
        timing.update(train_seconds=out.train.seconds, train_step_seconds=out.train.step_seconds)
        results["train"] = {"steps": out.train.steps, "losses": out.train.losses,
                            "resumed_from": out.train.resumed_from,
                            "peak_memory_bytes": out.train.peak_memory_bytes}
    if out.generation is not None:
        timing.update(eval_seconds=out.generation.seconds,
                      latency_per_example=out.generation.latency_per_example,
                      merge_seconds=out.generation.merge_seconds)
    results["timing"] = timing
    results.update(out.extra)
    return results


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        hc = HydraConfig.get()
    except ValueError:
        return []
    skip = {"method", "seed", "experiment"}
    return [o for o in hc.overrides.task if o.split("=", 1)[0].lstrip("+~") not in skip]
