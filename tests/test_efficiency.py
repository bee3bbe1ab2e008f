"""experiments/efficiency.py (the Fig. 5 measurement) on finished smoke runs, and Fig. 5 drawn
from its JSON."""

from __future__ import annotations

import pytest

from experiments.efficiency import Subject, find_runs, main
from moelora.utils.io import read_json


@pytest.fixture(scope="module")
def measured(smoke_runs, tmp_path_factory):
    root = smoke_runs["lora_full"].parents[2]
    out = tmp_path_factory.mktemp("efficiency") / "efficiency.json"
    assert (
        main(
            [
                "--results",
                str(root),
                "--experiment",
                "default",
                "--repeats",
                "3",
                "--steps",
                "2",
                "--per-task",
                "1",
                "--new-tokens",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return read_json(out)


def test_every_repetition_of_every_method_is_kept(measured, smoke_runs):
    assert measured["device"] == "cpu" and measured["threads"] == 1
    assert {"torch", "transformers", "peft"} <= set(measured["versions"])
    (group,) = measured["groups"]
    assert set(group["methods"]) == set(smoke_runs)
    names = sorted(smoke_runs)
    assert group["orders"] == [names, names[::-1], names]  # alternated
    for method, m in group["methods"].items():
        assert m["run_dir"] == str(smoke_runs[method])
        assert len(m["train_step_seconds"]) == 3
        assert all(len(r) == 2 and min(r) > 0 for r in m["train_step_seconds"])
        assert m["test_examples"] == 8 and m["train_batch_size"] == 4  # trainer=smoke
        for s in m["strategies"]:
            assert len(m["latency"][s]) == 3 and min(m["latency"][s]) > 0
        assert ("grouped_merged" in m["strategies"]) == m["mergeable"]
        assert m["train_peak_bytes"] > 0
    assert group["methods"]["molora"]["strategies"] == ["grouped_unmerged", "mixed"]
    assert len(group["methods"]["moelora_dense"]["merge_seconds"]) == 3


def test_ratios_are_taken_within_each_repetition(measured):
    (group,) = measured["groups"]
    ref, moe = group["methods"]["lora_full"], group["methods"]["moelora_dense"]
    ratios = [a / b for a, b in zip(moe["latency"]["mixed"], ref["latency"]["mixed"])]
    r = group["ratios"]["moelora_dense"]["latency_mixed"]
    assert sorted(ratios)[1] == pytest.approx(r["median"])
    assert (r["min"], r["max"]) == pytest.approx((min(ratios), max(ratios)))
    assert group["ratios"]["lora_full"]["train_peak_bytes"] == 1.0
    # same rank-16 budget: MOELoRA's step memory is LoRA's, give or take the gate
    assert group["ratios"]["moelora_dense"]["train_peak_bytes"] == pytest.approx(1.0, rel=0.1)


def test_training_measurement_leaves_the_adapter_as_saved(smoke_runs):
    import torch
    from accelerate import Accelerator

    entry = find_runs(smoke_runs["lora_full"].parents[2], "default")[("medsynth", "")]["molora"]
    s = Subject(
        "molora", entry, accelerator=Accelerator(cpu=True), steps=1, per_task=1, new_tokens=2
    )
    before = [p.detach().clone() for p in s.params]
    assert len(s.train(2)) == 2
    assert all(torch.equal(a, b) for a, b in zip(before, s.params))
    assert not s.run.model.training and "forward" not in vars(s.run.model)


def test_step_memory_is_measured_on_one_micro_batch_and_repeats_exactly(smoke_runs):
    """With several micro-batches per step (trainer.length_groups), a later micro-batch's
    activations can take the freed addresses of an earlier one's, and counting storages by
    address then depends on the allocator; the measurement runs the step as one micro-batch."""
    from accelerate import Accelerator

    from moelora.utils.measure import peak_memory

    entry = find_runs(smoke_runs["lora_full"].parents[2], "default")[("medsynth", "")][
        "moelora_dense"
    ]
    s = Subject(
        "moelora_dense", entry, accelerator=Accelerator(cpu=True), steps=1, per_task=1, new_tokens=2
    )
    assert s.ctx.train_settings(max_steps=1).length_groups > 1  # the case that needs it
    measure = [
        peak_memory(lambda: s.loop(1, one_micro_batch=True), s.params, s.accelerator.device)
        for _ in range(3)
    ]
    assert measure[0] > 0 and measure == [measure[0]] * 3


def test_compare_flags_a_ratio_that_moved_beyond_the_spread(measured, tmp_path, capsys):
    import copy

    from experiments.efficiency import compare
    from moelora.utils.io import write_json

    assert all(row[3] for row in compare(measured, measured))
    moved = copy.deepcopy(measured)
    r = moved["groups"][0]["ratios"]["molora"]["train_step_seconds"]
    r.update(median=r["max"] + 1, min=r["max"] + 0.5, max=r["max"] + 1.5)
    write_json(tmp_path / "a.json", measured)
    write_json(tmp_path / "b.json", moved)
    assert main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 1
    assert "MOVED medsynth molora train_step_seconds" in capsys.readouterr().out
