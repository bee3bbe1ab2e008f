"""Small, careful file I/O: JSON Lines with line-numbered errors, atomic writes, job locks,
strict JSON (no NaN or Infinity), streamed SHA-256 and paths that stay inside their folder."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: jobs are not locked
    fcntl = None

LOCK_NAME = ".job.lock"


class DataFormatError(ValueError):
    """A data file is malformed. The message names the file, the line and the fix."""


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSON Lines file into a list of dicts.

    Blank lines are skipped. A line that is not UTF-8 or not a JSON object raises
    ``DataFormatError`` naming the file and the 1-based line number.
    """
    return [record for _, record in read_jsonl_lines(path)]


def read_jsonl_lines(path: str | os.PathLike) -> list[tuple[int, dict[str, Any]]]:
    """:func:`read_jsonl`, each record with its 1-based line number in the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    records: list[tuple[int, dict[str, Any]]] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataFormatError(
                    f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start + 1} of the "
                    f"line, {raw[max(0, e.start - 8) : e.start + 8]!r}); save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(
                    f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno}); "
                    "each line must be one JSON object"
                ) from None
            if not isinstance(obj, dict):
                raise DataFormatError(
                    f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}"
                )
            records.append((lineno, obj))
    return records


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file (UTF-8) atomically."""
    _atomic_write_text(Path(path), text)


class NonFiniteValueError(ValueError):
    """A document to be written holds NaN or Infinity, which JSON cannot represent."""


def non_finite_keys(obj: Any, where: str = "") -> list[str]:
    """The dotted keys (``scores.avg``, ``train.losses[3][1]``) of NaN or infinite floats."""
    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [where or "(the document)"]
    if isinstance(obj, dict):
        return [
            k
            for key, v in obj.items()
            for k in non_finite_keys(v, f"{where}.{key}" if where else str(key))
        ]
    if isinstance(obj, (list, tuple)):
        return [k for i, v in enumerate(obj) for k in non_finite_keys(v, f"{where}[{i}]")]
    return []


def _dumps(path: Path, obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that refuses NaN and Infinity (invalid JSON) with the keys that hold them."""
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False, **kwargs)
    except ValueError:
        bad = non_finite_keys(obj)
        if not bad:
            raise
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise NonFiniteValueError(
            f"{path}: not written: {', '.join(bad[:5])}{more} is NaN or infinite, which JSON "
            "cannot hold and no result may carry; find where the value became non-finite (a "
            "diverged loss: lower trainer.lr or train in float32)"
        ) from None


def write_jsonl(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> None:
    """Write records as JSON Lines (UTF-8, no ASCII escaping), atomically; NaN and Infinity
    are refused (:class:`NonFiniteValueError`)."""
    path = Path(path)
    text = "".join(_dumps(path, r) + "\n" for r in records)
    _atomic_write_text(path, text)


def write_json(path: str | os.PathLike, obj: Any, *, indent: int = 2) -> None:
    """Write one JSON document atomically (temp file + fsync + rename). NaN and Infinity are
    refused with the keys that hold them (:class:`NonFiniteValueError`): ``json`` would write
    the literal ``NaN``, which is not JSON."""
    path = Path(path)
    _atomic_write_text(path, _dumps(path, obj, indent=indent) + "\n")


def sha256_file(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (a multi-GB checkpoint never sits in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class UnsafePathError(ValueError):
    """A path built from a name (a task, a file name) would leave its folder."""


def inside(root: str | os.PathLike, *parts: str) -> Path:
    """``root / parts...``, refused unless it stays inside ``root`` (after resolving ``..`` and
    symbolic links): an absolute part, ``..`` or a separator hidden in a name would write or
    delete elsewhere.

    Raises:
        UnsafePathError: naming the parts, the folder and the fix.
    """
    root = Path(root)
    path = root.joinpath(*parts)
    base = root.resolve()
    target = path.resolve()
    if target != base and base not in target.parents:
        raise UnsafePathError(
            f"{'/'.join(map(str, parts))!r} would leave {root} (it resolves to {target}); a "
            "name used as a path may not be absolute nor contain '..' or a path separator: "
            "rename it (task names: data.tasks and the data's task_dataset)"
        )
    return path


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None


def remove_stray_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files a killed writer left under ``folder`` (``.<name>.*.tmp`` from
    the atomic writes above, ``.adapter_model.safetensors.tmp``). Call it only while holding
    the folder's :func:`job_lock`. Returns the removed paths."""
    removed = []
    for path in sorted(Path(folder).rglob(".*.tmp")):
        if path.is_file() and "wandb" not in path.relative_to(folder).parts:
            path.unlink()
            removed.append(path)
    return removed


class JobBusyError(RuntimeError):
    """Another process holds the run folder's lock: the same job is already running."""


@contextlib.contextmanager
def job_lock(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` for one job (two sweeps that share a job, or the
    same command started twice, would otherwise write one folder at once).

    An advisory ``flock`` on ``run_dir/.job.lock``: the operating system releases it when the
    process ends, killed or not, so a crashed job never leaves a stale lock. Raises
    ``JobBusyError`` naming the folder and the holder's pid when the lock is taken."""
    path = Path(run_dir) / LOCK_NAME
    if fcntl is None:  # pragma: no cover
        yield
        return
    with open(path, "a+", encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise JobBusyError(
                f"{path.parent}: another process (pid {holder}) is running this job; "
                "wait for it to finish (it is then skipped) or stop that process"
            ) from None
        try:
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def job_is_running(run_dir: str | os.PathLike) -> bool:
    """Whether a process holds ``run_dir``'s job lock right now (see :func:`job_lock`).

    Read-only: the lock file is neither created nor written. A ``status: running`` results.json
    whose lock is free belongs to a job that was killed or crashed; rerunning resumes it."""
    path = Path(run_dir) / LOCK_NAME
    if fcntl is None or not path.is_file():
        return False
    with open(path, encoding="utf-8") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return False
