"""Experiment loggers: wandb (default), csv, none. All share ``log``, ``summary``, ``finish``.

wandb runs offline unless the user configured it: ``WANDB_MODE`` in the environment wins,
else an API key (``WANDB_API_KEY`` or a ``wandb login``) means online, else offline. The key
is read by wandb itself from the environment; it never enters configs or logs. The wandb
run id is kept in the run directory so a resumed job continues the same wandb run.
"""

from __future__ import annotations

import csv
import io
import os
import uuid
from pathlib import Path
from typing import Any


class NoneLogger:
    """Logs nothing. All loggers take the same keyword arguments."""

    def __init__(
        self,
        run_dir: Path | None = None,
        *,
        group: str = "",
        name: str = "",
        job_type: str = "",
        run_config: dict[str, Any] | None = None,
    ) -> None:
        self.run_dir = run_dir

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def summary(self, values: dict[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class CSVLogger(NoneLogger):
    """Appends ``step,key,value`` rows to ``<run_dir>/metrics.csv``.

    A resumed job logs again the steps after its last checkpoint: the first time this logger
    writes a key, the rows of that key at this step and later (and an old ``summary`` row of
    it) are dropped first, so every (step, key) appears once."""

    def __init__(
        self,
        run_dir: Path,
        *,
        group: str = "",
        name: str = "",
        job_type: str = "",
        run_config: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(run_dir) / "metrics.csv"
        self._written: set[str] = set()

    def _drop_stale(self, rows: list[tuple[Any, str, Any]]) -> None:
        fresh = {key: step for step, key, _ in rows if key not in self._written}
        self._written |= fresh.keys()
        if not fresh or not self.path.exists():
            return
        with self.path.open(newline="", encoding="utf-8") as f:
            old = list(csv.reader(f))

        def stale(row: list[str]) -> bool:
            if len(row) < 2 or row[1] not in fresh:
                return False
            new_step, step = fresh[row[1]], row[0]
            if new_step == "summary" or step == "summary":
                return new_step == step
            return step.lstrip("-").isdigit() and int(step) >= int(new_step)

        kept = [row for i, row in enumerate(old) if i == 0 or not stale(row)]
        if len(kept) != len(old):
            from moelora.utils.io import write_text

            buffer = io.StringIO()
            csv.writer(buffer).writerows(kept)
            write_text(self.path, buffer.getvalue())

    def _write(self, rows: list[tuple[Any, str, Any]]) -> None:
        self._drop_stale(rows)
        new = not self.path.exists()
        with self.path.open("a", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["step", "key", "value"])
            w.writerows(rows)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._write([(step, k, v) for k, v in sorted(metrics.items())])

    def summary(self, values: dict[str, Any]) -> None:
        self._write(
            [
                ("summary", k, v)
                for k, v in sorted(values.items())
                if isinstance(v, int | float) or v is None
            ]
        )


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
    def __init__(
        self,
        run_dir: Path,
        *,
        project: str,
        entity: str | None,
        group: str,
        name: str,
        job_type: str,
        run_config: dict[str, Any],
        mode: str | None = "auto",
        tags: list[str] | None = None,
    ) -> None:
        import wandb

        id_file = Path(run_dir) / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
        id_file.write_text(run_id)
        self._run = wandb.init(
            project=project,
            entity=entity,
            group=group,
            name=name,
            job_type=job_type,
            config=run_config,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
            mode=_wandb_mode(mode),
            tags=tags or [],
            reinit="finish_previous",
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self._run.log(metrics, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        for k, v in values.items():
            self._run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        self._run.finish(exit_code=exit_code)
