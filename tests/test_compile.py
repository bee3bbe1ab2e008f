"""Compiled training steps (``trainer.compile``, moelora.engine.compile).

Graph breaks and compilations are counted with a counting backend over torch.compile's
``eager`` / ``aot_eager`` backends (no C++ compiler); inductor itself runs only in the slow test
and in ``make bench`` (experiments/bench_compile.py).
"""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from torch._dynamo.utils import counters

from moelora.engine.compile import (
    CACHE_ENV,
    check_compile,
    compile_for_training,
    mark_dynamic_lengths,
    use_cache_dir,
)
from moelora.engine.train import train
from moelora.harness.context import RunContext
from moelora.harness.runner import load_splits
from moelora.harness.schema import ConfigError, check_config
from moelora.method.dropout import dropout, mask_sampling, use_in
from moelora.method.gate import task_context
from moelora.method.tasks import TaskMap
from tests.conftest import compose, tiny_overrides

TASKS = [f"t{i}" for i in range(4)]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class CountingBackend:
    """A torch.compile backend that counts the graphs Dynamo hands it (the first compilation
    and every recompilation) and runs them as ``inner`` does."""

    def __init__(self, inner: str = "eager") -> None:
        self.inner, self.graphs = inner, 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        if self.inner == "eager":
            return gm.forward
        from torch._dynamo.backends.registry import lookup_backend

        return lookup_backend(self.inner)(gm, example_inputs)


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=100,
    )
    return LlamaForCausalLM(cfg).requires_grad_(False)


def _adapted(method: str, dropout_p: float = 0.1) -> torch.nn.Module:
    model = _tiny_llama()
    kw = dict(tasks=TASKS, target_modules=TARGETS, rank=8, alpha=16, dropout=dropout_p)
    if method == "lora":
        from baselines.lora import build

        model = build(model, **kw)
    elif method == "molora":
        from baselines.molora import build

        model = build(model, num_experts=4, **kw)
    else:
        from moelora.method.model import build

        model = build(model, num_experts=4, gate=method, top_k=2, **kw)
    use_in(model)
    return model.train()


