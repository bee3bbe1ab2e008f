"""moelora.inference.load.load_run and moelora.inference.predict on finished smoke runs: every trained method's
rebuilt model reproduces the run's answers, and on MOELoRA, LoRA (Full) and LoRA (Single) the
three serving strategies give the same greedy answers on batches that mix all tasks."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from moelora.inference.load import RunLoadError, load_run
from moelora.inference.predict import main, predict
from moelora.utils.io import read_json, read_jsonl, write_json
from moelora.utils.manifest import write_manifest

METHODS = ("moelora_dense", "lora_full", "lora_single")


def _gold(run_dir):
    """The run's own test records (gold targets), with the tasks interleaved."""
    records = read_jsonl(run_dir / "predictions.jsonl")
    gold = {g["sample_id"]: g for g in load_run(run_dir).splits()["test"]}
    records = [{**r, "target": gold[r["sample_id"]]["target"]} for r in records]
    return records[::2] + records[1::2]


@pytest.mark.parametrize(
    "method", [*METHODS, "molora", "moelora_multi_gate", "lora_full_tp", "ptuning"]
)
def test_rebuilt_run_reproduces_its_own_answers(smoke_runs, more_smoke_runs, method):
    """Same model, same decoding settings (the run's greedy ones), same batches as the job; the
    run's task prompt (LoRA (Full+TP)) is applied, the saved records keep their own input."""
    run_dir = {**smoke_runs, **more_smoke_runs}[method]
    run = load_run(run_dir)
    saved = read_jsonl(run_dir / "predictions.jsonl")
    # LoRA (Single) answered task by task; the joint runs in mixed batches (infer: unmerged)
    strategy = "grouped_unmerged" if method == "lora_single" else "mixed"
    out = predict(run, saved, strategy=strategy)
    assert [p["target"] for p in out.predictions] == [r["target"] for r in saved]
    assert out.decoding["mode"] == "greedy" and out.decoding["max_new_tokens"] == 32
    assert out.decoding["batch_size"] == 8  # trainer=smoke's eval batch


def _sharpen(run_dir, tmp_path):
    """A copy of the run whose adapters change the answers a lot (random lora_B, per file)."""
    copy = tmp_path / run_dir.name
    shutil.copytree(run_dir, copy)
    files = [
        p
        for p in sorted(copy.rglob("adapter_model.safetensors"))
        if p.parent.name == "adapter" or p.parent.parent.name == "adapters"
    ]
    assert files
    for i, path in enumerate(files):
        state = load_file(str(path))
        g = torch.Generator().manual_seed(i)
        for key, value in state.items():
            if "lora_B" in key:
                state[key] = torch.randn(value.shape, generator=g) * 0.5
        save_file(state, str(path), metadata={"format": "pt"})
    write_manifest(copy)  # changed on purpose: the copy is a run of its own
    return copy


@pytest.mark.parametrize("method", METHODS)
def test_strategies_give_the_same_greedy_answers(smoke_runs, method, tmp_path):
    run = load_run(_sharpen(smoke_runs[method], tmp_path))
    records = _gold(smoke_runs[method])
    answers = {
        s: [p["target"] for p in predict(run, records, strategy=s).predictions]
        for s in ("mixed", "grouped_merged", "grouped_unmerged")
    }
    assert answers["mixed"] == answers["grouped_merged"] == answers["grouped_unmerged"]
    with torch.no_grad(), _adapters_off(run.model):
        base = [p["target"] for p in predict(run, records, strategy="mixed").predictions]
    assert sum(a != b for a, b in zip(answers["mixed"], base)) >= len(records) // 2
    if run.batch_kwargs is not None:  # per-task adapters: the rows' names matter
        hook, run.batch_kwargs = run.batch_kwargs, None
        first_only = [p["target"] for p in predict(run, records, strategy="mixed").predictions]
        run.batch_kwargs = hook
        assert first_only != answers["mixed"]


class _adapters_off:
    """Every adapter path off (peft's disable_adapter, or MoELoRALinear.disabled)."""

    def __init__(self, model):
        self.model = model
        self.peft = getattr(model, "disable_adapter", None)

    def __enter__(self):
        if self.peft is not None:
            self.ctx = self.peft()
            return self.ctx.__enter__()
        for m in self.model.modules():
            if hasattr(m, "disabled"):
                m.disabled = True

    def __exit__(self, *exc):
        if self.peft is not None:
            return self.ctx.__exit__(*exc)
        for m in self.model.modules():
            if hasattr(m, "disabled"):
                m.disabled = False


def test_cli_writes_predictions_in_input_order_and_scores(smoke_runs, tmp_path, capsys):
    run_dir = smoke_runs["moelora_dense"]
    records = _gold(run_dir)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    assert (
        main(
            [
                str(run_dir),
                "--input",
                str(src),
                "--out",
                str(tmp_path / "p.jsonl"),
                "--batch-size",
                "3",
                "--scores",
                str(tmp_path / "s.json"),
            ]
        )
        == 0
    )
    out = read_jsonl(tmp_path / "p.jsonl")
    assert [r["sample_id"] for r in out] == [r["sample_id"] for r in records]
    assert [r["input"] for r in out] == [r["input"] for r in records]
    summary = json.loads(capsys.readouterr().out)
    assert summary == read_json(tmp_path / "s.json")
    assert summary["decoding"]["batch_size"] == 3 and summary["strategy"] == "mixed"
    assert set(summary["scores"]) == {r["task_dataset"] for r in records} | {"avg"}
    results = read_json(run_dir / "results.json")  # the run scored the same answers
    assert summary["scores"]["avg"] == pytest.approx(results["scores"]["avg"])
    # no gold: answered, not scored
    src.write_text(
        "".join(json.dumps({**r, "target": ""}, ensure_ascii=False) + "\n" for r in records[:3])
    )
    assert main([str(run_dir), "--input", str(src), "--out", str(tmp_path / "q.jsonl")]) == 0
    assert json.loads(capsys.readouterr().out)["scores"] is None


def test_bad_inputs_are_refused_with_the_reason(smoke_runs, tmp_path, capsys):
    run = load_run(smoke_runs["molora"])
    records = _gold(smoke_runs["molora"])[:2]
    with pytest.raises(ValueError, match="cannot be merged per task"):
        predict(run, records, strategy="grouped_merged")
    with pytest.raises(ValueError, match="strategy='batched'"):
        predict(run, records, strategy="batched")
    with pytest.raises(ValueError, match=r"tasks \['CMeEE'\] are not tasks of the run"):
        predict(run, [{**records[0], "task_dataset": "CMeEE"}])
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({**records[0], "task_dataset": "CMeEE"}) + "\n")
    assert (
        main([str(smoke_runs["molora"]), "--input", str(src), "--out", str(tmp_path / "p.jsonl")])
        == 2
    )
    assert f"{src}:1: unknown task_dataset 'CMeEE'" in capsys.readouterr().err
    failed = tmp_path / "failed"
    shutil.copytree(smoke_runs["lora_full"], failed)
    write_json(failed / "results.json", {**read_json(failed / "results.json"), "status": "failed"})
    with pytest.raises(RunLoadError, match="status 'failed'"):
        load_run(failed)
    shutil.rmtree(failed / "adapter")
    write_json(failed / "results.json", {**read_json(failed / "results.json"), "status": "success"})
    with pytest.raises(RunLoadError, match=r"adapter_config\.json: listed in .*manifest\.json"):
        load_run(failed)  # a removed file is refused by the manifest first
    write_manifest(failed)
    with pytest.raises(RunLoadError, match="no adapter/ folder; method lora_full saved no"):
        load_run(failed)
