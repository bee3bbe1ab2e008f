"""The run folder: what earlier attempts of a job left there, and starting over.

A folder holds one job (moelora.identity decides whether an earlier ``results.json`` belongs
to it). Its records (``RECORDS``) say what ran; everything else is progress: checkpoints (the
trainer's ``checkpoints/`` and a method's own, such as LoRA (Single)'s per-task ones),
adapters, predictions.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from moelora.io import LOCK_NAME

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
    saved = [p.stat().st_mtime for p in run_dir.rglob("*") if p.is_file()
             and p.name not in RECORDS and not {".hydra", "wandb"} & set(p.relative_to(run_dir).parts)]
    if previous.get("status") != "running" or started is None or not saved:
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
