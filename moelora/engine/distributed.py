"""Multi-process launches through ``accelerate``: start, check, lock and record one job.

A job runs in one process or in several (DDP through ``accelerate``; DeepSpeed through an
accelerate config file). Which launcher really starts several processes (docs/distributed.md):

* ``torchrun --nproc_per_node N run.py device=cpu ...`` on CPUs (gloo);
* ``accelerate launch --multi_gpu --num_processes N run.py ...`` on GPUs (it hands over to
  torchrun; with ``device=cpu`` it also runs N gloo processes on a CPU-only machine);
* ``accelerate launch --config_file experiments/accelerate/ds_zero2.yaml run.py ...``
  (DeepSpeed ZeRO-2, GPUs only).

``accelerate launch --cpu --num_processes N`` and a ``MULTI_CPU`` accelerate config start ONE
process unless they are given an MPI host file (``--mpirun_hostfile``), and under torchrun
``device=auto`` on a machine without GPUs makes accelerate run every process alone
(``DistributedType.NO``): N independent copies of the job in one folder. Both are refused by
:func:`check_launch`, with the command that works.

Every rank takes the same decisions: rank 0 alone takes the job lock (moelora.utils.io.job_lock) and
tells the others whether it got it, so when the job is busy every rank stops; only rank 0
writes to the run folder.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from moelora.utils.io import JobBusyError, job_lock

CPU_LAUNCH = "torchrun --nproc_per_node {n} run.py device=cpu ..."
GPU_LAUNCH = "accelerate launch --multi_gpu --num_processes {n} run.py ..."


class LaunchError(RuntimeError):
    """The processes that run do not match the launch that was asked for."""


def precision(name: str) -> str:
    """``trainer.precision`` → accelerate's ``mixed_precision``. ``auto``: bf16 on a card with
    native bf16 (compute capability ≥ 8.0), fp16 with loss scaling on an older one (the
    paper's V100), none on the CPU. bf16 asked on a card that only emulates it is refused.
    """
    import torch

    from moelora.models.loading import native_bf16

    if name not in ("auto", "no", "fp16", "bf16"):
        raise ValueError(f"trainer.precision={name!r}; use auto, no, fp16 or bf16")
    if not torch.cuda.is_available():
        return "no" if name == "auto" else name
    native = native_bf16()
    if name == "auto":
        return "bf16" if native else "fp16"
    if name == "bf16" and not native:
        major, minor = torch.cuda.get_device_capability()
        raise ValueError(
            f"trainer.precision=bf16 on {torch.cuda.get_device_name()} (compute capability "
            f"{major}.{minor}): bf16 would be emulated, not native (needs 8.0); use "
            "trainer.precision=fp16 (loss scaling) or trainer.precision=auto"
        )
    return name


COMPUTE_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def frozen_dtype(model_dtype: str, mixed_precision: str) -> str:
    """The dtype the frozen base weights are stored in: the compute dtype under mixed
    precision (so autocast makes no copy of any frozen weight, and a ChatGLM-6B fp16 checkpoint
    runs under bf16), else ``model.dtype``. The adapters keep fp32 master weights either way."""
    return COMPUTE_DTYPES.get(mixed_precision, model_dtype)


def check_launch(num_processes: int, env: Mapping[str, str] | None = None) -> None:
    """Refuse a launch whose processes do not form the job that was asked for.

    Args:
        num_processes: the processes accelerate runs this job with (``accelerator.num_processes``).
        env: the process environment (``os.environ``), where the launcher left its marks:
            ``WORLD_SIZE`` (torchrun, ``accelerate launch --multi_gpu``), or
            ``ACCELERATE_USE_CPU`` with ``MASTER_ADDR`` but no ``WORLD_SIZE`` (accelerate's
            single-process CPU launcher, given ``--num_processes`` > 1).

    Raises:
        LaunchError: naming what ran and the command that starts the processes asked for.
    """
    env = os.environ if env is None else env
    requested = int(env.get("WORLD_SIZE") or 1)
    if requested > 1 and num_processes == 1:
        raise LaunchError(
            f"this process was started as one of WORLD_SIZE={requested} processes, but accelerate "
            f"runs it alone (DistributedType.NO): {requested} independent copies of the job would "
            "share one folder. Without a GPU, add device=cpu (DDP over gloo): "
            f"{CPU_LAUNCH.format(n=requested)}; on GPUs, check that every process sees one"
        )
    if requested > 1 and num_processes != requested:
        raise LaunchError(
            f"WORLD_SIZE={requested}, but accelerate runs {num_processes} processes; "
            "launch with torchrun or accelerate launch, not both"
        )
    accelerate_cpu = str(env.get("ACCELERATE_USE_CPU", "")).lower() in ("1", "true", "yes")
    if (
        num_processes == 1
        and accelerate_cpu
        and env.get("MASTER_ADDR")
        and not env.get("WORLD_SIZE")
    ):
        raise LaunchError(
            "accelerate launch was asked for several processes on CPU, but its CPU launcher "
            "(--cpu, or a MULTI_CPU config without --mpirun_hostfile) started this one process "
            f"only. Launch {CPU_LAUNCH.format(n='N')} (or accelerate launch --multi_gpu "
            "--num_processes N run.py device=cpu); for one process, drop --num_processes "
            "(and unset MASTER_ADDR)"
        )


def configure_deepspeed(accelerator: Any, trainer_cfg: Any) -> None:
    """Fill the DeepSpeed settings that the trainer owns (untested: no GPU in CI).

    The trainer prepares no dataloader, so accelerate cannot infer DeepSpeed's
    ``train_micro_batch_size_per_gpu``; it is set from ``trainer.per_device_batch_size`` when the
    config leaves it ``auto``. DeepSpeed's ``gradient_accumulation_steps`` must equal
    ``trainer.grad_accum`` (the trainer makes that many micro-batches per optimiser step)."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    config = plugin.deepspeed_config
    if config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        config["train_micro_batch_size_per_gpu"] = int(trainer_cfg.per_device_batch_size)
    if int(getattr(trainer_cfg, "length_groups", 1)) > 1:
        raise LaunchError(
            f"trainer.length_groups={trainer_cfg.length_groups} splits a step into more "
            "micro-batches than DeepSpeed's gradient_accumulation_steps counts; use "
            "trainer.length_groups=1 with DeepSpeed (trainer=paper sets it)"
        )
    steps = config.get("gradient_accumulation_steps", "auto")
    if steps != "auto" and int(steps) != int(trainer_cfg.grad_accum):
        raise LaunchError(
            f"the DeepSpeed config accumulates {steps} micro-batches per step, the trainer "
            f"{trainer_cfg.grad_accum} (trainer.grad_accum); set deepspeed_config."
            f"gradient_accumulation_steps: {trainer_cfg.grad_accum} in the accelerate config file "
            f"or trainer.grad_accum={steps}"
        )
    if steps == "auto":
        config["gradient_accumulation_steps"] = int(trainer_cfg.grad_accum)


def check_launch_precision(mixed_precision: str, env: Mapping[str, str] | None = None) -> None:
    """Refuse a launch whose ``accelerate`` config or ``--mixed_precision`` asks for bf16 or fp16
    when ``trainer.precision`` gives another precision on this machine: ``accelerate launch``
    puts it into ``ACCELERATE_MIXED_PRECISION``, which the job's own setting would otherwise
    override in silence. ``no`` (also what ``accelerate launch`` sets when nothing was asked)
    leaves the choice to ``trainer.precision``."""
    asked = (os.environ if env is None else env).get("ACCELERATE_MIXED_PRECISION", "no")
    if asked not in ("no", "", mixed_precision):
        raise LaunchError(
            f"the launch asks for mixed_precision={asked} (accelerate config or "
            f"--mixed_precision), but trainer.precision gives {mixed_precision} on this "
            f"machine; set trainer.precision={asked}, or change the launch's mixed_precision, "
            "so that the job runs in the precision that was asked for"
        )


def make_accelerator(cfg: Any) -> Any:
    """The job's ``accelerate.Accelerator``, after :func:`check_launch`,
    :func:`check_launch_precision` and DeepSpeed set-up."""
    from accelerate import Accelerator

    mixed_precision = precision(cfg.trainer.precision)
    check_launch_precision(mixed_precision)
    accelerator = Accelerator(mixed_precision=mixed_precision, cpu=cfg.device == "cpu")
    check_launch(accelerator.num_processes)
    if cfg.trainer.get("effective_batch") is not None:  # trainer=paper: 64 on any world size
        cfg.trainer.grad_accum = grad_accum_for(accelerator.num_processes, cfg.trainer)
    configure_deepspeed(accelerator, cfg.trainer)
    return accelerator


def grad_accum_for(num_processes: int, trainer_cfg: Any) -> int:
    """``trainer.grad_accum``; with ``trainer.effective_batch`` set (trainer=paper: 64), the
    accumulation that reaches it: effective batch / (processes × ``per_device_batch_size``).

    Raises:
        LaunchError: the processes × micro-batch do not divide the effective batch (the fix).
    """
    target = trainer_cfg.get("effective_batch")
    if target is None:
        return int(trainer_cfg.grad_accum)
    micro = int(trainer_cfg.per_device_batch_size)
    per_step = int(num_processes) * micro
    if int(target) % per_step:
        fits = [m for m in range(micro, 0, -1) if int(target) % (int(num_processes) * m) == 0]
        raise LaunchError(
            f"trainer.effective_batch={target} is not a multiple of {num_processes} processes × "
            f"trainer.per_device_batch_size={micro}; use trainer.per_device_batch_size="
            f"{fits[0] if fits else 1}, or a number of processes that divides {target}"
        )
    return int(target) // per_step


def effective_batch_size(num_processes: int, trainer_cfg: Any) -> int:
    """Examples per optimiser step: processes × ``per_device_batch_size`` × ``grad_accum``
    (:func:`grad_accum_for`)."""
    accum = grad_accum_for(num_processes, trainer_cfg)
    return int(num_processes) * int(trainer_cfg.per_device_batch_size) * accum


def describe(accelerator: Any, trainer_cfg: Any) -> dict[str, Any]:
    """What ``results.json`` records about the launch."""
    return {
        "world_size": accelerator.num_processes,
        "distributed_type": accelerator.distributed_type.value,
        "effective_batch_size": effective_batch_size(accelerator.num_processes, trainer_cfg),
    }


@contextlib.contextmanager
def job(cfg: Any, run_dir: Path) -> Iterator[Any]:
    """Start the job's processes' shared state, lock ``run_dir`` once for all ranks, yield the
    accelerator.

    Rank 0 creates the folder and takes the lock; the other ranks learn from it whether it did
    (a broadcast flag), so a busy job stops every rank and no rank runs the job on its own.

    Raises:
        LaunchError: see :func:`check_launch` (nothing is written).
        JobBusyError: another process holds the lock (on every rank).
    """
    import torch
    from accelerate.utils import broadcast

    accelerator = make_accelerator(cfg)
    with contextlib.ExitStack() as stack:
        message = ""
        if accelerator.is_main_process:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            try:
                stack.enter_context(job_lock(run_dir))
            except JobBusyError as e:
                message = str(e)
        busy = torch.tensor([int(bool(message))], device=accelerator.device)
        if accelerator.num_processes > 1:
            busy = broadcast(busy, from_process=0)
        if int(busy.item()):
            raise JobBusyError(
                message or f"{run_dir}: rank 0 found this job running in another process"
            )
        yield accelerator


def hydra_overrides_for_rank(env: Mapping[str, str] | None = None) -> list[str]:
    """Hydra settings for a process other than rank 0: it saves no ``.hydra/`` folder and logs
    to the console only, so that rank 0 is the only process that writes to the run folder."""
    env = os.environ if env is None else env
    if int(env.get("RANK") or 0) == 0:
        return []
    return ["hydra.output_subdir=null", "hydra/job_logging=stdout"]


def is_main_rank(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process is rank 0 of its launch (or was launched alone)."""
    env = os.environ if env is None else env
    return int(env.get("RANK") or 0) == 0
