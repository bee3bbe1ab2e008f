"""Precision per card (trainer.precision, model.dtype): bf16 only where the card computes it
natively (compute capability ≥ 8.0), fp16 with loss scaling on a V100, frozen weights in the
compute dtype, adapters in fp32. The CUDA queries are mocked; the matrix precision × model
dtype runs through the job runner on the tiny ChatGLM-6B checkpoint on the CPU."""

from __future__ import annotations

import math

import pytest
import torch

from moelora.engine.distributed import frozen_dtype, precision
from moelora.harness.runner import run
from moelora.models.loading import resolve_dtype
from moelora.utils.io import read_json
from tests.conftest import compose


def _card(monkeypatch, capability: tuple[int, int], name: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation


def test_v100_gets_fp16_not_emulated_bf16(monkeypatch):
    _card(monkeypatch, (7, 0), "Tesla V100-SXM2-32GB")
    assert precision("auto") == "fp16"
    assert resolve_dtype("auto") == torch.float16
    with pytest.raises(ValueError, match="trainer.precision=fp16") as err:
        precision("bf16")
    assert "V100" in str(err.value) and "7.0" in str(err.value)
    assert precision("fp16") == "fp16"


@pytest.mark.parametrize("capability", [(8, 0), (9, 0)])
def test_ampere_and_hopper_get_bf16(monkeypatch, capability):
    _card(monkeypatch, capability, "NVIDIA A100")
    assert precision("auto") == "bf16" and precision("bf16") == "bf16"
    assert resolve_dtype("auto") == torch.bfloat16


def test_cpu_auto_is_full_precision():
    if torch.cuda.is_available():
        pytest.skip("a CUDA machine")
    assert precision("auto") == "no" and resolve_dtype("auto") == torch.float32


def test_frozen_weights_take_the_compute_dtype():
    assert frozen_dtype("float16", "bf16") == "bfloat16"
    assert frozen_dtype("float32", "fp16") == "float16"
    assert frozen_dtype("float16", "no") == "float16"
    assert frozen_dtype("auto", "no") == "auto"


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


MATRIX = [(p, d) for p in ("no", "bf16", "fp16") for d in ("float32", "float16", "bfloat16")]


@pytest.mark.parametrize("prec, dtype", MATRIX)
def test_precision_matrix_through_the_runner(tiny_world, tiny_chatglm, tmp_path, prec, dtype):
    data_dir, _ = tiny_world
    cfg = compose(
        [
            f"paths.root_dir={tmp_path}",
            f"data.root={data_dir}",
            "data.prepare=null",
            "model=chatglm_6b",
            f"model.path={tiny_chatglm}",
            f"model.dtype={dtype}",
            "model.gradient_checkpointing=false",
            f"trainer.precision={prec}",
            "trainer=smoke",
            "trainer.max_steps=2",
            "trainer.eval.limit_per_task=1",
            "trainer.eval.max_new_tokens=4",
            "logger=none",
            "progress=false",
            "device=cpu",
            "data.max_target_length=12",
            "data.max_source_length=64",
            "data.max_truncated_fraction=1.0",
        ]
    )
    assert run(cfg, tmp_path / "job") == 0
    r = read_json(tmp_path / "job" / "results.json")
    assert r["status"] == "success", r.get("error")
    losses = [v for _, v in r["train"]["losses"]]
    assert losses and all(math.isfinite(v) for v in losses)
    from safetensors import safe_open

    adapter = next((tmp_path / "job").rglob("*.safetensors"))
    with safe_open(str(adapter), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys() if "lora" in k}
    assert dtypes == {torch.float32}, dtypes  # fp32 master weights


def test_a_launch_asking_for_another_precision_is_refused_not_overridden():
    """``accelerate launch --config_file experiments/accelerate/*.yaml`` (mixed_precision: bf16)
    must not be silently overridden by trainer.precision."""
    from moelora.engine.distributed import LaunchError, check_launch_precision

    check_launch_precision("bf16", {"ACCELERATE_MIXED_PRECISION": "bf16"})
    check_launch_precision("bf16", {"ACCELERATE_MIXED_PRECISION": "no"})  # launch's default
    check_launch_precision("no", {})
    with pytest.raises(LaunchError, match="trainer.precision=bf16"):
        check_launch_precision("no", {"ACCELERATE_MIXED_PRECISION": "bf16"})
    with pytest.raises(LaunchError, match="mixed_precision=fp16"):
        check_launch_precision("bf16", {"ACCELERATE_MIXED_PRECISION": "fp16"})
