"""One implementation: a harness run's MOELoRA adapter is a library adapter. ``load_run`` loads it
through ``MoeLoraModel.from_pretrained``, the API loads the run folder's ``adapter/`` directly,
and the export command line goes through ``MoeLoraModel.export_task_adapters``."""

from __future__ import annotations

import json

import torch

from moelora import MoeLoraModel
from moelora.inference.export import main as export_main
from moelora.inference.load import load_run
from moelora.method.gate import task_context
from moelora.models.loading import load_base_model


def test_a_harness_run_loads_with_the_api_and_exports_with_serving_commands(
    smoke_runs, tmp_path, capsys
):
    run_dir = smoke_runs["moelora_dense"]
    run = load_run(run_dir)
    meta = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    base = load_base_model(meta["base_model"]["name_or_path"], dtype="float32")
    model = MoeLoraModel.from_pretrained(base, run_dir / "adapter", tasks=meta["tasks"])
    ids = torch.randint(5, 100, (len(meta["tasks"]), 9), generator=torch.Generator().manual_seed(0))
    task_ids = torch.tensor(run.task_map.ids())
    with torch.no_grad(), task_context(run.model, task_ids):
        want = run.model(input_ids=ids).logits
    with torch.no_grad():
        got = model(input_ids=ids, task_ids=task_ids).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)

    paths = export_main([str(run_dir), "--out", str(tmp_path / "tasks")])
    assert [p.name for p in paths] == meta["tasks"]
    out = capsys.readouterr().out
    assert "vllm serve " in out and "--enable-lora --lora-modules" in out
    assert f"--max-loras {len(paths)} --max-lora-rank 16" in out
    assert "python -m sglang.launch_server" in out and "--lora-paths" in out
