"""How the adapters' dropout masks are drawn (``trainer.dropout_masks``).

Every adapter applies dropout to its input (Eq. 3, Eq. 4: ``drop(x)``, p = 0.1), one mask per
adapted linear per micro-batch. Two ways to draw a mask, the same dropout either way (each
entry kept independently with probability ``1 − p``, kept entries scaled so that the mask's
expectation is exactly 1):

* ``torch``: ``torch.nn.functional.dropout``. Its CPU kernel draws one 64-bit random number
  (a double uniform) per entry, one by one: on the 2.15M-parameter MedSynth-8 base that is
  about a quarter of a one-thread fine-tuning step (``make bench`` measures the ratio).
* ``bits16``: one 64-bit draw from the same generator feeds four entries, each of which
  compares 16 random bits with ``t = round(p · 2^16)``. The dropout probability is then
  ``t / 2^16`` (0.1000061 for p = 0.1) and kept entries are scaled by ``2^16 / (2^16 − t)``.
  Only tensors on the CPU take this path; on an accelerator torch's fused kernel is faster, so
  ``bits16`` uses it there.

Under ``torch.compile`` (``trainer.compile=on``, moelora.engine.compile) a ``bits16`` mask is
one custom op of the graph (``moelora::bits16_mask``: no graph break, the same draws in the same
order as eager), ``torch`` masks are torch's dropout, which the compiler generates. Both draw from torch's default generator, so ``seed`` and
checkpoint resume (which restores the RNG state) cover them, and non-reentrant gradient
checkpointing replays them. The mode is process-wide for the duration of :func:`mask_sampling`
(the shared trainer opens it from ``trainer.dropout_masks``); outside it, ``torch``. Modules that hold a plain ``nn.Dropout``
(peft's ``lora_dropout``; a base model's own dropout, as GPT-2's) take part after
:func:`use_in` swaps them for :class:`Dropout`, which the trainer does for the model it trains.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

MASKS = ("bits16", "torch")
LEVELS = 1 << 16  # values of one 16-bit lane
_mode = "torch"


def mode() -> str:
    """The mask sampling in force (``torch`` outside :func:`mask_sampling`)."""
    return _mode


def check_masks(masks: str) -> None:
    """Raise ``ValueError`` with the fix unless ``masks`` is one of :data:`MASKS`."""
    if masks not in MASKS:
        raise ValueError(f"trainer.dropout_masks={masks!r}: use one of {', '.join(MASKS)}")


@contextmanager
def mask_sampling(masks: str) -> Iterator[None]:
    """Draw every :func:`dropout` mask with ``masks`` (one of :data:`MASKS`) inside the block."""
    global _mode
    check_masks(masks)
    previous, _mode = _mode, masks
    try:
        yield
    finally:
        _mode = previous


def bits16_threshold(p: float) -> int:
    """``t``: a 16-bit lane below ``t`` drops its entry (probability ``t / 2^16``)."""
    return round(p * LEVELS)


def bits16_mask(
    shape: torch.Size | tuple[int, ...],
    p: float,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A scaled keep mask: ``2^16 / (2^16 − t)`` where kept, 0 where dropped, in ``dtype``.

    Four 16-bit lanes of each 64-bit draw (the full 64 bits: ``random_(-2**63, None)``; a plain
    ``random_()`` on int64 leaves the top bit 0). The lanes become floats, and
    ``clamp(lane − (t − 2^15) + 1, 0, 1)`` is 1 exactly where ``lane + 2^15 ≥ t`` (the lanes are
    integers, exact in fp32), all without a comparison or a bool tensor, which cost more here.
    """
    numel = math.prod(shape)
    t = min(bits16_threshold(p), LEVELS - 1)
    draws = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device)
    draws.random_(-(1 << 63), None)
    lanes = draws.view(torch.int16)[:numel].view(shape).to(torch.float32)
    keep = lanes.sub_(t - LEVELS // 2 - 1).clamp_(0.0, 1.0)
    return keep.mul_(LEVELS / (LEVELS - t)).to(dtype)


# Under torch.compile the bits16 mask is one opaque op of the graph (inductor's own random
# numbers cost one Philox evaluation an entry on the CPU: slower than eager torch masks). The op
# mutates a counter so that the compiler neither merges two draws (q, k and v read the same
# input) nor reorders them: the graph draws the masks in eager order, from the same generator.
_DRAWS = torch.zeros((), dtype=torch.int64)


@torch.library.custom_op("moelora::bits16_mask", mutates_args=("draws",), device_types="cpu")
def _bits16_mask_op(draws: torch.Tensor, like: torch.Tensor, p: float) -> torch.Tensor:
    draws.add_(1)
    return bits16_mask(like.shape, p, dtype=like.dtype, device=like.device)


@_bits16_mask_op.register_fake
def _(draws: torch.Tensor, like: torch.Tensor, p: float) -> torch.Tensor:
    return torch.empty_like(like)


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """``drop(x)``: dropout with probability ``p`` while ``training``, drawn as :func:`mode` says."""
    if not training or p <= 0.0:
        return x
    if _mode == "bits16" and x.device.type == "cpu":
        if torch.compiler.is_compiling():
            return x * _bits16_mask_op(_DRAWS, x.detach(), p)
        return x * bits16_mask(x.shape, p, dtype=x.dtype, device=x.device)
    return F.dropout(x, p, True)


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose mask is drawn by :func:`dropout` (the same ``p``, no state)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Dropout's name
        return dropout(input, self.p, self.training)


def use_in(model: nn.Module) -> int:
    """Swap every plain ``nn.Dropout`` with ``p > 0`` in ``model`` for :class:`Dropout`.

    Under ``torch`` masks the swapped model computes exactly what it did. Returns the number
    of modules swapped."""
    swapped = 0
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is nn.Dropout and child.p > 0:
                new = Dropout(child.p, inplace=child.inplace)
                new.train(child.training)
                setattr(module, child_name, new)
                swapped += 1
    return swapped
