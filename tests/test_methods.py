"""Invariants every method must keep, run on every conf/method/*.yaml.

A new method YAML is picked up automatically: it must build from its YAML on a tiny Llama,
train only its own parameters, equal the base at initialisation (unless its YAML says
``equals_base_at_init: false``), and round-trip through adapter save/load.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import LlamaConfig, LlamaForCausalLM

from moelora.engine.adapters import (
    AdapterMismatchError,
    load_adapter,
    save_adapter,
    trainable_state_dict,
)
from moelora.method.gate import task_context
from moelora.models.loading import resolve_target_modules
from tests.conftest import REPO_ROOT, TINY_LLAMA, compose

METHODS = sorted(p.stem for p in (REPO_ROOT / "conf" / "method").glob("*.yaml"))
VOCAB = 97


def _method_cfg(name: str):
    return compose(
        [f"method={name}", "model=hf", "model.path=/unused", "model.family=llama", "logger=none"]
    )


def _with_adapter(name: str):
    cfg = _method_cfg(name)
    if cfg.method.get("adapter") is None:
        pytest.skip(f"{name} builds no adapter of its own (pipeline {cfg.method.pipeline})")
    return cfg


def _base() -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, **TINY_LLAMA)).eval()
    model.requires_grad_(False)
    return model


def _build(cfg, base):
    tasks = list(cfg.data.tasks)
    build = instantiate(cfg.method.adapter)
    torch.manual_seed(1)
    return build(
        base,
        tasks=tasks,
        target_modules=resolve_target_modules(cfg.model, cfg.method.target_modules),
    )


def _batch(num_tasks: int = 8):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, VOCAB, (4, 12), generator=g)
    return ids, torch.ones_like(ids), torch.tensor([0, 3, 5, num_tasks - 1])


def _logits(model, ids, mask, task_ids):
    with torch.no_grad(), task_context(model, task_ids):
        return model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("name", METHODS)
def test_method_yaml_composes_and_names_itself(name):
    cfg = _method_cfg(name)
    assert cfg.method.name == name, f"conf/method/{name}.yaml must set name: {name}"
    for key in ("pipeline", "infer", "target_modules", "sampler", "optim"):
        assert key in cfg.method, f"conf/method/{name}.yaml lacks '{key}'"
    from moelora.harness.runner import resolve_pipeline

    assert callable(resolve_pipeline(cfg.method.pipeline))


@pytest.mark.parametrize("name", METHODS)
def test_only_adapter_parameters_train(name):
    cfg = _with_adapter(name)
    base = _base()
    frozen = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = _build(cfg, base)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable, "the method trains nothing"
    ids, mask, task_ids = _batch()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    for _ in range(3):
        with task_context(model, task_ids):
            loss = model(input_ids=ids, attention_mask=mask, labels=ids).loss
            loss.backward()
        opt.step()
        opt.zero_grad()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and changed <= set(trainable), (
        f"frozen parameters changed: {changed - set(trainable)}"
    )
    # the base weights proper did not move (names may gain a prefix when wrapped)
    for n, p in model.named_parameters():
        if not p.requires_grad:
            stem = n.split("base_model.model.", 1)[-1].replace(".base_layer", "")
            if stem in frozen:
                assert torch.equal(p.detach(), frozen[stem]), n


@pytest.mark.parametrize("name", METHODS)
def test_equals_base_at_initialisation(name):
    cfg = _with_adapter(name)
    if cfg.method.get("equals_base_at_init", True) is False:
        pytest.skip(f"{name} declares equals_base_at_init: false")
    ids, mask, task_ids = _batch()
    ref = _logits(_base(), ids, mask, task_ids)
    model = _build(cfg, _base()).eval()
    torch.testing.assert_close(_logits(model, ids, mask, task_ids), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", METHODS)
def test_adapter_save_load_round_trip(name, tmp_path: Path):
    cfg = _with_adapter(name)
    model = _build(cfg, _base()).eval()
    with torch.no_grad():  # move away from init so the round trip is not trivially equal
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    ids, mask, task_ids = _batch()
    ref = _logits(model, ids, mask, task_ids)
    meta = {
        "method": name,
        "tasks": list(cfg.data.tasks),
        "hparams": OmegaConf.to_container(cfg.method.adapter),
    }
    save_adapter(model, tmp_path, meta=meta)
    fresh = _build(cfg, _base()).eval()
    load_adapter(fresh, tmp_path, expected_tasks=list(cfg.data.tasks))
    torch.testing.assert_close(_logits(fresh, ids, mask, task_ids), ref, rtol=0, atol=0)
    for k, v in trainable_state_dict(fresh).items():
        assert torch.equal(v, trainable_state_dict(model)[k])
    with pytest.raises(AdapterMismatchError, match="trained for tasks"):
        load_adapter(_build(cfg, _base()), tmp_path, expected_tasks=list(reversed(cfg.data.tasks)))
