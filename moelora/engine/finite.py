"""No number from a broken run: a non-finite loss, gradient norm or weight stops the job.

The shared loop (moelora.engine.train) checks every optimiser step's loss and gradient norm
before the optimiser applies it, so the weights stay those of the last finite step; adapters
(moelora.engine.adapters.save_adapter) and checkpoints refuse non-finite tensors, so no file
and no score ever comes from NaN weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

FIX = (
    "lower trainer.lr (e.g. by 10x), train in float32 (model.dtype=float32, "
    "trainer.precision=no), or resume from a clean checkpoint (resume=never starts over)"
)


class NonFiniteError(FloatingPointError):
    """Training produced a NaN or infinite loss, gradient norm or weight.

    Attributes:
        step: the optimiser step (1-based) that produced it.
        last_finite_loss: the last finite loss logged before it (None: none was).
    """

    def __init__(self, message: str, *, step: int | None = None, last_finite_loss=None) -> None:
        super().__init__(message)
        self.step = step
        self.last_finite_loss = last_finite_loss


def check_step(
    step: int,
    loss: torch.Tensor,
    grad_norm: torch.Tensor | float | None,
    last_finite: tuple[int, float] | None,
) -> float:
    """Raise :class:`NonFiniteError` when the step's loss or gradient norm is not finite;
    returns the loss. One host sync per step (both values in one transfer)."""
    values = [loss.detach().float().reshape(())]
    if grad_norm is not None:
        norm = torch.as_tensor(grad_norm, device=values[0].device)
        values.append(norm.detach().float().reshape(()))
    got = torch.stack(values).tolist()
    if all(math.isfinite(v) for v in got):
        return got[0]
    what = "loss" if not math.isfinite(got[0]) else "gradient norm"
    value = got[0] if what == "loss" else got[1]
    last = (
        f"the last finite loss was {last_finite[1]:.4f} at step {last_finite[0]}"
        if last_finite
        else "no finite loss was logged before it"
    )
    raise NonFiniteError(
        f"training diverged: the {what} is {value} at step {step} ({last}); the update was not "
        f"applied and no adapter, prediction or score is written from these weights. Fix: {FIX}",
        step=step,
        last_finite_loss=last_finite[1] if last_finite else None,
    )


def check_tensors(tensors: Mapping[str, torch.Tensor], where: str) -> None:
    """Raise :class:`NonFiniteError` naming the first tensors of ``tensors`` that hold NaN or
    Infinity (``where``: what is being saved or loaded)."""
    bad = [
        name
        for name, t in tensors.items()
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all())
    ]
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        raise NonFiniteError(
            f"{where}: {len(bad)} tensor(s) hold NaN or Infinity, e.g. {bad[:3]}{more}; "
            f"non-finite weights are never saved nor used. Fix: {FIX}"
        )
