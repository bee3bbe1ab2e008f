"""Sharded evaluation (and per-rank RNG checkpoints): under ``torchrun --nproc_per_node 2 run.py device=cpu`` each process
generates its share of the test set, rank 0 gathers, scores and writes once; under greedy
decoding the predictions are exactly one process's."""

from __future__ import annotations

import os
import subprocess
import sys

from moelora.engine.generation import shard_indices
from moelora.harness.runner import run
from moelora.utils.io import read_json
from tests.conftest import REPO_ROOT, compose, tiny_overrides

# lr 0: the same weights on any world size, so the predictions can be compared exactly
JOB = (
    "method=moelora_dense",
    "decoding=greedy",
    "trainer.lr=0.0",
    "trainer.max_steps=1",
    "trainer.save_every=1",
    "trainer.eval.limit_per_task=2",
    "device=cpu",
)


def test_shards_cover_every_record_once_and_alike():
    records = [{"input": "x" * n} for n in (5, 1, 9, 3, 7, 2, 8)]
    shards = [shard_indices(records, r, 3) for r in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(7))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_two_processes_predict_what_one_predicts(tiny_world, tmp_path):
    two_dir = tmp_path / "two"
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2", str(REPO_ROOT / "run.py"), *tiny_overrides(tiny_world, tmp_path, *JOB),
            f"hydra.run.dir={two_dir}",
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]
    assert out.stdout.count("results: ") == 1  # scored and written once
    cfg = compose(tiny_overrides(tiny_world, tmp_path, *JOB))
    assert run(cfg, tmp_path / "one") == 0
    one, two = (read_json(d / "results.json") for d in (tmp_path / "one", two_dir))
    assert (one["world_size"], two["world_size"]) == (1, 2)
    lines = [
        (d / "predictions.jsonl").read_text().splitlines() for d in (tmp_path / "one", two_dir)
    ]
    assert len(lines[0]) == 16 and lines[0] == lines[1]
    assert one["scores"] == two["scores"]
    # the step-1 checkpoint of the 2-process run holds each rank's RNG state (resume)
    ckpts = [d / "checkpoints" / "step-000001" for d in (tmp_path / "one", two_dir)]
    assert [p.name for p in sorted(ckpts[1].glob("rng-rank*"))] == [
        "rng-rank0.safetensors",
        "rng-rank1.safetensors",
    ]
    assert not list(ckpts[0].glob("rng-rank*")) and (ckpts[0] / "rng.safetensors").is_file()
