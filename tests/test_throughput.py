"""Throughput in the logs and results.json (moelora/engine/throughput.py)."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import torch

from moelora.engine import throughput
from moelora.harness.runner import run
from moelora.utils.io import read_json
from tests.conftest import compose, tiny_overrides


class _Acc(SimpleNamespace):
    def reduce(self, t, reduction="sum"):
        return t * self.num_processes  # as many processes, each with the same count


def test_mfu_on_a_known_card(monkeypatch):
    model = torch.nn.Linear(10, 10)  # 110 parameters, all trainable: 4·110 + 2·110
    assert throughput.flops_per_token(model) == 660
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 3e9)
    acc = _Acc(device=SimpleNamespace(type="cuda"), num_processes=2)
    monkeypatch.setattr(torch, "tensor", lambda v, device=None: torch.as_tensor(v))
    meter = throughput.Throughput(model, acc)
    meter.since -= 2.0  # two seconds ago
    meter.add(1000)
    meter.grad_norm = torch.tensor(0.5)
    m = meter.metrics()
    assert m["train/tokens_per_s"] == pytest.approx(1000.0, rel=0.01)  # 2 × 1000 in 2 s
    assert m["train/mfu"] == pytest.approx(1000 * 660 / (989e12 * 2), rel=0.01)
    assert m["train/peak_memory_gb"] == 3.0 and m["train/grad_norm"] == 0.5


def test_unknown_cards_get_no_mfu():
    assert throughput.peak_flops("Some Future GPU") is None
    assert throughput.peak_flops("Tesla V100-SXM2-32GB") == 125e12


def test_tokens_per_s_and_grad_norm_reach_the_logs(tiny_world, tmp_path):
    run_dir = tmp_path / "job"
    cfg = compose(tiny_overrides(tiny_world, tmp_path, "logger=csv"))
    assert run(cfg, run_dir) == 0
    with (run_dir / "metrics.csv").open(newline="") as f:
        keys = {key for _, key, _ in list(csv.reader(f))[1:]}
    assert {"train/tokens_per_s", "train/grad_norm", "train/loss"} <= keys
    t = read_json(run_dir / "results.json")["train"]["throughput"]
    assert t["tokens"] > 0 and t["tokens_per_s"] > 0 and t["flops_per_token"] > 0
