"""Multi-process runs: ``torchrun --nproc_per_node 2 run.py device=cpu`` (DDP over gloo).

Two processes train one job; only rank 0 writes (every write of rank 1 is recorded by
tests/audited_run.py); every rank honours the job lock; one results.json records the launch;
and 2 processes × 8 examples train the same weights as 1 process × 16.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from moelora.engine.distributed import LaunchError, check_launch, hydra_overrides_for_rank
from moelora.harness.runner import run
from moelora.utils.io import job_lock, read_json
from tests.conftest import REPO_ROOT, compose, tiny_overrides

# dropout 0: every rank would draw its own masks; one test example per task keeps it short
SAME_JOB = (
    "method=moelora_dense",
    "method.adapter.dropout=0",
    "device=cpu",
    "trainer.eval.limit_per_task=1",
)


def _torchrun(args: list[str], root: Path, audit: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 run.py ARGS``, every rank's writes recorded."""
    audit.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "WANDB_MODE": "disabled",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "AUDIT_ROOT": str(root),
        "AUDIT_DIR": str(audit),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO_ROOT / "tests" / "audited_run.py"),
        str(REPO_ROOT / "run.py"),
        *args,
    ]
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)


def _writes(audit: Path, rank: int) -> list[str]:
    return [path for _, path in json.loads((audit / f"rank{rank}.json").read_text())]


@pytest.fixture(scope="module")
def two_by_eight(tiny_world, tmp_path_factory):
    """One launch of the real CLI, 2 processes × per-device batch 8, a sweep of two jobs: the
    first (seed=43) is held by another process (this test's lock), the second (seed=42) trains."""
    root = tmp_path_factory.mktemp("ddp")
    audit = tmp_path_factory.mktemp("ddp-audit")
    sweep = root / "sweep"
    busy = sweep / "seed=43"
    busy.mkdir(parents=True)
    args = [
        "-m",
        "seed=43,42",
        *tiny_overrides(tiny_world, root, *SAME_JOB),
        "trainer.per_device_batch_size=8",
        f"hydra.sweep.dir={sweep}",
        "hydra.sweep.subdir='seed=${seed}'",
    ]
    with job_lock(busy):
        out = _torchrun(args, root, audit)
    assert out.returncode == 0, out.stderr[-4000:]
    return sweep / "seed=42", busy, out, audit


def test_two_processes_train_one_job_and_only_rank_0_writes(two_by_eight):
    run_dir, _, out, audit = two_by_eight
    results = sorted(p.relative_to(run_dir) for p in run_dir.rglob("results*.json"))
    assert results == [Path("results.json")]
    r = read_json(run_dir / "results.json")
    assert r["status"] == "success"
    assert (r["world_size"], r["distributed_type"], r["effective_batch_size"]) == (
        2,
        "MULTI_CPU",
        16,
    )
    assert out.stdout.count("results: ") == 1  # one job trained, reported once
    rank0 = _writes(audit, 0)
    assert str(run_dir / "results.json") in rank0 and str(run_dir / "config.yaml") in rank0
    # rank 1 writes nothing into a run folder; its Hydra makes sure the folders exist, and
    # Hydra's sweeper saves the sweep's multirun.yaml (the same file) from every process
    sweep = run_dir.parent
    hydra_own = {str(sweep), str(sweep / "multirun.yaml"), str(run_dir), str(sweep / "seed=43")}
    assert set(_writes(audit, 1)) <= hydra_own, _writes(audit, 1)


def test_every_rank_stops_when_the_job_is_busy(two_by_eight):
    """Rank 0 finds seed=43 locked by another process: both ranks skip it, neither runs it on
    its own, and both go on to the next job together."""
    run_dir, busy, out, audit = two_by_eight
    assert out.stderr.count("[busy]") == 1 and f"[busy] {busy}: another process" in out.stderr
    ours = {".job.lock", ".hydra", "run.log"}  # the lock, and rank 0's Hydra record
    assert {p.name for p in busy.iterdir()} <= ours
    assert not [
        p
        for p in _writes(audit, 0) + _writes(audit, 1)
        if Path(p).parent == busy and Path(p).name not in ours
    ]


