"""Hydra callbacks: secrets out of Hydra's own records, and a summary of a sweep's jobs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from moelora.io import job_is_running, read_json
from moelora.redaction import MASK, is_secret_key, redact_override, redact_text, secret_values


def _scrub(obj: Any, secrets: list[str]) -> Any:
    if isinstance(obj, dict):
        return {k: (MASK if is_secret_key(str(k)) and v not in (None, "") else _scrub(v, secrets))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrub(v, secrets) for v in obj]
    if isinstance(obj, str):       # an override, or a k=v,k=v list of them (override_dirname)
        return redact_text(",".join(redact_override(part) for part in obj.split(",")), secrets)
    return obj


def scrub_yaml(path: Path, secrets: list[str]) -> None:
    """Rewrite a saved YAML file with credential-like values masked (no-op when absent)."""
    if not path.is_file():
        return
    from moelora.io import write_text

    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    write_text(path, OmegaConf.to_yaml(OmegaConf.create(_scrub(data, secrets))))


class RedactSecrets(Callback):
    """Hydra saves ``.hydra/{config,hydra,overrides}.yaml`` (and a sweep's ``multirun.yaml``)
    before the job starts; when an override names a credential-like key, this rewrites them
    with the value masked (moelora.redaction). Without such an override it does nothing."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        hydra = config.hydra
        items = [*hydra.overrides.task, *hydra.overrides.hydra]
        if not any(redact_override(str(o)) != str(o) for o in items):
            return
        secrets = secret_values(str(o) for o in items)
        if hydra.output_subdir is not None:
            folder = Path(hydra.runtime.output_dir) / str(hydra.output_subdir)
            for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
                scrub_yaml(folder / name, secrets)
        if hydra.mode == RunMode.MULTIRUN:
            scrub_yaml(Path(str(hydra.sweep.dir)) / "multirun.yaml", secrets)


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
