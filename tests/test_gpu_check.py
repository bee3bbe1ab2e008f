"""experiments/gpu_check.py (make gpu-check) at tiny width on the CPU: the same code as on a
GPU; it writes one JSON and one Markdown table with every section."""

from __future__ import annotations

import json

from experiments.gpu_check import main


def test_gpu_check_runs_at_tiny_width(tmp_path):
    assert main(["--tiny", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {r["model"] for r in report["memory_plan"]} == {"chatglm-6b", "qwen2.5-7b"}
    for r in report["memory_plan"]:
        assert r["measured_bytes"] > 0 and 0.5 < r["ratio"] < 2.0, r
    methods = {(r["precision"], r["method"]) for r in report["train_step"]}
    assert methods == {(p, m) for p in ("bf16", "fp16") for m in ("moelora_dense", "peft_lora")}
    assert all(r["step_seconds"] > 0 for r in report["train_step"])
    modes = {r["mode"] for r in report["generation"] if "tokens_per_s" in r}
    assert {
        "moelora_merged_one_task",
        "moelora_unmerged_mixed",
        "peft_lora_mixed_adapters",
    } <= modes
    assert "skipped" in report["ddp"]
    assert "Memory plan vs measured peak" in (tmp_path / "gpu_check.md").read_text()
