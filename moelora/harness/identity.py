"""A job's identity: everything that changes its results, in one hash.

``job_identity(config, inputs)`` hashes

* the resolved config without the keys that never change what a job computes
  (``IGNORED_KEYS``: where results go, logging, threads, resume flags; ``NOT_COMPUTED``:
  whether a missing input may be built), with paths under ``paths.artifacts_dir`` /
  ``paths.output_dir`` made relative to those folders and ``model.path`` / ``data.root``
  absolute: the method, trainer, decoding, seed, ... (:func:`job_fingerprint`);
* the fingerprints of the inputs (moelora.harness.inputs): the model folder (config, tokenizer,
  weights) and the split files read;
* the world size (``accelerator.num_processes``).

Two hashes are kept: ``job`` (all of it) and ``trained`` (without ``INFERENCE_KEYS``: equal
values mean equal trained weights). ``results.json`` records them with the inputs. The skip
decision (moelora.harness.runner) and reuse (moelora.harness.reuse) both compare identities, so a finished
run is never taken for a job on another model, other data or another world size.

A run folder whose recorded identity differs from the job's is never skipped and never
overwritten: :func:`check_previous` raises :class:`IdentityMismatchError` naming what differs
(config keys, model files, split files, world size) and the fix.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from moelora.utils.manifest import MANIFEST_NAME, ManifestError, verify_manifest
from moelora.utils.names import identity_name

IDENTITY_VERSION = 1
# Top-level config keys that do not change what a job computes.
# ``lr_protocol``: its effect on this job is written into ``trainer.lr_scale`` (moelora.harness.lr_protocol).
IGNORED_KEYS = (
    "experiment_name",
    "threads",
    "overwrite",
    "resume",
    "progress",
    "reuse",
    "logger",
    "paths",
    "lr_protocol",
)
# Dotted keys that do not either: whether a missing input may be built (its content counts).
NOT_COMPUTED = ("data.build", "model.build", "model.max_lr")
# Keys that change only how a trained model is evaluated, not the trained weights.
INFERENCE_KEYS = ("decoding", "scorer", "method.infer", "trainer.eval")
# Keys added after identity version 1, with the value that computes what a job computed before
# the key existed: dropped at that value, so that earlier finished jobs keep their identity.
ADDED_KEYS = {
    "trainer.loss_weighting": "token",
    "trainer.dropout_masks": "torch",
    "trainer.effective_batch": None,
    "model.attn_implementation": None,  # null: transformers' default, what ran before the key
    "trainer.compile": "off",
    "model.quantization": None,  # null: the unquantized base, what ran before the key
}
# Inputs given as paths: compared as absolute paths (their content is fingerprinted as well).
PATH_KEYS = ("model.path", "data.root")
FIX = (
    "Nothing in it was changed. To recompute it there, add overwrite=true (its results are "
    "kept as results.<time>.previous.json); to keep both, give this job another "
    "paths.output_dir"
)


class IdentityMismatchError(RuntimeError):
    """The run folder holds another job's results or checkpoints."""


class DamagedRunError(IdentityMismatchError):
    """A finished run's files no longer match its manifest (moelora.utils.manifest)."""


