"""Integrity on disk: ``manifest.json``, the SHA-256 and size of every file a run wrote.

A finished run (moelora.harness.runner) and every training checkpoint
(moelora.engine.checkpoint) write a manifest LAST and atomically: relative path →
``{"sha256", "bytes"}`` of the adapter, checkpoints, predictions and ``results.json``.
A file cut short, overwritten or removed after that no longer verifies, and whatever reads
a run (the skip decision, resume, ``load_run``, ``predict``, ``export``, ``make report``)
refuses it, naming the file and the fix.

A folder without a manifest was written before manifests existed: callers accept it as a
*legacy* run with a printed note. A manifest that does not verify is never accepted.
Files are hashed in 1 MiB chunks (moelora.utils.io.sha256_file), so a big adapter costs
one read, not its size in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from moelora.utils.io import LOCK_NAME, read_json, sha256_file, write_json

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
# What a run folder holds besides its outputs: logs that grow after the run, Hydra's and the
# loggers' records, results kept from earlier attempts.
SKIP_NAMES = {MANIFEST_NAME, LOCK_NAME, "run.log", "wandb_id.txt", "metrics.csv"}
SKIP_DIRS = {".hydra", "wandb", ".sweeps", ".submitit", "__pycache__"}


class ManifestError(ValueError):
    """A file of a run does not match its manifest; the message names the file and the fix."""


def _listed(folder: Path) -> list[Path]:
    out = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if (
            not path.is_file()
            or path.name in SKIP_NAMES
            or path.name.startswith(".")
            or (path.name.startswith("results.") and path.name.endswith(".previous.json"))
            or SKIP_DIRS & set(rel.parts[:-1])
        ):
            continue
        out.append(path)
    return sorted(out)


def write_manifest(folder: str | os.PathLike, *, files: Iterable[Path] | None = None) -> Path:
    """Hash every output file under ``folder`` (or only ``files``) into ``folder/manifest.json``,
    written atomically. Call it last, once nothing else is written there."""
    folder = Path(folder)
    entries = {}
    for path in sorted(files) if files is not None else _listed(folder):
        rel = path.relative_to(folder).as_posix()
        entries[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    path = folder / MANIFEST_NAME
    write_json(path, {"version": MANIFEST_VERSION, "files": entries})
    return path


def read_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The folder's manifest, or None when it has none (a legacy run)."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = read_json(path)
    except ValueError as e:
        raise ManifestError(f"{e}; the manifest is damaged: {_FIX}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ManifestError(f"{path}: not a manifest (no 'files' table); {_FIX}")
    return manifest


_FIX = (
    "the run's files were changed or damaged after it finished: restore them from a copy, "
    "or rerun the job with overwrite=true"
)


def verify_manifest(
    folder: str | os.PathLike,
    *,
    only: Iterable[str] | None = None,
    fix: str = _FIX,
) -> bool:
    """Check the files of ``folder`` against its manifest.

    Args:
        folder: a run folder or a checkpoint folder.
        only: relative paths to check (default: every file listed); one that the manifest
            does not list is not checked.
        fix: the advice ending each error.

    Returns:
        True when a manifest verifies, False when the folder has none (a legacy run: the
        caller decides whether to accept it, and says so).

    Raises:
        ManifestError: a listed file is missing, has another size or another SHA-256; the
            message names the file, what differs and ``fix``.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        return False
    files: dict[str, Any] = manifest["files"]
    names = list(files) if only is None else [n for n in only if n in files]
    for name in names:
        want = files[name]
        path = folder / name
        if not path.is_file():
            raise ManifestError(f"{path}: listed in {folder / MANIFEST_NAME} but missing; {fix}")
        size = path.stat().st_size
        if size != want.get("bytes"):
            raise ManifestError(
                f"{path}: {size} bytes, but {want.get('bytes')} when the run wrote it "
                f"({folder / MANIFEST_NAME}); {fix}"
            )
        digest = sha256_file(path)
        if digest != want.get("sha256"):
            raise ManifestError(
                f"{path}: its SHA-256 {digest[:12]}… differs from {str(want.get('sha256'))[:12]}… "
                f"recorded when the run wrote it ({folder / MANIFEST_NAME}); {fix}"
            )
    return True


def remove_manifest(folder: str | os.PathLike) -> None:
    """Drop the manifest of a folder that is about to change (a rerun, a resume)."""
    path = Path(folder) / MANIFEST_NAME
    if path.is_file():
        path.unlink()