def _steps(model, call, shapes):
    """Forward + backward of ``call`` on batches of ``shapes``, inside the task context and
    the CPU default's dropout masks, as moelora.engine.train runs them."""
    g = torch.Generator().manual_seed(0)
    for batch_size, length in shapes:
        ids = torch.randint(0, 100, (batch_size, length), generator=g)
        batch = mark_dynamic_lengths(
            {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
        )
        with task_context(model, torch.arange(batch_size) % len(TASKS)), mask_sampling("bits16"):
            call(**batch).loss.backward()


LENGTHS = [(4, n) for n in (11, 17, 9, 23)]


def _graphs_and_breaks(method: str) -> tuple[int, dict]:
    torch._dynamo.reset()
    counters.clear()
    model = _adapted(method)
    backend = CountingBackend()
    _steps(model, compile_for_training(model, "on", backend=backend), LENGTHS)
    return backend.graphs, dict(counters["graph_break"])


def test_compiled_moelora_dense_step_has_no_graph_break_and_one_graph_over_lengths():
    """MOELoRA (D) with dropout 0.1 (bits16 masks in eager): one graph for four different
    lengths (no recompilation) and no graph break: the gate's output, the expert mixing and
    the dropout are all inside it."""
    assert _graphs_and_breaks("dense") == (1, {})


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sparse", "per_layer", "molora", "lora"])
def test_every_trained_adapter_compiles_to_one_graph(method):
    """The same for MOELoRA (S), MOELoRA (M), MoLoRA and peft LoRA."""
    assert _graphs_and_breaks(method) == (1, {})


@pytest.mark.slow
def test_unmarked_lengths_recompile_and_a_new_batch_size_recompiles_once():
    """What the marking buys: without it the second length recompiles. A micro-batch size seen
    for the first time recompiles once (the batch axis becomes dynamic), then never again."""
    torch._dynamo.reset()
    model = _adapted("dense")
    backend = CountingBackend()
    call = compile_for_training(model, "on", backend=backend)
    g = torch.Generator().manual_seed(0)
    for length in (11, 17):
        ids = torch.randint(0, 100, (4, length), generator=g)
        with task_context(model, torch.arange(4) % 4):
            call(input_ids=ids, labels=ids).loss.backward()
    assert backend.graphs == 2  # unmarked: the length was specialised

    torch._dynamo.reset()
    backend = CountingBackend()
    call = compile_for_training(model, "on", backend=backend)
    _steps(model, call, [(4, 11), (4, 19), (3, 13), (2, 25), (3, 9), (4, 21)])
    assert backend.graphs == 2


def test_dropout_masks_are_in_the_graph_and_drawn_as_eager_draws_them():
    """Under the compiler a ``bits16`` mask is one op of the graph: no graph break, and with the
    same seed the same masks as eager, one per call (two calls on the same input are not merged);
    ``torch`` masks are torch's dropout in the graph, an entry dropped with probability p."""
    torch._dynamo.reset()
    counters.clear()
    backend = CountingBackend("aot_eager")

    def two(x):
        return dropout(x, 0.1), dropout(x, 0.1)

    fn = torch.compile(two, backend=backend)
    x = torch.ones(400, 500)
    with mask_sampling("bits16"):
        torch.manual_seed(3)
        eager = two(x)
        torch.manual_seed(3)
        compiled = fn(x)
    assert dict(counters["graph_break"]) == {} and backend.graphs == 1
    for e, c in zip(eager, compiled, strict=True):
        assert torch.equal(c, e)
    assert not torch.equal(compiled[0], compiled[1])

    fn = torch.compile(lambda x: dropout(x, 0.1), backend=CountingBackend("aot_eager"))
    with mask_sampling("torch"):
        y = fn(x)
    assert (y == 0).float().mean().item() == pytest.approx(0.1, abs=0.005)  # 5 sd ≈ 0.0034
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.9))


def test_check_compile_and_the_config_key(tiny_world, tmp_path):
    assert check_compile("on") == "on" and check_compile(False) == "off"
    with pytest.raises(ValueError, match=r"trainer.compile='yes'.*off, on.*trainer.compile=on"):
        check_compile("yes")
    cfg = compose(tiny_overrides(tiny_world, tmp_path))
    assert cfg.trainer.compile == "off"  # the CPU default stays eager (docs/performance.md)
    assert compose(tiny_overrides(tiny_world, tmp_path, "trainer.compile=on")).trainer.compile
    bad = compose(tiny_overrides(tiny_world, tmp_path, "trainer.compile=sometimes"))
    with pytest.raises(ConfigError, match=r"trainer.compile='sometimes'.*trainer.compile=on"):
        check_config(bad)


def test_off_returns_the_model_and_the_cache_dir_is_shared(tmp_path, monkeypatch):
    model = _tiny_llama()
    assert compile_for_training(model, "off") is model
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    for unset in (None, default_cache_dir()):  # importing inductor sets its default
        if unset is None:
            monkeypatch.delenv(CACHE_ENV, raising=False)
        else:
            monkeypatch.setenv(CACHE_ENV, unset)
        assert use_cache_dir(tmp_path / "cache") == str((tmp_path / "cache").resolve())
        assert (tmp_path / "cache").is_dir()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))  # the user's setting wins
    assert use_cache_dir(tmp_path / "cache") == str(tmp_path / "mine")


def _ctx(tiny_world, tmp_path, *extra):
    from moelora.harness.loggers import NoneLogger

    cfg = compose(tiny_overrides(tiny_world, tmp_path, *extra))
    task_map = TaskMap(cfg.data.tasks)
    return RunContext(
        cfg=cfg,
        run_dir=tmp_path,
        task_map=task_map,
        splits=load_splits(cfg, task_map),
        accelerator=Accelerator(cpu=True),
        logger=NoneLogger(),
    )