def _normalise(value: Any, prefixes: list[tuple[str, str]]) -> Any:
    if isinstance(value, dict):
        return {str(k): _normalise(v, prefixes) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [_normalise(v, prefixes) for v in value]
    if isinstance(value, str):
        value = identity_name(value)
        for prefix, tag in prefixes:
            if value == prefix or value.startswith(prefix + "/"):
                return tag + value[len(prefix) :]
    return value


def _get(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for key in dotted.split("."):
        node = node.get(key) if isinstance(node, dict) else None
    return node


def _drop(config: dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node = _get(config, ".".join(parents)) if parents else config
    if isinstance(node, dict):
        node.pop(leaf, None)


def comparable_config(config: dict[str, Any], *, training_only: bool = False) -> dict[str, Any]:
    """The resolved config as identities compare it (see the module docstring)."""
    paths = config.get("paths") or {}
    prefixes = []
    for key in ("output_dir", "artifacts_dir"):
        if paths.get(key):
            written = str(paths[key]).rstrip("/")
            prefixes += [(written, f"<{key}>"), (os.path.abspath(written), f"<{key}>")]
    prefixes.sort(key=lambda p: -len(p[0]))
    kept = copy.deepcopy({k: v for k, v in config.items() if k not in IGNORED_KEYS})
    for dotted in PATH_KEYS:
        *parents, leaf = dotted.split(".")
        node = _get(kept, ".".join(parents))
        if isinstance(node, dict) and isinstance(node.get(leaf), str):
            node[leaf] = os.path.abspath(node[leaf])
    for dotted, before in ADDED_KEYS.items():
        if _get(kept, dotted) == before:
            _drop(kept, dotted)
    for dotted in NOT_COMPUTED + (INFERENCE_KEYS if training_only else ()):
        _drop(kept, dotted)
    return _normalise(kept, prefixes)


def job_fingerprint(config: dict[str, Any], *, training_only: bool = False) -> str:
    """SHA-256 of :func:`comparable_config`: the config part of the identity."""
    text = json.dumps(
        comparable_config(config, training_only=training_only), sort_keys=True, default=str
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def job_identity(config: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    """``{"version", "job", "trained"}``: hashes of the config part plus the model and data
    fingerprints and the world size (``inputs`` from moelora.harness.inputs.describe_inputs)."""
    parts = [
        str((inputs.get("model") or {}).get("fingerprint")),
        str((inputs.get("data") or {}).get("fingerprint")),
        str(inputs.get("world_size")),
    ]

    def digest(config_part: str) -> str:
        text = json.dumps([IDENTITY_VERSION, config_part, *parts])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    return {
        "version": IDENTITY_VERSION,
        "job": digest(job_fingerprint(config)),
        "trained": digest(job_fingerprint(config, training_only=True)),
    }


# ---- what differs ------------------------------------------------------------------------
def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict) and (node or not prefix):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str) if value is not _NONE else "(absent)"
    return text if len(text) <= 200 else text[:197] + "..."


_NONE = object()


def differences(
    recorded: dict[str, Any],
    config: dict[str, Any],
    inputs: dict[str, Any],
    *,
    training_only: bool = False,
    limit: int = 8,
) -> list[str]:
    """Human-readable differences between a recorded ``results.json`` and this job."""
    out = []
    if not isinstance(recorded.get("config"), dict):
        out.append("config: not recorded")
    else:
        a = _flat(comparable_config(recorded["config"], training_only=training_only))
        b = _flat(comparable_config(config, training_only=training_only))
        for key in sorted(a.keys() | b.keys()):
            if a.get(key, _NONE) != b.get(key, _NONE):
                out.append(f"{key}: {_short(a.get(key, _NONE))} → {_short(b.get(key, _NONE))}")
    old = recorded.get("inputs")
    if old is None:
        out.append("inputs: not recorded (a run from before input fingerprints)")
        return out[:limit]
    om, nm = old.get("model") or {}, inputs.get("model") or {}
    if om.get("fingerprint") != nm.get("fingerprint"):
        changed = sorted(
            n
            for n in (om.get("files") or {}).keys() | (nm.get("files") or {}).keys()
            if (om.get("files") or {}).get(n) != (nm.get("files") or {}).get(n)
        )
        what = (
            "the folder is missing now"
            if nm.get("missing")
            else f"files that differ: {', '.join(changed[:6])}"
            if changed
            else "its content"
        )
        out.append(f"model at {nm.get('path')}: {what}")
    od, nd = (
        (old.get("data") or {}).get("files") or {},
        (inputs.get("data") or {}).get("files") or {},
    )
    for split in sorted(od.keys() | nd.keys()):
        x, y = od.get(split) or {}, nd.get(split) or {}
        if x.get("sha256") != y.get("sha256"):
            out.append(
                f"data {split} ({y.get('file') or x.get('file')}): sha256 "
                f"{str(x.get('sha256'))[:12]}… → {str(y.get('sha256'))[:12]}…"
            )
    if old.get("world_size") != inputs.get("world_size"):
        out.append(f"world size (processes): {old.get('world_size')} → {inputs.get('world_size')}")
    return out[:limit]


def _has_checkpoints(run_dir: Path) -> bool:
    """Whether a resumable checkpoint (``checkpoints/last.json`` naming a saved step, the
    method's own checkpoint folders included) lies anywhere in ``run_dir``."""
    from moelora.engine.checkpoint import last_checkpoint

    return any(
        p.parent.name == "checkpoints" and last_checkpoint(p.parent) is not None
        for p in Path(run_dir).rglob("last.json")
    )


DAMAGED_FIX = (
    "overwrite=true recomputes it (the old results.json is kept as results.<time>.previous.json)"
)


def check_outputs(previous: dict[str, Any], run_dir: Path) -> bool:
    """Whether a finished run's files still verify (moelora.utils.manifest): True when its
    manifest verifies, False for a run recorded before manifests (none is named in its
    results.json nor present).

    Raises:
        IdentityMismatchError: a file was cut short, changed or removed, or the manifest its
            results.json names is missing; the message names the file and the fix.
    """
    try:
        if verify_manifest(run_dir, fix=DAMAGED_FIX):
            return True
    except ManifestError as e:
        raise DamagedRunError(
            f"{run_dir} holds a finished run whose files are damaged: {e}"
        ) from None
    if previous.get("manifest"):
        raise DamagedRunError(
            f"{run_dir / MANIFEST_NAME}: missing, but results.json says the run wrote one, so "
            f"its files cannot be verified; {DAMAGED_FIX}"
        )
    return False


def check_previous(
    previous: dict[str, Any] | None,
    run_dir: Path,
    *,
    config: dict[str, Any],
    inputs: dict[str, Any],
    identity: dict[str, Any],
    resume: bool = True,
) -> str:
    """What a folder's earlier ``results.json`` means for this job (``overwrite=true`` does not
    ask: it moves the results away).

    Returns ``"new"`` (nothing recorded, an unfinished attempt without checkpoints, or
    ``resume`` false: its checkpoints are deleted), ``"done"``
    (a successful run of this job: skip it), ``"legacy-done"`` (a successful run recorded
    before identities whose config equals this job's: skipped, its inputs unverified) or
    ``"resume"`` (an unfinished attempt of this job, or of one that trained the same weights).

    Raises:
        IdentityMismatchError: a successful run of another job, or checkpoints of another
            training; the message names what differs and the fix.
    """
    if previous is None:
        return "new"
    status = previous.get("status")
    old = previous.get("identity") if isinstance(previous.get("identity"), dict) else None
    if old is not None and old.get("version") == IDENTITY_VERSION:
        same_job, same_training = (
            old.get("job") == identity["job"],
            old.get("trained") == identity["trained"],
        )
    else:  # recorded before identities: its config is all there is to compare
        recorded = previous.get("config") or {}
        same_job = job_fingerprint(recorded) == job_fingerprint(config) and old is None
        same_training = job_fingerprint(recorded, training_only=True) == job_fingerprint(
            config, training_only=True
        )
    if status == "success":
        if same_job:
            check_outputs(previous, run_dir)
            return "done" if old is not None else "legacy-done"
        what = differences(previous, config, inputs)
        raise IdentityMismatchError(
            f"{run_dir} holds a finished run of another job; it differs in:\n"
            + "".join(f"  - {d}\n" for d in what or ["its identity hash"])
            + FIX
        )
    if not resume or not _has_checkpoints(run_dir):
        return "new"
    if same_training:
        return "resume"
    what = differences(previous, config, inputs, training_only=True)
    raise IdentityMismatchError(
        f"{run_dir} holds checkpoints of an unfinished run (status: {status}) that trained "
        f"other weights; resuming from them would mix two jobs. It differs in:\n"
        + "".join(f"  - {d}\n" for d in what or ["its identity hash"])
        + FIX
        + "; resume=never starts over there"
    )
