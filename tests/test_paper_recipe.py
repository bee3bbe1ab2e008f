"""trainer=paper on any world size, and no large model at the CPU schedule's learning rate."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from moelora.engine import distributed
from moelora.harness.recipe import check_schedule
from moelora.harness.schema import ConfigError
from tests.conftest import compose


@pytest.mark.parametrize("world, accum", [(1, 16), (2, 8), (4, 4), (8, 2)])
def test_paper_reaches_64_on_any_world_size(world, accum):
    trainer = compose(["trainer=paper", "model=hf", "model.path=/x"]).trainer
    assert distributed.grad_accum_for(world, trainer) == accum
    assert distributed.effective_batch_size(world, trainer) == 64
    assert trainer.max_steps == 8000 and trainer.lr_scale == 1.0


def test_paper_lr_is_the_papers():
    cfg = compose(["trainer=paper", "method=moelora_dense", "model=hf", "model.path=/x"])
    assert cfg.method.optim.lr * cfg.trainer.lr_scale == pytest.approx(2e-4)


def test_make_accelerator_writes_the_derived_accumulation(monkeypatch):
    cfg = compose(["trainer=paper", "model=hf", "model.path=/x", "device=cpu"])
    fake = SimpleNamespace(num_processes=2, state=SimpleNamespace())
    monkeypatch.setattr("accelerate.Accelerator", lambda **kw: fake)
    monkeypatch.setattr(distributed, "check_launch", lambda n: None)
    assert distributed.make_accelerator(cfg) is fake
    assert cfg.trainer.grad_accum == 8


def test_an_indivisible_launch_names_the_fix():
    trainer = compose(["trainer=paper", "model=hf", "model.path=/x"]).trainer
    with pytest.raises(distributed.LaunchError, match="per_device_batch_size="):
        distributed.grad_accum_for(3, trainer)


def test_the_default_trainer_keeps_its_accumulation():
    trainer = compose(["model=hf", "model.path=/x"]).trainer
    assert trainer.effective_batch is None
    assert distributed.grad_accum_for(4, trainer) == trainer.grad_accum


def _model_dir(tmp_path, **fields):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", **fields}))
    return tmp_path


BIG = dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, vocab_size=152064)


def test_a_large_model_at_the_cpu_schedule_is_refused(tmp_path):
    path = _model_dir(tmp_path, **BIG)
    cfg = compose(["model=hf", f"model.path={path}"])
    with pytest.raises(ConfigError, match="trainer=paper") as err:
        check_schedule(cfg)
    assert "config.json" in str(err.value) and "0.0035" in str(err.value)


@pytest.mark.parametrize("extra", [["trainer=paper"], ["trainer.lr=3e-3"], ["model.max_lr=null"]])
def test_a_large_model_trains_at_the_paper_schedule_or_when_told(tmp_path, extra):
    path = _model_dir(tmp_path, **BIG)
    check_schedule(compose(["model=hf", f"model.path={path}", *extra]))


def test_a_small_model_keeps_the_cpu_schedule(tmp_path):
    path = _model_dir(tmp_path, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      vocab_size=1000)  # fmt: skip
    check_schedule(compose(["model=hf", f"model.path={path}"]))


def test_real_models_checkpoint_and_take_flash_attention():
    from moelora.harness.schema import check_values

    cfg = compose(["model=hf", "model.path=/x", "model.attn_implementation=flash_attention_2"])
    assert cfg.model.gradient_checkpointing == "auto"
    assert check_values(cfg) == []
    assert compose(["model=chatglm_6b", "model.path=/x"]).model.gradient_checkpointing is True
    bad = compose(["model=hf", "model.path=/x", "model.attn_implementation=flash"])
    assert any("attn_implementation" in p for p in check_values(bad))


def test_a_method_without_an_optimiser_is_not_checked(tmp_path):
    path = _model_dir(tmp_path, **BIG)
    check_schedule(compose(["model=hf", f"model.path={path}", "method=icl"]))


def test_checkpointing_auto_is_on_for_real_models_only(tmp_path):
    from moelora.models.loading import resolve_checkpointing

    big, small = tmp_path / "big", tmp_path / "small"
    _model_dir(big.mkdir() or big, **BIG)
    _model_dir(small.mkdir() or small, hidden_size=32, num_hidden_layers=2, vocab_size=100)
    assert resolve_checkpointing("auto", big) is True
    assert resolve_checkpointing("auto", small) is False
    assert resolve_checkpointing(True, small) is True
    with pytest.raises(ValueError, match="true, false or auto"):
        resolve_checkpointing("on", big)
