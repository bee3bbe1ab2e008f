"""Experiment loggers: wandb (default), csv, none. All share ``log``, ``summary``, ``finish``.

wandb runs offline unless the user configured it: ``WANDB_MODE`` in the environment wins,
else an API key (``WANDB_API_KEY`` or a ``wandb login``) means online, else offline. The key
is read by wandb itself from the environment; it never enters configs or logs. The wandb
run id is kept in the run directory so a resumed job continues the same wandb run.
"""

from __future__ import annotations

import csv
import os
import uuid
from pathlib import Path
from typing import Any


class NoneLogger:
    """Logs nothing. All loggers take the same keyword arguments."""

    def __init__(self, run_dir: Path | None = None, *, group: str = "", name: str = "",
                 job_type: str = "", run_config: dict[str, Any] | None = None) -> None:
        self.run_dir = run_dir

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class CSVLogger(NoneLogger):
    """Appends ``step,key,value`` rows to ``<run_dir>/metrics.csv``."""

    def __init__(self, run_dir: Path, *, group: str = "", name: str = "", job_type: str = "",
                 run_config: dict[str, Any] | None = None) -> None:
        self.path = Path(run_dir) / "metrics.csv"

    def _write(self, rows: list[tuple[Any, str, Any]]) -> None:
        new = not self.path.exists()
        with self.path.open("a", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "key", "value"])
            w.writerows(rows)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._write([(step, k, v) for k, v in sorted(metrics.items())])

    def summary(self, values: dict[str, Any]) -> None:
        self._write([("summary", k, v) for k, v in sorted(values.items())
                     if isinstance(v, int | float) or v is None])


def _wandb_mode(configured: str | None) -> str:
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if configured and configured != "auto":
        return configured
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    netrc = Path.home() / ".netrc"
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return "online"
    return "offline"


class WandbLogger(NoneLogger):
    def __init__(self, run_dir: Path, *, project: str, entity: str | None, group: str, name: str,
                 job_type: str, run_config: dict[str, Any], mode: str | None = "auto",
                 tags: list[str] | None = None) -> None:
        import wandb

        id_file = Path(run_dir) / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        self._run = wandb.init(
            project=project, entity=entity, group=group, name=name, job_type=job_type,
            config=run_config, dir=str(run_dir), id=run_id, resume="allow",
            mode=_wandb_mode(mode), tags=tags or [], reinit="finish_previous",
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._run.log(metrics, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            self._run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        self._run.finish(exit_code=exit_code)
