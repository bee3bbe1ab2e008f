"""How adapter dropout masks are drawn (moelora.method.dropout, ``trainer.dropout_masks``)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from moelora.method.dropout import (
    LEVELS,
    MASKS,
    Dropout,
    bits16_mask,
    bits16_threshold,
    dropout,
    mask_sampling,
    mode,
    use_in,
)
from tests.conftest import compose


def _drop_fraction_bounds(p_eff: float, n: int, sigmas: float = 6.0) -> tuple[float, float]:
    half = sigmas * math.sqrt(p_eff * (1 - p_eff) / n)
    return p_eff - half, p_eff + half


def test_bits16_keeps_each_entry_with_the_stated_probability_and_expectation_one():
    """Dropped entries are 0, kept ones exactly 2^16 / (2^16 - t); the dropped share is
    t / 2^16 (0.1000061 for p = 0.1) within 6 binomial standard deviations; the mean is 1."""
    torch.manual_seed(0)
    for p in (0.1, 0.05, 0.5):
        t = bits16_threshold(p)
        assert abs(t / LEVELS - p) <= 0.5 / LEVELS
        mask = bits16_mask((1000, 1000), p)
        assert mask.dtype == torch.float32 and mask.shape == (1000, 1000)
        values = torch.unique(mask).tolist()
        assert values[0] == 0.0 and len(values) == 2
        assert values[1] == pytest.approx(LEVELS / (LEVELS - t), rel=1e-7)
        dropped = float((mask == 0).double().mean())
        lo, hi = _drop_fraction_bounds(t / LEVELS, mask.numel())
        assert lo < dropped < hi, (p, dropped)
        assert float(mask.double().mean()) == pytest.approx(
            1.0, abs=6 * math.sqrt(p / (1 - p) / 1e6)
        )


def test_bits16_uses_all_four_lanes_of_every_draw():
    """Each 64-bit draw feeds four entries; every lane must drop at the same rate. (A plain
    ``random_()`` on int64 leaves the top bit 0, so the fourth lane would never drop.)"""
    torch.manual_seed(1)
    mask = bits16_mask((400_000,), 0.1).view(-1, 4)
    lo, hi = _drop_fraction_bounds(bits16_threshold(0.1) / LEVELS, mask.shape[0])
    for lane in range(4):
        dropped = float((mask[:, lane] == 0).double().mean())
        assert lo < dropped < hi, (lane, dropped)


def test_bits16_masks_follow_the_seed_and_odd_sizes_work():
    torch.manual_seed(7)
    a = bits16_mask((3, 5, 7), 0.1)  # 105 entries: not a multiple of 4
    b = bits16_mask((3, 5, 7), 0.1)
    torch.manual_seed(7)
    assert torch.equal(a, bits16_mask((3, 5, 7), 0.1))
    assert not torch.equal(a, b)
    assert bits16_mask((0, 4), 0.1).shape == (0, 4)


def test_torch_masks_are_exactly_functional_dropout():
    """``torch`` (the default outside the trainer, and what runs saved before the key used)
    gives F.dropout's output for the same RNG state."""
    x = torch.randn(4, 9, 16)
    assert mode() == "torch"
    for ctx in (None, "torch"):
        torch.manual_seed(3)
        want = F.dropout(x, 0.1, True)
        torch.manual_seed(3)
        if ctx is None:
            got = dropout(x, 0.1)
        else:
            with mask_sampling(ctx):
                got = dropout(x, 0.1)
        assert torch.equal(got, want)


def test_bits16_dropout_multiplies_by_the_mask_forward_and_backward():
    x = torch.randn(4, 9, 16, requires_grad=True)
    torch.manual_seed(5)
    with mask_sampling("bits16"):
        assert mode() == "bits16"
        y = dropout(x, 0.1)
    assert mode() == "torch"
    torch.manual_seed(5)
    mask = bits16_mask(x.shape, 0.1)
    assert torch.equal(y, x.detach() * mask)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad, mask)
    with mask_sampling("bits16"):
        assert dropout(x, 0.1, training=False) is x
        assert dropout(x, 0.0) is x


def test_mask_sampling_rejects_an_unknown_scheme_and_restores_the_mode():
    with pytest.raises(ValueError, match=r"trainer.dropout_masks='fast'.*bits16, torch"):
        with mask_sampling("fast"):
            pass
    with pytest.raises(RuntimeError):
        with mask_sampling("bits16"):
            raise RuntimeError("boom")
    assert mode() == "torch" and MASKS == ("bits16", "torch")


def test_bits16_leaves_tensors_off_the_cpu_to_torch(monkeypatch):
    """On an accelerator torch's fused kernel is used (a meta tensor stands in for one here)."""
    calls = []
    real = F.dropout
    monkeypatch.setattr(
        F, "dropout", lambda x, p, training: calls.append(x.device.type) or real(x, p, training)
    )
    with mask_sampling("bits16"):
        out = dropout(torch.empty(2, 3, device="meta"), 0.1)
        dropout(torch.ones(2, 3), 0.1)
    assert out.device.type == "meta" and calls == ["meta"]


def _tiny_lora():
    from transformers import LlamaConfig, LlamaForCausalLM

    from baselines.lora import build

    torch.manual_seed(0)
    base = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    model = build(base, tasks=["a"], target_modules=["q_proj", "v_proj"], rank=4, dropout=0.1)
    for name, p in model.named_parameters():  # a trained-looking adapter: B != 0
        if "lora_B" in name:
            p.data.normal_(std=0.5)
    return model.train()


