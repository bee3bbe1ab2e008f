"""The shared trainer: determinism, resume, checkpoints, loss masking, samplers."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator

from moelora.data.encoding import IGNORE_INDEX, Encoder
from moelora.data.samplers import RandomMixSampler
from moelora.engine.adapters import trainable_state_dict
from moelora.engine.train import _micro_batches, train
from moelora.harness.context import RunContext
from moelora.harness.runner import load_splits
from moelora.method.tasks import TaskMap
from tests.conftest import compose, tiny_overrides


def _ctx(tiny_world, tmp_path, *extra):
    cfg = compose(tiny_overrides(tiny_world, tmp_path, "method=lora_full", *extra))
    task_map = TaskMap(cfg.data.tasks)
    splits = load_splits(cfg, task_map)
    from moelora.harness.loggers import NoneLogger

    return RunContext(
        cfg=cfg,
        run_dir=tmp_path,
        task_map=task_map,
        splits=splits,
        accelerator=Accelerator(cpu=True),
        logger=NoneLogger(),
    )


def _train(ctx, ckpt_dir, *, max_steps=4, on_step=None, seed=0):
    torch.manual_seed(seed)
    model, tok = ctx.load_base()
    model = ctx.build_adapter(model)
    enc = ctx.encoder(tok)
    settings = ctx.train_settings(max_steps=max_steps)
    settings.save_every = 2
    out = train(
        model,
        enc,
        ctx.splits["train"],
        settings=settings,
        sampler=ctx.sampler(enc, ctx.splits["train"]),
        accelerator=ctx.accelerator,
        ckpt_dir=ckpt_dir,
        adapter_meta=ctx.adapter_meta(),
        on_step=on_step,
    )
    return model, out


def test_loss_is_on_answer_tokens_only(tiny_world, tmp_path):
    ctx = _ctx(tiny_world, tmp_path)
    _, tok = ctx.load_base()
    enc = ctx.encoder(tok)
    rec = ctx.splits["train"][0]
    ex = enc.train_example(rec)
    prompt_len = len(enc.prompt_ids(rec["input"]))
    assert all(x == IGNORE_INDEX for x in ex["labels"][:prompt_len])
    supervised = ex["labels"][prompt_len:]
    assert supervised[-1] == tok.eos_token_id
    answer = tok(rec["target"], add_special_tokens=False)["input_ids"][: enc.max_target_length - 1]
    assert supervised == answer + [tok.eos_token_id]
    batch = enc.collate_train([ex, enc.train_example(ctx.splits["train"][1])])
    assert batch["input_ids"].shape == batch["labels"].shape
    # right padding: padded label positions are ignored
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


def test_generation_batches_are_left_padded(tiny_world, tmp_path):
    ctx = _ctx(tiny_world, tmp_path)
    _, tok = ctx.load_base()
    enc = ctx.encoder(tok)
    recs = ctx.splits["test"][:3]
    batch = enc.collate_generate(recs)
    lengths = [len(enc.prompt_ids(r["input"])) for r in recs]
    for row, n in zip(batch["attention_mask"], lengths):
        assert row[-n:].all() and not row[:-n].any()


def test_same_seed_gives_identical_losses(tiny_world, tmp_path):
    ctx = _ctx(tiny_world, tmp_path)
    _, a = _train(ctx, None)
    _, b = _train(ctx, None)
    assert a.losses == b.losses
    assert len(a.losses) == 4 and all(loss > 0 for _, loss in a.losses)


def test_killed_run_resumes_to_identical_weights(tiny_world, tmp_path):
    """train(4) == train(2) + kill + resume(2): adapter, optimizer, scheduler, RNG, data order."""
    ctx = _ctx(tiny_world, tmp_path)
    full, _ = _train(ctx, tmp_path / "ck_full")

    class Killed(Exception):
        pass

    def kill_after_step_3(step, model):
        if step == 3:  # after the step-2 checkpoint, before the step-4 one
            raise Killed

    with pytest.raises(Killed):
        _train(ctx, tmp_path / "ck_resume", on_step=kill_after_step_3)
    resumed, out = _train(ctx, tmp_path / "ck_resume", seed=123)  # a different init is overwritten
    assert out.resumed_from == 2
    ref, got = trainable_state_dict(full), trainable_state_dict(resumed)
    assert ref.keys() == got.keys()
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=0)


def test_random_mix_sampler_is_seeded_and_mixes_tasks():
    task_ids = [0] * 50 + [1] * 30 + [2] * 20
    s1 = iter(RandomMixSampler(task_ids, batch_size=10, seed=1))
    s2 = iter(RandomMixSampler(task_ids, batch_size=10, seed=1))
    first = [next(s1) for _ in range(10)]
    assert first == [next(s2) for _ in range(10)]
    # one epoch (10 batches) covers every example exactly once
    assert sorted(i for b in first for i in b) == list(range(100))
    assert any(len({task_ids[i] for i in b}) > 1 for b in first)


def test_micro_batches_split_step_over_devices_and_accumulation():
    step = list(range(16))
    parts = [_micro_batches(step, rank, 2, 2) for rank in range(2)]
    assert parts[0] == [[0, 2, 4, 6], [8, 10, 12, 14]]
    assert sorted(i for p in parts for mb in p for i in mb) == step


def test_train_settings_effective_lr(tiny_world, tmp_path):
    ctx = _ctx(tiny_world, tmp_path, "trainer.lr_scale=3.0")
    assert ctx.train_settings().lr == pytest.approx(3.0 * ctx.cfg.method.optim.lr)
    ctx = _ctx(tiny_world, tmp_path, "trainer.lr=0.01")
    assert ctx.train_settings().lr == 0.01


def test_encoder_rejects_bad_settings(tiny_world, tmp_path):
    ctx = _ctx(tiny_world, tmp_path)
    _, tok = ctx.load_base()
    with pytest.raises(ValueError, match="truncation_side"):
        Encoder(tok, ctx.task_map, 16, 16, truncation_side="middle")


def test_example_mean_loss_weighs_every_example_the_same(tiny_world, tmp_path):
    """trainer.loss_weighting=example: one example alone gives the model's own loss (Eq. 2);
    a batch gives the mean of its examples' losses, not the token mean."""
    from moelora.engine.train import example_mean_loss

    ctx = _ctx(tiny_world, tmp_path)
    torch.manual_seed(0)
    model, tok = ctx.load_base()
    enc = ctx.encoder(tok)
    records = ctx.splits["train"]
    examples = sorted(
        (enc.train_example(r) for r in records[:12]),
        key=lambda e: sum(x != IGNORE_INDEX for x in e["labels"]),
    )
    short, long = examples[0], examples[-1]
    assert sum(x != IGNORE_INDEX for x in short["labels"]) < sum(
        x != IGNORE_INDEX for x in long["labels"]
    )
    alone = []
    with torch.no_grad():
        for ex in (short, long):
            batch = enc.collate_train([ex])
            batch.pop("task_ids")
            labels = batch.pop("labels")
            out = model(**batch, labels=labels)
            alone.append(float(out.loss))
            assert float(example_mean_loss(out.logits, labels)) == pytest.approx(
                alone[-1], rel=1e-5
            )
        batch = enc.collate_train([short, long])
        batch.pop("task_ids")
        labels = batch.pop("labels")
        out = model(**batch, labels=labels)
        both = float(example_mean_loss(out.logits, labels))
    assert both == pytest.approx(sum(alone) / 2, rel=1e-4)
    assert float(out.loss) != pytest.approx(both, rel=1e-3)  # the token mean differs


def test_loss_weighting_is_checked(tiny_world, tmp_path):
    from dataclasses import replace

    ctx = _ctx(tiny_world, tmp_path)
    model, tok = ctx.load_base()
    model = ctx.build_adapter(model)
    enc = ctx.encoder(tok)
    settings = replace(ctx.train_settings(max_steps=1), loss_weighting="tokens")
    with pytest.raises(ValueError, match="loss_weighting='tokens'.*token, example"):
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
