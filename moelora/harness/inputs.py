"""A job's inputs: where its base model and data are, building the embedded ones, and what they
contain (the fingerprints that enter the job identity, moelora.harness.identity).

**Building.** The embedded benchmark (MedSynth-8) and the tiny base are built on first use, but
only where the config's defaults point: ``data.root`` equal to ``data.prepare.out_dir``
(``<artifacts>/medsynth``), ``model.path`` equal to ``model.prepare.out_dir``. A path the user
typed that does not exist is an error naming the key, unless the user asks for a build there
(``data.build=true`` / ``model.build=true``). Real data and models (``prepare: null``) are never
built.

**Fingerprints.** Data: the SHA-256 of every split file the job reads. Model: every file at the
top of ``model.path`` (config, tokenizer files, weights, modeling code; hidden files,
``*.md`` and build records such as ``build_stamp.json`` left out): files up to 32 MiB are hashed whole; larger ones (weights) by their size,
their first MiB and 64 evenly spaced 64 KiB blocks, which reads about 5 MiB per shard of a 6B
model and still changes with any other checkpoint of the same architecture.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

FULL_HASH_BYTES = 32 << 20
# Files of a model folder that record how it was made and are not read when it is loaded (the
# tiny base's build_stamp.json holds its training time): left out of the fingerprint.
MODEL_RECORDS = {"build_stamp.json", "trainer_state.json", "training_args.bin"}
HEAD_BYTES = 1 << 20
BLOCK_BYTES = 64 << 10
BLOCKS = 64


class InputPathError(FileNotFoundError):
    """A data or model path the user typed does not exist; the message names the key and fix."""


def _same_path(a: Any, b: Any) -> bool:
    return os.path.abspath(str(a)) == os.path.abspath(str(b))


def _data_ready(d: DictConfig) -> list[str]:
    """The split files missing under ``data.root``."""
    return [str(f) for f in d.files.values() if not (Path(d.root) / str(f)).is_file()]


def _model_ready(m: DictConfig) -> bool:
    return (Path(m.path) / "config.json").is_file()


def _build_where(node: DictConfig, key: str, group: str) -> str | None:
    """Where to build a missing input: its configured path when that is the default location
    or ``<group>.build=true``; None when there is nothing to build; raises otherwise."""
    prepare = node.get("prepare")
    path = node[key]
    if prepare is None:
        return None
    default = prepare.get("out_dir")
    if default is not None and _same_path(path, default) or node.get("build") is True:
        return str(path)
    raise InputPathError(
        f"{group}.{key}={path} does not exist (or is incomplete), and it is not where this "
        f"config builds its {group} ({default}). Fix {group}.{key}, or add {group}.build=true "
        f"to build the embedded {group} at {path}"
    )


def check_input_paths(cfg: DictConfig) -> None:
    """Before anything runs: every input exists or will be built where the rules allow.

    A model without a builder (``model=hf``) is checked when it is loaded (methods that call an
    HTTP endpoint never load it)."""
    d, m = cfg.data, cfg.model
    missing = _data_ready(d)
    if missing and _build_where(d, "root", "data") is None:
        raise InputPathError(
            f"data.root={d.root}: {', '.join(missing)} not found there. Point data.root at the "
            "prepared data folder (PromptCBLUE: python -m moelora.data.promptcblue --src "
            "<PromptCBLUE> --out <dir>, then data.root=<dir>)"
        )
    if not _model_ready(m):
        _build_where(m, "path", "model")


def prepare_inputs(cfg: DictConfig) -> None:
    """Build the embedded benchmark and base model when missing (both cached); see the module
    docstring for where. Call :func:`check_input_paths` first."""
    d, m = cfg.data, cfg.model
    if _data_ready(d) and (where := _build_where(d, "root", "data")) is not None:
        instantiate(d.prepare, out_dir=where)
    if not _model_ready(m) and (where := _build_where(m, "path", "model")) is not None:
        instantiate(m.prepare, out_dir=where)


def file_digest(path: str | os.PathLike) -> str:
    """``sha256:<hex>`` of a whole file up to 32 MiB; ``sampled:<hex>`` over the size, the
    first MiB and 64 evenly spaced 64 KiB blocks of a larger one."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= FULL_HASH_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return f"sha256:{h.hexdigest()}"
        h.update(f"{size};".encode())
        h.update(f.read(HEAD_BYTES))
        for i in range(BLOCKS):
            f.seek(HEAD_BYTES + i * (size - HEAD_BYTES - BLOCK_BYTES) // (BLOCKS - 1))
            h.update(f.read(BLOCK_BYTES))
    return f"sampled:{h.hexdigest()}"


def _combine(items: dict[str, str]) -> str:
    h = hashlib.sha256()
    for name, digest in sorted(items.items()):
        h.update(f"{name}={digest};".encode())
    return h.hexdigest()


def model_inputs(path: str | os.PathLike) -> dict[str, Any]:
    """``{"path", "fingerprint", "files"}`` of a model folder; ``fingerprint`` is None (and
    ``missing`` true) when the folder does not exist."""
    folder = Path(os.path.abspath(str(path)))
    if not folder.is_dir():
        return {"path": str(folder), "fingerprint": None, "missing": True, "files": {}}
    files = {
        p.name: file_digest(p)
        for p in sorted(folder.iterdir())
        if p.is_file()
        and not p.name.startswith(".")
        and p.suffix != ".md"
        and p.name not in MODEL_RECORDS
    }
    return {"path": str(folder), "fingerprint": _combine(files), "files": files}


def data_inputs(root: str | os.PathLike, files: dict[str, str]) -> dict[str, Any]:
    """``{"root", "fingerprint", "files": {split: {"file", "sha256", "bytes"}}}`` of the split
    files a job reads (every file hashed whole)."""
    folder = Path(os.path.abspath(str(root)))
    out: dict[str, Any] = {}
    for split, name in files.items():
        path = folder / str(name)
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
        out[split] = {"file": str(name), "sha256": h.hexdigest(), "bytes": path.stat().st_size}
    return {
        "root": str(folder),
        "fingerprint": _combine({s: v["sha256"] for s, v in out.items()}),
        "files": out,
    }


def describe_inputs(cfg: DictConfig, *, world_size: int) -> dict[str, Any]:
    """What this job reads, as recorded in ``results.json`` → ``inputs``: the model, the data
    and the number of processes (their fingerprints are part of the job identity)."""
    return {
        "model": model_inputs(cfg.model.path),
        "data": data_inputs(cfg.data.root, dict(cfg.data.files)),
        "world_size": int(world_size),
    }
