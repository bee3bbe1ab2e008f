"""Secrets inside URLs and paths are masked wherever the harness writes (moelora.utils.redaction):
folder names, saved configs, Hydra's records, results.json, adapter configs, logs and errors.
Nothing here contacts a network: 127.0.0.1:9 (discard) refuses at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from moelora.harness.naming import safe_item
from moelora.harness.runner import run
from moelora.utils.io import read_json
from moelora.utils.redaction import (
    redact,
    redact_override,
    redact_text,
    redact_value,
    secret_values,
)
from tests.conftest import REPO_ROOT, compose, tiny_overrides

URL = "http://alice:secretPW@127.0.0.1:9/v1?api_key=secretQ"
SECRETS = ("secretPW", "secretQ", "secretT", "alice:")


def _leaks(root: Path, *texts: str) -> list[str]:
    """Every place under ``root`` (file names and contents) and in ``texts`` holding a secret."""
    found = []
    for path in root.rglob("*"):
        if any(s in path.name for s in SECRETS):
            found.append(f"name: {path}")
        if path.is_file():
            text = path.read_bytes().decode("utf-8", "replace")
            found += [f"{path}: {s}" for s in SECRETS if s in text]
    found += [f"output: {s}" for t in texts for s in SECRETS if s in t]
    return found


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        (URL, "http://***@127.0.0.1:9/v1?api_key=***"),
        ("/m/base?token=secretT", "/m/base?token=***"),
        ("https://h/x?sig=secretT&page=2", "https://h/x?sig=***&page=2"),
        ("s3://bucket/key=secretT/model", "s3://bucket/key=***/model"),
        ("https://h/v1?max_tokens=5&password=secretT", "https://h/v1?max_tokens=5&password=***"),
        ("/models/Qwen2-7B", "/models/Qwen2-7B"),
    ],
)
def test_secrets_inside_values_are_masked(value, masked):
    assert redact_value(value) == masked
    assert redact({"model": {"path": value}}) == {"model": {"path": masked}}
    assert redact_override(f"model.path={value}") == f"model.path={masked}"
    text = redact_text(f"failed: {value}", secret_values([f"model.path={value}"]))
    assert not any(s in text for s in SECRETS)


def test_folder_names_hold_no_url_secret():
    for item in (f"method.icl.openai.base_url={URL}", "model.path=/m/base?token=secretT"):
        name = safe_item(item)
        assert "/" not in name.split("=", 1)[1] and not any(s in name for s in SECRETS), name


def test_adapter_config_config_yaml_and_results_hold_no_path_token(tiny_world, tmp_path):
    data_dir, model_dir = tiny_world
    tokened = tmp_path / "base?token=secretT"
    tokened.symlink_to(model_dir, target_is_directory=True)
    cfg = compose(
        tiny_overrides(
            tiny_world,
            tmp_path,
            "method=lora_full",
            "trainer.max_steps=1",
            f"model.path='{tokened}'",
        )
    )
    run_dir = tmp_path / "job"
    run_dir.mkdir()
    assert run(cfg, run_dir) == 0
    tokened.unlink()  # its name holds the secret on purpose; everything else may not
    assert read_json(run_dir / "adapter" / "adapter_config.json")["base_model"]["name_or_path"]
    assert _leaks(run_dir) == []


def test_run_py_masks_url_secrets_in_every_place(tiny_world, tmp_path):
    """The issue's case: an OpenAI-compatible endpoint with userinfo and an api_key parameter,
    a model path with a token, through run.py: the job fails (nothing listens on port 9)."""
    data_dir, model_dir = tiny_world
    tokened = tmp_path / "base?token=secretT"
    tokened.symlink_to(model_dir, target_is_directory=True)
    args = [
        "method=icl",
        "method.icl.backend=openai_compatible",
        f"method.icl.openai.base_url='{URL}'",
        "method.icl.openai.max_retries=0",
        "method.icl.openai.timeout=5",
        *tiny_overrides(tiny_world, tmp_path, f"model.path='{tokened}'"),
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": "x"}
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "run.py"), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    results = list((tmp_path / "outputs").rglob("results.json"))
    assert len(results) == 1, out.stderr[-3000:]
    r = read_json(results[0])
    assert r["status"] == "failed" and r["error"]
    assert (results[0].parent / ".hydra" / "overrides.yaml").is_file()
    tokened.unlink()
    assert _leaks(tmp_path / "outputs", out.stdout, out.stderr) == []