def test_use_in_swaps_peft_dropout_and_changes_nothing_under_torch_masks():
    model = _tiny_lora()
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(11)
    before = model(input_ids=ids).logits
    assert use_in(model) == 4  # 2 layers x (q_proj, v_proj)
    assert use_in(model) == 0  # already swapped
    kinds = {type(m) for n, m in model.named_modules() if n.endswith("lora_dropout.default")}
    assert kinds == {Dropout}
    torch.manual_seed(11)
    assert torch.equal(model(input_ids=ids).logits, before)
    torch.manual_seed(11)
    with mask_sampling("bits16"):
        assert not torch.allclose(model(input_ids=ids).logits, before)
    model.eval()
    with mask_sampling("bits16"):
        plain = model(input_ids=ids).logits
    assert torch.equal(plain, model(input_ids=ids).logits)  # no dropout in eval mode
    assert isinstance(Dropout(0.1), nn.Dropout)


def test_the_trainer_checks_and_uses_the_setting(tiny_world, tmp_path):
    """The shared trainer rejects an unknown scheme, and the two schemes train other weights
    (each deterministic) while the default CPU config says bits16."""
    from dataclasses import replace

    from accelerate import Accelerator

    from moelora.engine.adapters import trainable_state_dict
    from moelora.engine.train import train
    from moelora.harness.context import RunContext
    from moelora.harness.loggers import NoneLogger
    from moelora.harness.runner import load_splits
    from moelora.method.tasks import TaskMap
    from tests.conftest import tiny_overrides

    cfg = compose(tiny_overrides(tiny_world, tmp_path, "method=moelora_dense"))
    assert cfg.trainer.dropout_masks == "bits16"
    task_map = TaskMap(cfg.data.tasks)
    ctx = RunContext(
        cfg=cfg,
        run_dir=tmp_path,
        task_map=task_map,
        splits=load_splits(cfg, task_map),
        accelerator=Accelerator(cpu=True),
        logger=NoneLogger(),
    )
    assert ctx.train_settings().dropout_masks == "bits16"

    def weights(masks: str) -> dict[str, torch.Tensor]:
        torch.manual_seed(0)
        model, tok = ctx.load_base()
        model = ctx.build_adapter(model)
        enc = ctx.encoder(tok)
        settings = replace(ctx.train_settings(max_steps=2), dropout_masks=masks, progress=False)
        train(
            model,
            enc,
            ctx.splits["train"],
            settings=settings,
            sampler=ctx.sampler(enc, ctx.splits["train"]),
            accelerator=ctx.accelerator,
            ckpt_dir=None,
            adapter_meta=ctx.adapter_meta(),
        )
        return {k: v.clone() for k, v in trainable_state_dict(model).items()}

    with pytest.raises(ValueError, match=r"dropout_masks='fast'.*bits16, torch"):
        weights("fast")
    a, b, c = weights("bits16"), weights("bits16"), weights("torch")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_dropout_masks_torch_keeps_the_identity_of_runs_saved_before_the_key():
    """trainer.dropout_masks came after identity version 1: at ``torch`` (what every job drew
    before) a job keeps its earlier identity; ``bits16``, the CPU default, is another job. The
    GPU schedule (trainer=paper) stays at ``torch``, which its GPU runs computed anyway."""
    from omegaconf import OmegaConf

    from moelora.harness.identity import ADDED_KEYS, job_fingerprint

    cfg = OmegaConf.to_container(compose(["method=lora_full"]), resolve=False)
    assert cfg["trainer"]["dropout_masks"] == "bits16"
    assert ADDED_KEYS["trainer.dropout_masks"] == "torch"
    before = json.loads(json.dumps(cfg))
    del before["trainer"]["dropout_masks"]
    assert job_fingerprint(cfg) != job_fingerprint(before)
    assert job_fingerprint(cfg, training_only=True) != job_fingerprint(before, training_only=True)
    cfg["trainer"]["dropout_masks"] = "torch"
    assert job_fingerprint(cfg) == job_fingerprint(before)
    assert compose(["trainer=paper"]).trainer.dropout_masks == "torch"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bits16_on_a_gpu_is_torchs_fused_dropout():
    """On CUDA ``bits16`` leaves the mask to torch's fused kernel: a MOELoRA layer and a peft
    LoRA model give the same outputs and gradients under both settings for one RNG state."""
    from moelora.method.layer import MoELoRALinear

    class Source:
        mergeable = True

        def rank_weights(self, layer, x):
            return torch.full((x.shape[0], layer.rank), 0.5, device=x.device)

    x = torch.randn(4, 33, 64, device="cuda")
    torch.cuda.manual_seed(0)
    want = F.dropout(x, 0.1, True)
    torch.cuda.manual_seed(0)
    with mask_sampling("bits16"):
        assert torch.equal(dropout(x, 0.1), want)

    torch.manual_seed(0)
    layer = MoELoRALinear(
        nn.Linear(64, 48), num_experts=4, rank=8, alpha=16, dropout=0.1, weight_source=Source()
    ).cuda()
    nn.init.normal_(layer.lora_B, std=0.1)
    model = _tiny_lora().cuda()
    use_in(model)
    ids = torch.randint(0, 64, (2, 8), device="cuda")
    outs = {}
    for masks in MASKS:
        torch.cuda.manual_seed(1)
        with mask_sampling(masks):
            out = layer(x)
            out.sum().backward()
            logits = model(input_ids=ids).logits
        outs[masks] = (out.detach(), layer.lora_A.grad.clone(), logits.detach())
        layer.lora_A.grad = None
    assert all(torch.equal(a, b) for a, b in zip(outs["bits16"], outs["torch"]))