def test_two_by_eight_trains_what_one_by_sixteen_trains(two_by_eight, tiny_world, tmp_path):
    """Same effective batch (16), same data order, dropout 0: same loss curve and adapter."""
    ddp_dir = two_by_eight[0]
    cfg = compose(
        tiny_overrides(tiny_world, tmp_path, *SAME_JOB, "trainer.per_device_batch_size=16")
    )
    assert run(cfg, tmp_path / "job") == 0
    one, two = read_json(tmp_path / "job" / "results.json"), read_json(ddp_dir / "results.json")
    assert (one["world_size"], one["distributed_type"], one["effective_batch_size"]) == (
        1,
        "NO",
        16,
    )
    steps = [s for s, _ in one["train"]["losses"]]
    assert steps == [s for s, _ in two["train"]["losses"]] == [1, 2, 3, 4]
    losses = [(a, b) for (_, a), (_, b) in zip(one["train"]["losses"], two["train"]["losses"])]
    assert max(abs(a - b) for a, b in losses) < 1e-5, losses
    wa, wb = (
        load_file(str(d / "adapter" / "adapter_model.safetensors"))
        for d in (tmp_path / "job", ddp_dir)
    )
    assert wa.keys() == wb.keys()
    assert max(float((wa[k] - wb[k]).abs().max()) for k in wa) < 1e-5
    assert any(float(v.abs().max()) > 1e-3 for k, v in wa.items() if "lora_B" in k)  # it trained


# ---- launch checks: a launch that does not start the processes it asked for -------------


