"""Composition baselines: Task-Arithmetic (§5.1), LoRAHub (§5.2), and finding their inputs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from baselines.compose import (
    MissingInputRunError,
    derive_input_run_dir,
    find_input_run,
    install_deltas,
    load_single_adapters,
    merged,
    read_lora_factors,
)
from baselines.lora import build as build_lora
from baselines.lorahub import lorahub_search, set_composition
from baselines.task_arithmetic import select_lambda, set_task_arithmetic
from moelora.engine.adapters import save_adapter
from moelora.utils.io import write_json
from tests.conftest import TINY_LLAMA, compose

VOCAB = 61
TARGETS = ["q_proj", "v_proj", "down_proj"]
TASKS = ["CMeIE", "CHIP-CDN", "KUAKE-QIC"]


def _base() -> LlamaForCausalLM:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, **TINY_LLAMA)).eval()
    model.requires_grad_(False)
    return model


def _random_lora(seed: int):
    model = build_lora(_base(), tasks=["x"], target_modules=TARGETS, rank=4, alpha=8, dropout=0.1)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> Path:
    """A lora_single-like run dir: <run>/adapters/<task>/ with random rank-4 LoRAs."""
    run = tmp_path_factory.mktemp("single")
    for i, task in enumerate(TASKS):
        save_adapter(
            _random_lora(10 + i),
            run / "adapters" / task,
            meta={
                "method": "lora_single",
                "tasks": [task],
                "hparams": {"rank": 4, "alpha": 8, "dropout": 0.1},
            },
        )
    write_json(run / "results.json", {"status": "success"})
    return run


def _ids():
    return torch.randint(3, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _direct_sum(factors, module, weights):
    """Σ_t w_t s_t B_t A_t, product by product."""
    return sum(
        w * f.scaling * (f.B[module].double() @ f.A[module].double())
        for f, w in zip(factors, weights)
    )


def test_task_arithmetic_lambda_one_single_task_equals_its_adapter(single_run):
    ids = _ids()
    peft_model = _random_lora(10)  # the CMeIE adapter, as trained
    ref = _logits(peft_model, ids)
    factors = read_lora_factors(single_run / "adapters" / "CMeIE", "CMeIE")
    assert factors.scaling == 2.0 and len(factors.A) == 2 * len(TARGETS)
    model = _base()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    wrappers = install_deltas(model, sorted(factors.A))
    set_task_arithmetic(wrappers, [factors], 1.0, "exact")
    torch.testing.assert_close(_logits(model, ids), ref, rtol=1e-5, atol=1e-5)
    with merged(wrappers):  # folded into W0: same model, adapter path off
        assert not any(w.active for w in wrappers.values())
        torch.testing.assert_close(_logits(model, ids), ref, rtol=1e-5, atol=1e-5)
    for n, p in model.named_parameters():  # originals restored exactly
        key = n.replace(".base.", ".")
        assert torch.equal(p, before[key]), n
    set_task_arithmetic(wrappers, [factors], 0.0, "exact")
    torch.testing.assert_close(_logits(model, ids), _logits(_base(), ids), rtol=0, atol=0)


def test_exact_sum_is_the_sum_of_products_and_legacy_differs(single_run):
    adapters = load_single_adapters(single_run, TASKS)
    factors = [adapters[t] for t in TASKS]
    model = _base()
    wrappers = install_deltas(model, sorted(factors[0].A))
    lam = 0.35
    set_task_arithmetic(wrappers, factors, lam, "exact")
    module = "model.layers.1.mlp.down_proj"
    exact = wrappers[module].delta_weight().double()
    torch.testing.assert_close(exact, _direct_sum(factors, module, [lam] * 3), rtol=1e-6, atol=1e-6)
    assert wrappers[module].A.shape[0] == 3 * 4  # rank-Σr concatenation
    set_task_arithmetic(wrappers, factors, lam, "legacy_linear")
    legacy = wrappers[module].delta_weight().double()
    # legacy PEFT: A' = Σ λ s A_t, B' = Σ λ B_t, scaling 1
    A_ = sum(lam * f.scaling * f.A[module].double() for f in factors)
    B_ = sum(lam * f.B[module].double() for f in factors)
    torch.testing.assert_close(legacy, B_ @ A_, rtol=1e-6, atol=1e-6)
    assert (legacy - exact).norm() > 0.5 * exact.norm()  # cross terms B_s A_t


def test_lorahub_compositions(single_run):
    adapters = load_single_adapters(single_run, TASKS)
    factors = [adapters[t] for t in TASKS]
    wrappers = install_deltas(_base(), sorted(factors[0].A))
    w = [0.5, -1.2, 0.9]
    module = "model.layers.0.self_attn.q_proj"
    set_composition(wrappers, factors, w, "product")
    torch.testing.assert_close(
        wrappers[module].delta_weight().double(),
        _direct_sum(factors, module, w),
        rtol=1e-6,
        atol=1e-6,
    )
    set_composition(wrappers, factors, w, "elementwise")
    A_ = sum(wi * f.A[module].double() for f, wi in zip(factors, w))
    B_ = sum(wi * f.B[module].double() for f, wi in zip(factors, w))
    torch.testing.assert_close(
        wrappers[module].delta_weight().double(), 2.0 * B_ @ A_, rtol=1e-6, atol=1e-6
    )
    assert wrappers[module].A.shape[0] == 4  # same rank r
    with pytest.raises(ValueError, match="compose"):
        set_composition(wrappers, factors, w, "average")


def _lorahub_objective(single_run):
    adapters = load_single_adapters(single_run, TASKS)
    factors = [adapters[t] for t in TASKS]
    model = _base()
    wrappers = install_deltas(model, sorted(factors[0].A))
    ids = _ids()

    def objective(w):
        set_composition(wrappers, factors, w, "elementwise")
        with torch.no_grad():
            loss = model(input_ids=ids, labels=ids).loss
        return float(loss) + 0.05 * float(np.mean(np.abs(w)))

    return objective


def test_lorahub_search_is_seeded_and_reproducible(single_run):
    objective = _lorahub_objective(single_run)
    w1, h1 = lorahub_search(objective, 3, seed=42, budget=8)
    np.random.seed(0)  # global RNG state in between must not matter
    w2, h2 = lorahub_search(objective, 3, seed=42, budget=8)
    np.testing.assert_array_equal(w1, w2)
    assert [h["weights"] for h in h1] == [h["weights"] for h in h2]
    assert len(h1) == 8 and h1[0]["weights"] == [0.0, 0.0, 0.0]  # starts at w = 0
    assert all(abs(x) <= 1.5 for h in h1 for x in h["weights"])
    w3, _ = lorahub_search(objective, 3, seed=7, budget=8)
    assert w3.shape == (3,)  # another seed runs (and may find other weights)


def test_select_lambda_best_average_ties_to_smaller():
    assert select_lambda({0.0: 0.1, 0.5: 0.4, 1.0: 0.3}, higher_better=True) == 0.5
    assert select_lambda({0.0: 2.0, 0.5: 1.5, 1.0: 1.7}, higher_better=False) == 0.5
    assert select_lambda({0.0: 0.2, 0.5: 0.4, 1.0: 0.4}, higher_better=True) == 0.5


def _ctx(run_dir: Path, *overrides: str):
    cfg = compose(
        [
            "method=task_arithmetic",
            "model=hf",
            "model.path=/unused",
            "logger=none",
            "seed=43",
            *overrides,
        ]
    )
    return SimpleNamespace(cfg=cfg, run_dir=run_dir)


def test_missing_lora_single_run_names_the_command(tmp_path):
    exp = tmp_path / "outputs" / "myexp"
    run_dir = exp / "task_arithmetic" / "data=x,method.ta.grid=[0,1],trainer=smoke" / "seed=43"
    expected = exp / "lora_single" / "data=x,trainer=smoke" / "seed=43"
    assert derive_input_run_dir(run_dir, "lora_single") == expected
    with pytest.raises(MissingInputRunError) as err:
        find_input_run(_ctx(run_dir))
    msg = str(err.value)
    assert str(expected) in msg and "does not exist" in msg
    assert (
        "python run.py method=lora_single seed=43 experiment_name=myexp data=x trainer=smoke" in msg
    )
    assert "method.ta" not in msg
    expected.mkdir(parents=True)
    write_json(expected / "results.json", {"status": "failed"})
    with pytest.raises(MissingInputRunError, match="status 'failed'"):
        find_input_run(_ctx(run_dir))
    write_json(expected / "results.json", {"status": "success"})
    assert find_input_run(_ctx(run_dir)) == expected


def test_input_run_without_overrides_and_explicit_override(tmp_path, single_run):
    run_dir = tmp_path / "default" / "lorahub" / "seed=43"
    assert (
        derive_input_run_dir(run_dir, "lora_single")
        == tmp_path / "default" / "lora_single" / "seed=43"
    )
    with pytest.raises(MissingInputRunError, match="python run.py method=lora_single seed=43\n"):
        find_input_run(_ctx(run_dir))
    ctx = _ctx(run_dir, f"method.inputs.run_dir={single_run}")
    assert find_input_run(ctx) == single_run
