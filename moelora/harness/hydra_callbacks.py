"""Hydra callbacks: secrets out of Hydra's own records; a summary of a sweep's jobs, read from
their results.json files; and the local submitit launcher's log folder.

A sweep folder (``outputs/<experiment>``) holds the jobs of every sweep ever run into it, so
the summary lists the jobs that this sweep started: each job, when it starts (in whatever
process the launcher runs it: this one, a ``submitit_local`` subprocess, a SLURM node), leaves
a marker naming its folder under ``<sweep dir>/.sweeps/<sweep id>/``; the summary reads the
markers, then removes them.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from moelora.engine.distributed import is_main_rank
from moelora.harness.interrupt import sigterm_raises
from moelora.utils.io import job_is_running, read_json, write_json
from moelora.utils.redaction import MASK, is_secret_key, redact_override, redact_text, secret_values

MARKERS = ".sweeps"
# submitit's local executor creates its folder literally, so a "%j" in it becomes a folder
# named "%j"; its job files are told apart by the job id in their names instead.
LOCAL_SUBMITIT_FOLDER = "${hydra.sweep.dir}/.submitit"


def register_launchers() -> None:
    """Make ``hydra/launcher=submitit_local`` keep its files in ``<sweep dir>/.submitit``
    (the plugin's default ``.submitit/%j`` leaves a literal ``%j`` folder). The plugin's own
    config class is reused; nothing happens when the plugin (pip extra ``slurm``) is absent.
    Call before Hydra composes the config (run.py does)."""
    try:
        from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf
    except ImportError:
        return
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # Hydra's plugin scan registers the plugin's configs (once); ours replaces
    ConfigStore.instance().store(
        group="hydra/launcher",
        name="submitit_local",
        node=LocalQueueConf(submitit_folder=LOCAL_SUBMITIT_FOLDER),
        provider="moelora",
    )


def _scrub(obj: Any, secrets: list[str]) -> Any:
    if isinstance(obj, dict):
        return {
            k: (MASK if is_secret_key(str(k)) and v not in (None, "") else _scrub(v, secrets))
            for k, v in obj.items()
        }
    if isinstance(obj, list):
        return [_scrub(v, secrets) for v in obj]
    if isinstance(obj, str):  # an override, or a k=v,k=v list of them (override_dirname)
        return redact_text(",".join(redact_override(part) for part in obj.split(",")), secrets)
    return obj


def scrub_yaml(path: Path, secrets: list[str]) -> None:
    """Rewrite a saved YAML file with credential-like values masked (no-op when absent)."""
    if not path.is_file():
        return
    from moelora.utils.io import write_text

    data = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    write_text(path, OmegaConf.to_yaml(OmegaConf.create(_scrub(data, secrets))))


class RedactSecrets(Callback):
    """Hydra saves ``.hydra/{config,hydra,overrides}.yaml`` (and a sweep's ``multirun.yaml``)
    before the job starts; when an override names a credential-like key, this rewrites them
    with the value masked (moelora.utils.redaction). Without such an override it does nothing."""

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
    """At the end of a multirun, print one line per job of this sweep: status, method, seed,
    avg score.

    A job whose results.json says ``running`` is shown as ``running`` while another process
    holds its lock, and as ``stopped`` (killed or crashed; a rerun resumes it) otherwise; one
    stopped by SIGTERM or SIGINT says ``interrupted`` (moelora.harness.interrupt). A sweep
    stopped that way prints its summary as the process exits."""

    def __init__(self) -> None:
        self.sweep_id: str | None = None
        self._pending: DictConfig | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_id = uuid.uuid4().hex  # pickled with the launcher into remote jobs
        self._pending = config
        atexit.register(self._at_exit)  # SIGTERM / SIGINT: on_multirun_end never comes
        sigterm_raises()  # between jobs too: the process exits through Python, atexit runs

    def _at_exit(self) -> None:
        if self._pending is not None:
            self.on_multirun_end(self._pending)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.sweep_id is None or not is_main_rank():
            return
        job = config.hydra.job
        write_json(
            self._markers(config) / f"{job.num}.json",
            {"num": job.num, "run_dir": str(config.hydra.runtime.output_dir)},
        )

    def _markers(self, config: DictConfig) -> Path:
        return Path(config.hydra.sweep.dir) / MARKERS / str(self.sweep_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._pending = None
        if not is_main_rank():
            return
        root = Path(config.hydra.sweep.dir)
        rows = [self._row(Path(job["run_dir"])) for job in self._take_markers(config)]
        if not rows:
            print(f"[sweep] no job of this sweep started under {root}")
            return
        print(f"\n[sweep] {len(rows)} job(s) under {root}")
        for status, method, seed, avg, run_dir in rows:
            score = "" if avg is None else f"avg={avg:.4f}"
            where = run_dir.relative_to(root) if run_dir.is_relative_to(root) else run_dir
            print(f"  {status:<8} {method:<22} seed={seed!s:<4} {score:<12} {where}")
        count = Counter(r[0] for r in rows)
        failed = len(rows) - sum(
            count[s] for s in ("success", "running", "stopped", "interrupted", "no-result")
        )
        if count["running"]:
            print(
                f"[sweep] {count['running']} job(s) are running in another process; a rerun "
                "once they finish skips them"
            )
        if count["stopped"]:
            print(
                f"[sweep] {count['stopped']} job(s) stopped before finishing (killed or "
                "crashed); rerun the same command to resume them"
            )
        if count["interrupted"]:
            print(
                f"[sweep] {count['interrupted']} job(s) were interrupted (SIGTERM or SIGINT); "
                "rerun the same command to resume them"
            )
        if count["no-result"]:
            print(f"[sweep] {count['no-result']} job(s) wrote no results.json; see their run.log")
        if failed:
            print(f"[sweep] {failed} job(s) failed; see their results.json 'error'")

    def _take_markers(self, config: DictConfig) -> list[dict[str, Any]]:
        """The markers of this sweep's jobs, in job order; their folder is removed."""
        if self.sweep_id is None or not (markers := self._markers(config)).is_dir():
            return []
        jobs = sorted((read_json(p) for p in markers.glob("*.json")), key=lambda j: j["num"])
        shutil.rmtree(markers)
        with contextlib.suppress(OSError):  # other sweeps may still be running
            markers.parent.rmdir()
        return jobs

    @staticmethod
    def _row(run_dir: Path) -> tuple[str, Any, Any, float | None, Path]:
        path = run_dir / "results.json"
        if not path.is_file():
            return ("no-result", "?", "?", None, run_dir)
        try:
            r = read_json(path)
        except ValueError:
            return ("unreadable", "?", "?", None, run_dir)
        status = r.get("status", "?")
        if status == "running" and not job_is_running(run_dir):
            status = "stopped"
        return (
            status,
            r.get("method", "?"),
            r.get("seed", "?"),
            (r.get("scores") or {}).get("avg"),
            run_dir,
        )