def test_a_process_of_a_larger_launch_that_runs_alone_is_refused():
    """torchrun with device=auto on a machine without GPUs: accelerate runs each process alone."""
    with pytest.raises(
        LaunchError,
        match=r"WORLD_SIZE=2 .* add device=cpu .*torchrun "
        r"--nproc_per_node 2 run.py device=cpu",
    ):
        check_launch(1, {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    check_launch(2, {"WORLD_SIZE": "2", "RANK": "1"})  # what torchrun device=cpu gives
    check_launch(1, {})  # python run.py


def test_accelerate_cpu_launcher_that_starts_one_process_is_refused():
    """`accelerate launch --cpu --num_processes 2` (or a MULTI_CPU config): one process."""
    env = {"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    with pytest.raises(LaunchError, match=r"started this one process only. Launch torchrun"):
        check_launch(1, env)
    check_launch(1, {"ACCELERATE_USE_CPU": "True"})  # accelerate launch --cpu run.py: fine


def test_the_runner_refuses_a_bad_launch_before_writing(tiny_world, tmp_path, monkeypatch):
    from accelerate import PartialState

    PartialState(cpu=True)  # this process's state: one process
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = compose(tiny_overrides(tiny_world, tmp_path, "method=lora_full"))
    with pytest.raises(LaunchError, match="add device=cpu"):
        run(cfg, tmp_path / "job")
    assert not (tmp_path / "job").exists()


def test_only_rank_0_keeps_hydras_files():
    assert hydra_overrides_for_rank({"RANK": "0"}) == [] == hydra_overrides_for_rank({})
    assert hydra_overrides_for_rank({"RANK": "1"}) == [
        "hydra.output_subdir=null",
        "hydra/job_logging=stdout",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["torchrun-device-auto", "accelerate-cpu"])
def test_real_launchers_that_would_run_independent_copies_fail(tiny_world, tmp_path, launcher):
    """The two launches the checks above stand for, for real (each starts Python twice)."""
    args = [
        *tiny_overrides(tiny_world, tmp_path, "method=lora_full"),
        f"hydra.run.dir={tmp_path / 'job'}",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    if launcher == "accelerate-cpu":
        cmd = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--cpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            str(REPO_ROOT / "run.py"),
            *args,
        ]
        fix = "started this one process only"
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            str(REPO_ROOT / "run.py"),
            *args,
        ]
        fix = "add device=cpu"
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode != 0 and fix in out.stderr, out.stderr[-3000:]
    assert not (tmp_path / "job" / "results.json").exists()


# ---- the trainer's side: accumulation weights, DeepSpeed settings ---------------------------


def _train_weights(tiny_world, tmp_path, *extra):
    """Train MOELoRA (dropout 0) for 3 steps in this process; return losses, adapter and the
    ``sync_gradients`` flag seen at every backward."""
    import torch
    from accelerate import Accelerator

    from moelora.engine.adapters import trainable_state_dict
    from moelora.engine.train import train
    from moelora.harness.context import RunContext
    from moelora.harness.loggers import NoneLogger
    from moelora.harness.runner import load_splits
    from moelora.method.tasks import TaskMap

    cfg = compose(
        tiny_overrides(
            tiny_world, tmp_path, "method=moelora_dense", "method.adapter.dropout=0", *extra
        )
    )
    task_map = TaskMap(cfg.data.tasks)
    accelerator = Accelerator(cpu=True)
    ctx = RunContext(
        cfg=cfg,
        run_dir=tmp_path,
        task_map=task_map,
        splits=load_splits(cfg, task_map),
        accelerator=accelerator,
        logger=NoneLogger(),
    )
    torch.manual_seed(0)
    model, tok = ctx.load_base()
    model = ctx.build_adapter(model)
    enc = ctx.encoder(tok)
    flags, backward = [], accelerator.backward
    accelerator.backward = lambda loss, **kw: (
        flags.append(accelerator.sync_gradients),
        backward(loss, **kw),
    )
    try:
        out = train(
            model,
            enc,
            ctx.splits["train"],
            settings=ctx.train_settings(max_steps=3),
            sampler=ctx.sampler(enc, ctx.splits["train"]),
            accelerator=accelerator,
            ckpt_dir=None,
            adapter_meta=ctx.adapter_meta(),
        )
    finally:
        accelerator.backward = backward
    return [v for _, v in out.losses], trainable_state_dict(model), flags


def test_accumulated_micro_batches_train_what_one_batch_trains(tiny_world, tmp_path):
    """1 × 4 × accumulation 2 = 1 × 8: each micro-batch weighs by its share of the step's answer
    tokens (the per-micro-batch mean would not be equal)."""
    one_loss, one, one_flags = _train_weights(
        tiny_world, tmp_path / "a", "trainer.per_device_batch_size=8", "trainer.length_groups=1"
    )
    acc_loss, acc, acc_flags = _train_weights(
        tiny_world,
        tmp_path / "b",
        "trainer.per_device_batch_size=4",
        "trainer.grad_accum=2",
        "trainer.length_groups=1",
    )
    assert one_flags == [True] * 3 and acc_flags == [False, True] * 3  # DeepSpeed's boundary
    assert max(abs(a - b) for a, b in zip(one_loss, acc_loss)) < 1e-5
    assert max(float((one[k] - acc[k]).abs().max()) for k in one) < 1e-5


def test_length_groups_train_what_one_batch_trains(tiny_world, tmp_path):
    """A step's examples sorted by length into 4 micro-batches (trainer.length_groups, less
    padding) give the loss curve and adapter of the step as one batch, in sampler order."""
    one_loss, one, one_flags = _train_weights(
        tiny_world, tmp_path / "a", "trainer.per_device_batch_size=8", "trainer.length_groups=1"
    )
    grp_loss, grp, grp_flags = _train_weights(
        tiny_world, tmp_path / "b", "trainer.per_device_batch_size=8", "trainer.length_groups=4"
    )
    assert one_flags == [True] * 3 and grp_flags == [False, False, False, True] * 3
    assert max(abs(a - b) for a, b in zip(one_loss, grp_loss)) < 1e-5
    assert max(float((one[k] - grp[k]).abs().max()) for k in one) < 1e-5


def test_deepspeed_settings_come_from_the_trainer_config():
    from types import SimpleNamespace

    from moelora.engine.distributed import configure_deepspeed

    def accelerator(config):
        return SimpleNamespace(
            state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=config))
        )

    trainer = SimpleNamespace(per_device_batch_size=4, grad_accum=4, length_groups=1)
    config = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": 4}
    configure_deepspeed(accelerator(config), trainer)
    assert config == {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 4}
    with pytest.raises(
        LaunchError,
        match=r"accumulates 2 micro-batches per step, the trainer 4 "
        r"\(trainer.grad_accum\); set deepspeed_config."
        r"gradient_accumulation_steps: 4",
    ):
        configure_deepspeed(accelerator({"gradient_accumulation_steps": 2}), trainer)
    with pytest.raises(
        LaunchError, match=r"trainer.length_groups=4 .* use trainer.length_groups=1"
    ):
        configure_deepspeed(
            accelerator(config),
            SimpleNamespace(per_device_batch_size=4, grad_accum=4, length_groups=4),
        )
    configure_deepspeed(SimpleNamespace(state=SimpleNamespace()), trainer)  # no DeepSpeed: no-op


def test_example_weighting_is_the_same_over_length_groups_and_differs_from_token_weighting(
    tiny_world, tmp_path
):
    """trainer.loss_weighting=example: each micro-batch weighs by its share of the step's
    examples, so 4 length groups train what one batch trains; the token mean trains otherwise."""
    ex = ("trainer.per_device_batch_size=8", "trainer.loss_weighting=example")
    one_loss, one, _ = _train_weights(tiny_world, tmp_path / "a", *ex, "trainer.length_groups=1")
    grp_loss, grp, _ = _train_weights(tiny_world, tmp_path / "b", *ex, "trainer.length_groups=4")
    tok_loss, tok, _ = _train_weights(
        tiny_world, tmp_path / "c", "trainer.per_device_batch_size=8", "trainer.length_groups=4"
    )
    assert max(abs(a - b) for a, b in zip(one_loss, grp_loss)) < 1e-5
    assert max(float((one[k] - grp[k]).abs().max()) for k in one) < 1e-5
    assert max(abs(a - b) for a, b in zip(one_loss, tok_loss)) > 1e-3
    assert max(float((one[k] - tok[k]).abs().max()) for k in one) > 1e-4
