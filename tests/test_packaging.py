"""One torch pin story and a CI that checks what it claims (Makefile, pyproject.toml,
environment.yml, .ci/run)."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, requires

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from tests.conftest import REPO_ROOT

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11


def _makefile_torch() -> Version:
    text = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    match = re.search(r"^TORCH_SPEC \?= torch==([\w.]+)$", text, flags=re.M)
    assert match, "Makefile: TORCH_SPEC ?= torch==<version> not found"
    return Version(match.group(1))


def _environment_pip() -> list[str]:
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text(encoding="utf-8"))
    pips = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pips) == 1, "environment.yml: one pip section"
    return pips[0]


def _pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_cpu_and_gpu_set_ups_pin_the_same_torch():
    pins = [Requirement(r) for r in _environment_pip() if r.startswith("torch")]
    assert [str(p.specifier) for p in pins] == [f"=={_makefile_torch()}"]


def test_environment_yml_takes_every_other_dependency_from_pyproject():
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text(encoding="utf-8"))
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert not any(d.split("=")[0] in {"pytorch", "pytorch-cuda", "torch"} for d in conda), (
        "torch comes from pip (PyPI's CUDA wheel), never from a conda channel"
    )
    project = [r for r in _environment_pip() if r.startswith("-e .")]
    assert project, "environment.yml installs the project itself (-e .[...])"
    extras = set(re.search(r"\[(.*)\]", project[0]).group(1).split(","))
    assert extras <= set(_pyproject()["project"]["optional-dependencies"])
    others = [r for r in _environment_pip() if not r.startswith(("-e", "torch"))]
    assert not others, f"environment.yml repeats dependencies of pyproject.toml: {others}"


def test_the_pinned_torch_meets_every_floor():
    pinned = _makefile_torch()
    floors = [Requirement(r) for r in _pyproject()["project"]["dependencies"]]
    for req in floors:
        if req.name == "torch":
            assert pinned in req.specifier, f"pyproject.toml {req} excludes the pinned {pinned}"
    for package in ("accelerate", "peft", "transformers"):
        try:
            needs = requires(package) or []
        except PackageNotFoundError:  # pragma: no cover - always installed with the project
            pytest.skip(f"{package} is not installed")
        for line in needs:
            req = Requirement(line)
            if req.name == "torch" and req.marker is None:
                assert pinned in req.specifier, f"{package} needs {req}, pinned {pinned}"


def test_ci_runs_the_readme_test_command_lint_and_format_check():
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci and "make lint" in ci
    makefile = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "ruff check" in lint and "ruff format --check" in lint
    assert "--strict-markers" in _pyproject()["tool"]["pytest"]["ini_options"]["addopts"]
