"""``results.json``: the one file per run that the analysis reads (STYLE.md §5).

Written atomically. ``status`` is ``running`` while a job works, then ``success`` or
``failed`` (with the error). Secrets never enter it: config values under keys that look
like credentials are redacted (moelora.redaction).
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from moelora.io import read_json, write_json
from moelora.redaction import redact

__all__ = ["RESULTS_NAME", "provenance", "read_results", "redact", "write_results"]

RESULTS_NAME = "results.json"
PACKAGES = ("torch", "transformers", "peft", "accelerate", "hydra-core", "rouge-chinese",
            "scikit-learn", "tokenizers", "numpy")
# CPU features that select different matmul kernels (oneDNN bf16 / AMX): with them the same
# code, config and seed give other weights, so a run records which of them its CPU has.
CPU_KERNEL_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
# Environment variables that pin those kernels, and so change results when set: oneDNN's
# ISA cap (bf16 matmuls) and MKL's code branch (fp32 matmuls; docs/medsynth_notes.md).
KERNEL_ENV = ("ONEDNN_MAX_CPU_ISA", "MKL_CBWR")


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, Any]:
    """The CPU as far as it changes results: model name, torch's kernel capability (which
    ``ATEN_CPU_CAPABILITY`` caps), the flags of CPU_KERNEL_FLAGS it has, and the KERNEL_ENV
    variables (None when unset)."""
    model, flags = platform.processor() or None, set()
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and value.strip():
            model = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            break
    return {"model": model, "capability": torch.backends.cpu.get_cpu_capability(),
            "kernel_flags": [f for f in CPU_KERNEL_FLAGS if f in flags],
            **{name.lower(): os.environ.get(name) for name in KERNEL_ENV}}


def git_info(root: Path) -> dict[str, Any]:
    def _git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": sha, "git_dirty": bool(status) if status is not None else None}


def provenance(root: Path, device: str) -> dict[str, Any]:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    info = git_info(root)
    info.update(
        versions=versions,
        python=platform.python_version(),
        device=device,
        gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        platform=platform.platform(),
        cpu=cpu_info(),
        hostname=platform.node(),
    )
    return info


def read_results(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / RESULTS_NAME
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except ValueError:
        return None


def write_results(run_dir: Path, results: dict[str, Any]) -> Path:
    path = Path(run_dir) / RESULTS_NAME
    write_json(path, results)
    return path
