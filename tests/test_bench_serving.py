"""experiments/bench_serving.py: how the serving benchmark batches a stream and what it reports."""

from __future__ import annotations

import pytest

from experiments.bench_serving import Request, batches_of, latencies, main, make_stream
from moelora.utils.io import read_json


def _stream(tasks):
    return [Request(t, [1, 2], i) for i, t in enumerate(tasks)]


def test_one_task_batches_wait_for_their_task():
    stream = _stream([0, 1, 0, 1, 1, 2, 0])
    mixed = batches_of(stream, 2, one_task=False)
    assert [[r.arrival for r in b] for b in mixed] == [[0, 1], [2, 3], [4, 5], [6]]
    grouped = batches_of(stream, 2, one_task=True)
    # ready order: task 0 full at arrival 2, task 1 at 3; leftovers (1, 2, 0) by last arrival
    assert [[r.arrival for r in b] for b in grouped] == [[0, 2], [1, 3], [4], [5], [6]]
    assert all(len({r.task for r in b}) == 1 for b in grouped)


def test_latency_counts_the_wait_for_a_full_batch_and_the_queue():
    stream = _stream([0, 1, 0, 1])
    grouped = batches_of(stream, 2, one_task=True)
    # arrivals every 1 s; batch [0, 2] ready at 2 s, takes 3 s → ends at 5 s; [1, 3] ready at
    # 3 s, starts when the server is free (5 s), ends at 8 s
    assert latencies(grouped, [3.0, 3.0], 1.0) == [5.0, 3.0, 7.0, 5.0]


def test_stream_is_balanced_and_in_random_task_order():
    stream = make_stream(lambda t: [[t, t]], 4, seed=0)
    tasks = [r.task for r in stream]
    assert sorted(tasks) == sorted(list(range(8)) * 4) and tasks != sorted(tasks)


def test_quick_run_reports_every_setup_and_ratio(tmp_path, capsys):
    out = tmp_path / "serving.json"
    assert (
        main(
            [
                "--quick",
                "--batch-sizes",
                "2",
                "--per-task",
                "2",
                "--new-tokens",
                "2",
                "--repeats",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = read_json(out)
    row = result["batch_sizes"][0]
    assert row["requests"] == 16 and row["tokens"] == 32
    assert set(row["setups"]) == {"base", "moelora_mixed", "moelora_grouped_merged", "single_mixed"}
    for e in row["setups"].values():
        assert len(e["raw"]) == 2 and all(len(r["batch_seconds"]) == e["batches"] for r in e["raw"])
    single, moelora = row["setups"]["single_mixed"], row["setups"]["moelora_mixed"]
    assert single["adapter_bytes"] == pytest.approx(8 * 16 * 4 * 4880 * 4)  # 8 × LoRA r=16
    assert moelora["adapter_bytes"] < single["adapter_bytes"] / 7
    r = row["ratios"]["moelora_mixed_vs_base_time"]
    assert r["min"] <= r["median"] <= r["max"]
    assert "targets at batch 32" in capsys.readouterr().out
    assert 0.05 < result["adapter_flops_fraction"] < 0.15
