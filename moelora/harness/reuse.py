"""Reuse a finished identical job instead of training it again.

Several paper artefacts share jobs: Fig. 4a's N = 8 point, Fig. 4b's (r = 16, N = 8) point and
Fig. 6 are Table 2's MOELoRA (D) runs, and a plain ``python run.py method=... seed=...`` is the
same job as the matching cell of ``experiment=table2``. Each experiment keeps its own run
folders (the analysis reads them per experiment), so before a job trains, the runner looks
under ``paths.output_dir`` for a successful run with the same *job identity*
(moelora.harness.identity: the config part plus the model and data fingerprints and the world size)
and, when one exists, adopts it: its files are linked (or copied) into the new run folder and
its ``results.json`` is rewritten for the new experiment with ``reused_from`` naming the
source. Scores, timings and provenance stay those of the source job, which is what ran.

Runs recorded before identities existed are never adopted (their inputs are unknown). A
source run on another device type (cpu vs cuda) is never adopted. ``reuse=false`` (or
``overwrite=true``) always trains.

When no identical job exists but one differs only in how it is *evaluated*
(``INFERENCE_KEYS``: Fig. 5 runs each method merged and unmerged), its final training checkpoint
is linked into the new run's ``checkpoints/``: the trainer resumes at the last step, trains
nothing, and the job evaluates its own way. ``results.json`` then names the source in
``trained_by``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from moelora.harness.identity import IDENTITY_VERSION, IGNORED_KEYS, INFERENCE_KEYS, job_fingerprint
from moelora.harness.results import RESULTS_NAME, read_results, write_results
from moelora.utils.io import LOCK_NAME, write_json
from moelora.utils.manifest import MANIFEST_NAME, ManifestError, verify_manifest, write_manifest

__all__ = [
    "IGNORED_KEYS",
    "INFERENCE_KEYS",
    "adopt",
    "final_checkpoint",
    "find_reusable",
    "find_reuse",
    "finished_runs",
    "job_fingerprint",
    "seed_checkpoint",
]

# Files of a run folder that belong to that run only (logs, resumable state, Hydra's record).
PRIVATE = {
    RESULTS_NAME,
    "config.yaml",
    "run.log",
    "wandb_id.txt",
    "checkpoints",
    "wandb",
    ".hydra",
    LOCK_NAME,
    MANIFEST_NAME,
}


def _device_type(device: str | None) -> str:
    return str(device or "cpu").split(":")[0]


def finished_runs(output_dir: Path):
    """(folder, results) of every successful run under ``output_dir`` that saved its config."""
    for path in sorted(Path(output_dir).rglob(RESULTS_NAME)):
        res = read_results(path.parent)
        if res and res.get("status") == "success" and isinstance(res.get("config"), dict):
            yield path.parent, res


def find_reuse(
    identity: dict[str, Any], run_dir: Path, output_dir: Path, device: str
) -> tuple[Path | None, Path | None]:
    """One pass over the other finished runs on this device type under ``output_dir``.

    Args:
        identity: this job's identity (moelora.harness.identity.job_identity).

    Returns (source, checkpoint): ``source`` is the first run of the same job (adopt it); when
    there is none, ``checkpoint`` is the final checkpoint of a run that trained the same weights
    (only ``INFERENCE_KEYS`` differ), or None."""
    run_dir = Path(run_dir).resolve()
    trained = None
    for source, res in finished_runs(output_dir):
        theirs = res.get("identity")
        if (
            source.resolve() == run_dir
            or not isinstance(theirs, dict)
            or theirs.get("version") != IDENTITY_VERSION
        ):
            continue
        if _device_type((res.get("provenance") or {}).get("device")) != _device_type(device):
            continue
        if theirs.get("job") == identity["job"] and _verifies(source):
            return source, None
        if trained is None and theirs.get("trained") == identity["trained"]:
            trained = final_checkpoint(source, res)
    return None, trained


def find_reusable(
    identity: dict[str, Any], run_dir: Path, output_dir: Path, device: str
) -> Path | None:
    """The first successful run under ``output_dir`` with this job's identity, or None."""
    return find_reuse(identity, run_dir, output_dir, device)[0]


def _verifies(source: Path) -> bool:
    """Whether a run's files match its manifest (a run without one is taken as it is)."""
    try:
        verify_manifest(source)
    except ManifestError as e:
        print(f"[reuse] not reused: {e}")
        return False
    return True


def final_checkpoint(run_dir: Path, results: dict[str, Any]) -> Path | None:
    """The checkpoint a run saved at its last training step (``checkpoints/last.json``), or None."""
    pointer = Path(run_dir) / "checkpoints" / "last.json"
    steps = (results.get("train") or {}).get("steps")
    if not pointer.is_file() or steps is None:
        return None
    last = json.loads(pointer.read_text(encoding="utf-8"))
    path = pointer.parent / str(last.get("path"))
    return path if last.get("step") == steps and path.is_dir() else None


def seed_checkpoint(ckpt: Path, run_dir: Path) -> bool:
    """Link ``ckpt`` into ``run_dir/checkpoints`` as its last checkpoint, unless the run already
    has checkpoints of its own (a resumed run keeps them). True when linked."""
    target = Path(run_dir) / "checkpoints"
    if (target / "last.json").exists():
        return False
    target.mkdir(parents=True, exist_ok=True)
    if not (target / ckpt.name).exists():
        shutil.copytree(ckpt, target / ckpt.name, copy_function=_link_or_copy)
    write_json(target / "last.json", json.loads((ckpt.parent / "last.json").read_text("utf-8")))
    return True


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def adopt(source: Path, run_dir: Path, updates: dict[str, Any]) -> dict[str, Any]:
    """Link ``source``'s outputs into ``run_dir`` and write its results there with ``updates``.

    ``updates`` carries what belongs to the new job (experiment, run_dir, overrides, config).
    ``reused_from`` names the run that actually computed the results (the original one when
    ``source`` was itself adopted). Returns the new results."""
    source, run_dir = Path(source), Path(run_dir)
    for item in source.iterdir():
        if item.name in PRIVATE or item.name.endswith(".previous.json"):
            continue
        target = run_dir / item.name
        if target.exists():
            continue
        if item.is_dir():
            shutil.copytree(item, target, copy_function=_link_or_copy)
        else:
            _link_or_copy(str(item), str(target))
    results = read_results(source) or {}
    origin = results.get("reused_from") or {
        "run_dir": str(source),
        "experiment": results.get("experiment"),
    }
    adopted = {**results, **updates, "reused_from": origin}
    write_results(run_dir, adopted)
    if results.get("manifest"):
        write_manifest(run_dir)  # the adopted files, verified by find_reuse, and these results
    return adopted
