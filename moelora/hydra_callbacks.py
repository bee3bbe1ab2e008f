"""Hydra callbacks: a summary of a sweep's jobs, read from their results.json files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from moelora.io import job_is_running, read_json


class SweepSummary(Callback):
    """At the end of a multirun, print one line per job: status, method, seed, avg score.

    A job whose results.json says ``running`` is shown as ``running`` while another process
    holds its lock, and as ``stopped`` (killed or crashed; a rerun resumes it) otherwise."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(config.hydra.sweep.dir)
        rows = []
        for path in sorted(root.rglob("results.json")):
            try:
                r = read_json(path)
            except ValueError:
                rows.append(("unreadable", "?", "?", None, path.parent))
                continue
            avg = (r.get("scores") or {}).get("avg")
            status = r.get("status", "?")
            if status == "running" and not job_is_running(path.parent):
                status = "stopped"
            rows.append((status, r.get("method", "?"), r.get("seed", "?"), avg, path.parent))
        if not rows:
            print(f"[sweep] no results.json under {root}")
            return
        print(f"\n[sweep] {len(rows)} job(s) under {root}")
        for status, method, seed, avg, run_dir in rows:
            score = "" if avg is None else f"avg={avg:.4f}"
            print(f"  {status:<8} {method:<22} seed={seed!s:<4} {score:<12} {run_dir.relative_to(root)}")
        count = Counter(r[0] for r in rows)
        failed = len(rows) - count["success"] - count["running"] - count["stopped"]
        if count["running"]:
            print(f"[sweep] {count['running']} job(s) are running in another process; a rerun "
                  "once they finish skips them")
        if count["stopped"]:
            print(f"[sweep] {count['stopped']} job(s) stopped before finishing (killed or "
                  "crashed); rerun the same command to resume them")
        if failed:
            print(f"[sweep] {failed} job(s) failed; see their results.json 'error'")