def _losses(ctx, *, steps: int, compile: str, backend: str) -> tuple[list[float], list]:
    torch.manual_seed(0)
    model, tok = ctx.load_base()
    model = ctx.build_adapter(model)
    enc = ctx.encoder(tok)
    settings = ctx.train_settings(max_steps=steps)
    settings.save_every, settings.log_every = 0, 1
    settings.compile, settings.compile_backend = compile, backend
    out = train(
        model,
        enc,
        ctx.splits["train"],
        settings=settings,
        sampler=ctx.sampler(enc, ctx.splits["train"]),
        accelerator=ctx.accelerator,
        ckpt_dir=None,
        adapter_meta=ctx.adapter_meta(),
    )
    trained = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    return [loss for _, loss in out.losses], trained


def _agree(tiny_world, tmp_path, *, steps: int, backend: str, dropout_p: float = 0.0) -> None:
    ctx = _ctx(
        tiny_world,
        tmp_path,
        "method=moelora_dense",
        f"method.adapter.dropout={dropout_p}",
        "trainer.per_device_batch_size=8",
        "trainer.length_groups=2",
    )
    torch._dynamo.reset()
    eager, eager_params = _losses(ctx, steps=steps, compile="off", backend=backend)
    compiled, compiled_params = _losses(ctx, steps=steps, compile="on", backend=backend)
    assert len(eager) == len(compiled) == steps
    assert compiled == pytest.approx(eager, abs=1e-4)
    # it trained (B starts at 0), and both paths reached the same adapter
    assert any(p.abs().max() > 1e-3 for p in eager_params)
    for e, c in zip(eager_params, compiled_params, strict=True):
        torch.testing.assert_close(c, e, atol=1e-5, rtol=1e-4)


def test_compiled_and_eager_losses_agree_through_the_shared_loop(tiny_world, tmp_path):
    """MOELoRA (D), fp32, dropout 0: the shared loop's losses with trainer.compile=on
    (aot_eager: the compiled forward and backward graphs, without C++ code generation) equal
    the eager ones within 1e-4 at every step."""
    _agree(tiny_world, tmp_path, steps=6, backend="aot_eager")


def test_compiled_and_eager_losses_agree_with_dropout(tiny_world, tmp_path):
    """With dropout 0.1 and the CPU default's bits16 masks the compiled step draws the eager
    step's masks: equal losses, not only equal in distribution."""
    _agree(tiny_world, tmp_path, steps=4, backend="aot_eager", dropout_p=0.1)


@pytest.mark.slow
def test_inductor_losses_agree_over_60_steps(tiny_world, tmp_path):
    """The same with inductor, the backend trainer.compile=on uses, over 60 steps."""
    _agree(tiny_world, tmp_path, steps=60, backend="inductor")


def test_bench_steps_have_the_default_jobs_shapes():
    """experiments/bench_compile.py: steps of 8 examples in 2 length-sorted micro-batches of 4,
    loss on the answer tokens only, as moelora.engine.train cuts and collates them."""
    from experiments.bench_compile import make_steps

    lengths, answers = [30, 12, 50, 20, 44, 9, 27, 61, 15, 33], [5, 3, 9, 4, 8, 2, 6, 10, 3, 7]
    steps = make_steps(3, lengths, answers, vocab=50)
    for micro in steps:
        assert [m["input_ids"].shape[0] for m in micro] == [4, 4]
        short, long = (m["attention_mask"].sum(1) for m in micro)
        assert short.max() <= long.min() and micro[0]["input_ids"].shape[1] == short.max()
        for m in micro:
            assert int((m["labels"] != -100).sum()) == m["tokens"]
            kept = m["labels"] != -100
            assert (m["labels"][kept] == m["input_ids"][kept]).all()
            assert (m["attention_mask"][kept] == 1).all()


@pytest.mark.slow
def test_inductor_losses_agree_with_dropout_over_60_steps(tiny_world, tmp_path):
    """Inductor, dropout 0.1, bits16 masks: the compiled step draws the eager step's masks."""
    _agree(tiny_world, tmp_path, steps=60, backend="inductor", dropout_p=0.1)
