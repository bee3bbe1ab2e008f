"""The harness on the native ChatGLM-6B (issue #15), end to end on the tiny checkpoint:
every method through the job runner (run.py's ``moelora.harness.runner.run``, trainer=smoke),
``task_id_scheme: authors``, MOELoRA per-example routing on the sequence-first layout,
merge/unmerge and the export round trip to stock peft."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from peft import PeftModel

from moelora.harness.runner import run
from moelora.inference.export import load_run_model
from moelora.inference.export import main as export_main
from moelora.method.gate import task_context
from moelora.method.merge import merged_for_task, supports_merge
from moelora.method.model import moelora_layers
from moelora.models.loading import load_base_model, load_tokenizer
from moelora.utils.io import read_json
from tests.conftest import REPO_ROOT, compose

METHODS = sorted(p.stem for p in (REPO_ROOT / "conf" / "method").glob("*.yaml"))
# They compose the lora_single run; a short search keeps them to seconds.
COMPOSED = {
    "task_arithmetic": ["method.ta.grid=[0.0,1.0]", "method.ta.val_per_task=2"],
    "lorahub": ["method.lorahub.budget=3", "method.lorahub.n_examples=2"],
}


def _overrides(tiny_world, tiny_chatglm, out: Path, *extra: str) -> list[str]:
    data_dir, _ = tiny_world
    return [
        f"paths.root_dir={out}",
        f"data.root={data_dir}",
        "data.prepare=null",
        "model=chatglm_6b",
        f"model.path={tiny_chatglm}",
        "model.dtype=float32",
        "trainer=smoke",
        "logger=none",
        "progress=false",
        "trainer.eval.limit_per_task=1",
        "trainer.eval.max_new_tokens=8",
        "data.max_target_length=12",
        "data.max_source_length=96",
        "data.max_truncated_fraction=1.0",
        *extra,
    ]


@pytest.fixture(scope="module")
def runs(tiny_world, tiny_chatglm, tmp_path_factory) -> dict[str, Path]:
    """One trainer=smoke job per method (conf/method/*.yaml), ChatGLM-6B model config."""
    out = tmp_path_factory.mktemp("chatglm_runs")
    order = [m for m in METHODS if m not in COMPOSED] + sorted(set(COMPOSED) & set(METHODS))
    dirs: dict[str, Path] = {}
    for method in order:
        extra = [f"method={method}"]
        if method in COMPOSED:
            extra += [f"method.inputs.run_dir={dirs['lora_single']}", *COMPOSED[method]]
        dirs[method] = out / method
        run(compose(_overrides(tiny_world, tiny_chatglm, out, *extra)), dirs[method])
    return dirs


def test_every_method_runs_on_chatglm(runs):
    assert {"moelora_dense", "lora_full", "ptuning", "icl", "lorahub", "molora"} <= set(runs)
    for method, run_dir in runs.items():
        r = read_json(run_dir / "results.json")
        assert r["status"] == "success", (method, r.get("error"))
        assert r["config"]["model"]["name"] == "chatglm_6b"
        assert r["config"]["model"]["trust_remote_code"] is False
        assert 0.0 <= r["scores"]["avg"] <= 1.0, method
        losses = [v for _, v in (r.get("train") or {}).get("losses") or []]
        assert all(math.isfinite(v) for v in losses), method
        assert len((run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()) == 8


def test_authors_task_ids(tiny_world, tiny_chatglm, tmp_path):
    """data.task_ids=authors: MOELoRA-peft's 17-row id table on ChatGLM-6B."""
    cfg = compose(
        _overrides(
            tiny_world, tiny_chatglm, tmp_path, "method=moelora_dense", "data.task_ids=authors"
        )
    )
    assert run(cfg, tmp_path / "job") == 0
    r = read_json(tmp_path / "job" / "results.json")
    assert r["status"] == "success" and r["config"]["data"]["task_ids"] == "authors"
    model, meta = load_run_model(tmp_path / "job")
    assert model.moelora_router.gate.task_embedding.weight.shape[0] == 17


@pytest.fixture(scope="module")
def moelora(runs):
    model, meta = load_run_model(runs["moelora_dense"])
    with torch.no_grad():  # smoke training barely moves B: make the tasks differ
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2, generator=torch.Generator().manual_seed(len(name)))
    return model, meta


def _batch(tiny_chatglm):
    tok = load_tokenizer(tiny_chatglm)
    return tok(
        ["患者咳嗽三天，诊断：", "Diagnosis:", "头痛\n恶心"], padding=True, return_tensors="pt"
    )


def _logits(model, batch, task_ids):
    with torch.no_grad(), task_context(model, task_ids):
        return model(**batch).logits


def test_each_example_gets_its_own_task_on_the_sequence_first_layout(moelora, tiny_chatglm):
    model, _ = moelora
    batch = _batch(tiny_chatglm)
    mixed = _logits(model, batch, torch.tensor([0, 3, 5]))
    for i, task in enumerate((0, 3, 5)):
        alone = _logits(model, batch, torch.full((3,), task))[i]
        torch.testing.assert_close(mixed[i], alone, rtol=0, atol=1e-5)
    assert not torch.allclose(
        _logits(model, batch, torch.full((3,), 0)),
        _logits(model, batch, torch.full((3,), 3)),
        atol=1e-3,
    )


def test_merge_and_unmerge_per_task(moelora, tiny_chatglm):
    model, _ = moelora
    assert supports_merge(model)
    batch = _batch(tiny_chatglm)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    routed = _logits(model, batch, torch.full((3,), 2))
    with merged_for_task(model, 2):
        assert not moelora_layers(model)  # the base architecture's modules only
        with torch.no_grad():
            merged = model(**batch).logits
    torch.testing.assert_close(merged, routed, rtol=1e-5, atol=1e-5)
    after = dict(model.named_parameters())
    assert before.keys() == after.keys()
    assert all(torch.equal(before[n], after[n]) for n in before)
    torch.testing.assert_close(_logits(model, batch, torch.full((3,), 2)), routed, rtol=0, atol=0)


def test_export_round_trip_to_stock_peft(moelora, runs, tiny_chatglm, tmp_path):
    """python -m moelora.inference.export on the run, then PeftModel.from_pretrained on the native base:
    each task's logits (the trained adapter, as saved by the run)."""
    paths = export_main([str(runs["moelora_dense"]), "--out", str(tmp_path)])
    trained, meta = load_run_model(runs["moelora_dense"])
    batch = _batch(tiny_chatglm)
    assert [p.name for p in paths] == meta["tasks"]
    for task_id in (0, 4):
        base = load_base_model(tiny_chatglm, dtype="float32")
        peft_model = PeftModel.from_pretrained(base, str(paths[task_id])).eval()
        with torch.no_grad():
            got = peft_model(**batch).logits
        torch.testing.assert_close(
            got, _logits(trained, batch, torch.full((3,), task_id)), rtol=1e-5, atol=1e-5
        )
