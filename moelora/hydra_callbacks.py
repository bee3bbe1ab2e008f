"""Hydra callbacks: a summary of a sweep's jobs, read from their results.json files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from moelora.io import read_json


class SweepSummary(Callback):
    """At the end of a multirun, print one line per job: status, method, seed, avg score."""

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
            rows.append((r.get("status", "?"), r.get("method", "?"), r.get("seed", "?"), avg, path.parent))
        if not rows:
            print(f"[sweep] no results.json under {root}")
            return
        print(f"\n[sweep] {len(rows)} job(s) under {root}")
        for status, method, seed, avg, run_dir in rows:
            score = "" if avg is None else f"avg={avg:.4f}"
            print(f"  {status:<8} {method:<22} seed={seed!s:<4} {score:<12} {run_dir.relative_to(root)}")
        failed = [r for r in rows if r[0] != "success"]
        if failed:
            print(f"[sweep] {len(failed)} job(s) did not succeed; see their results.json 'error'")
